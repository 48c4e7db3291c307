"""The body a replay sends upstream, built the way the gateway builds it (`_upstream_body`).

A corpus item's `request` is the body the original variant was sent: the caller's request with that
variant's model and pinned params already applied. To ask another model the same question with the
same sampling settings, the original params (temperature, seed, response_format, tool_choice, …)
are kept, and the target model's own pinned `params` go **over** them — exactly what the gateway
would have sent had it routed the request there. The target provider's `strip_params` and
`forward_metadata` apply as in the gateway.

Replays are always non-streaming: `stream` and `stream_options` are dropped (a streamed original
is compared on its assembled answer, as recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["STREAM_KEYS", "exact_body", "replay_body"]

STREAM_KEYS = ("stream", "stream_options")


def exact_body(request: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The recorded body as it was sent (its own model), non-streaming; `params` (the record's
    params as sent) are applied again so a body captured without them still pins them."""
    body = {k: v for k, v in request.items() if k not in STREAM_KEYS}
    body.update({k: v for k, v in (params or {}).items() if k not in STREAM_KEYS})
    return body


def replay_body(request: Mapping[str, Any], params: Mapping[str, Any] | None, model: Any,
                provider: Any) -> dict[str, Any]:
    """The recorded body re-targeted at policy model `model` (a `ModelVariant`) on `provider` (its
    `Provider` config): its pinned model name, its pinned params over the original ones."""
    body = exact_body(request, params)
    body.update(model.params)
    body["model"] = model.model
    if "metadata" in body and not getattr(provider, "forward_metadata", True):
        del body["metadata"]
    for name in getattr(provider, "strip_params", ()) or ():
        body.pop(name, None)
    return body
