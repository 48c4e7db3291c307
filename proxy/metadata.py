"""The request metadata an app may send, as headers or inside the body's `metadata` field."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["RequestMeta", "read_meta", "SLUICEGATE_KEYS"]

CORRELATION = "x-sluicegate-correlation-id"
EPISODE = "x-sluicegate-episode"
USER = "x-sluicegate-user"
TEMPLATE = "x-sluicegate-template"
RETRIEVAL_IDS = "x-sluicegate-retrieval-ids"
TAGS = "x-sluicegate-tags"
SLUICEGATE_KEYS = (CORRELATION, EPISODE, USER, TEMPLATE, RETRIEVAL_IDS, TAGS)


@dataclasses.dataclass(slots=True)
class RequestMeta:
    correlation_id: str | None = None
    episode_id: str | None = None
    user_id: str | None = None
    template_ref: str | None = None
    retrieval_ids: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    # the app's own metadata with Sluicegate's keys removed; None when the body had none
    app_metadata: dict[str, Any] | None = None


def _split_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def read_meta(headers: Mapping[str, str], body: Mapping[str, Any]) -> RequestMeta:
    """Headers win over the body's `metadata`; the body's `user` is the last resort for the user."""
    raw = body.get("metadata")
    ours: dict[str, Any] = {}
    app_metadata: dict[str, Any] | None = None
    if isinstance(raw, dict):
        app_metadata = {}
        for key, value in raw.items():
            if key.lower() in SLUICEGATE_KEYS:
                ours[key.lower()] = value
            else:
                app_metadata[key] = value

    def pick(name: str) -> Any:
        value = headers.get(name)
        return value if value is not None else ours.get(name)

    correlation = pick(CORRELATION) or headers.get("x-request-id")
    user = pick(USER)
    if user is None and isinstance(body.get("user"), str):
        user = body["user"]
    return RequestMeta(
        correlation_id=str(correlation) if correlation else None,
        episode_id=str(pick(EPISODE)) if pick(EPISODE) else None,
        user_id=str(user) if user else None,
        template_ref=str(pick(TEMPLATE)) if pick(TEMPLATE) else None,
        retrieval_ids=_split_list(pick(RETRIEVAL_IDS)),
        tags=_split_list(pick(TAGS)),
        app_metadata=app_metadata,
    )
