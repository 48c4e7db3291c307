"""Provider adapters: one small object per upstream, built from the policy's `providers:`."""

from __future__ import annotations

import httpx

from proxy.providers._anthropic import AnthropicAdapter
from proxy.providers._base import ENDPOINT_PATHS, ProviderAdapter, UpstreamCall, UpstreamReply, UpstreamStream
from proxy.providers._openai import AzureOpenAIAdapter, OpenAIAdapter
from proxy.providers._scrub import Scrubber, provider_secrets
from proxy.providers._sse import EventTooLarge, SSESplitter, event_data

__all__ = [
    "ENDPOINT_PATHS",
    "AnthropicAdapter",
    "AzureOpenAIAdapter",
    "EventTooLarge",
    "OpenAIAdapter",
    "ProviderAdapter",
    "SSESplitter",
    "Scrubber",
    "UpstreamCall",
    "UpstreamReply",
    "UpstreamStream",
    "build_provider",
    "event_data",
    "provider_secrets",
]


def build_provider(name: str, config: object, transport: httpx.AsyncBaseTransport | None = None) -> ProviderAdapter:
    """An adapter for one `providers:` entry. `transport` replaces the network (tests)."""
    kind = getattr(config, "kind")
    if kind not in ("openai", "azure", "anthropic"):
        raise NotImplementedError(f"provider '{name}': kind '{kind}' has no adapter")
    api_key = getattr(config, "api_key", None)
    common = dict(
        base_url=getattr(config, "base_url") or "https://api.openai.com/v1",
        api_key=api_key.get_secret_value() if api_key is not None else None,
        headers=getattr(config, "headers", None),
        connect_timeout=getattr(config, "connect_timeout", 5.0),
        read_timeout=getattr(config, "read_timeout", 120.0),
        pool_timeout=getattr(config, "pool_timeout", 10.0),
        max_connections=getattr(config, "max_connections", 256),
        limits=getattr(config, "limits", None),
        transport=transport,
    )
    if kind == "azure":
        return AzureOpenAIAdapter(name, api_version=getattr(config, "api_version", None), **common)
    if kind == "anthropic":
        if not getattr(config, "base_url", None):
            common["base_url"] = "https://api.anthropic.com"
        return AnthropicAdapter(name, **common)
    return OpenAIAdapter(name, **common)
