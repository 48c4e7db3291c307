"""The provider adapter protocol: send, stream, close — like an httpx transport, one slot per provider.

An adapter speaks OpenAI's wire format to the request path whatever its upstream speaks: `send`
returns an OpenAI-shaped JSON body, `stream` yields complete OpenAI SSE events. The request path
never knows which provider it talks to, so a new kind of provider slots in without touching it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any, Protocol

__all__ = ["ENDPOINT_PATHS", "UpstreamCall", "UpstreamReply", "UpstreamStream", "ProviderAdapter"]

ENDPOINT_PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


@dataclasses.dataclass(slots=True)
class UpstreamCall:
    endpoint: str  # a key of ENDPOINT_PATHS
    body: dict[str, Any]  # the OpenAI request body to send, model already pinned
    timeout: float | None = None  # seconds left of the request's deadline, if it has one


@dataclasses.dataclass(slots=True)
class UpstreamReply:
    status: int
    content: bytes  # OpenAI-shaped JSON, passed to the client unchanged
    data: dict[str, Any]  # `content` parsed
    first_byte_at: float  # epoch seconds


class UpstreamStream(Protocol):
    status: int
    first_byte_at: float

    def events(self) -> AsyncIterator[bytes]:
        """Complete SSE events (each ending in a blank line), in OpenAI's chunk format."""
        ...

    async def aclose(self) -> None: ...


class ProviderAdapter(Protocol):
    name: str
    kind: str

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        """One non-streaming call. Raises an `UpstreamError` subclass on any fault."""
        ...

    async def stream(self, call: UpstreamCall) -> UpstreamStream:
        """Opens a stream; error statuses raise before any event is yielded."""
        ...

    async def close(self) -> None: ...
