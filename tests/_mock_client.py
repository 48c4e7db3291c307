"""httpx clients on the in-process mock upstream (`create_app(config)` behind an ASGI transport),
closed after the test. Import the fixtures into a test module:

    from tests._mock_client import Client, client, make_client  # noqa: F401 (fixtures)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from proxy.mock_upstream import MockConfig, create_app

__all__ = ["Client", "client", "make_client"]

Client = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client() -> AsyncIterator[Client]:
    clients: list[httpx.AsyncClient] = []

    async def make(config: MockConfig | None = None) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(config)), base_url="http://mock")
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


@pytest.fixture
async def client(make_client: Client) -> httpx.AsyncClient:
    return await make_client()
