"""Callers' keys, held only as hashes: a policy names a key by `sha256:<hex>` of the bearer token,
so the policy file (and everything built from it) never holds the secret itself."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

__all__ = ["bearer_token", "hash_key", "presented_key"]

PREFIX = "sha256:"


def hash_key(secret: str) -> str:
    """The form a policy stores: `sha256:` + the hex SHA-256 of the key."""
    return PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: `Authorization: Bearer <key>` (APIs, SDKs), or the password of
    `Authorization: Basic` (a browser's login prompt on the dashboard; the user name is ignored)."""
    token = bearer_token(headers)
    if token is not None:
        return token
    value = headers.get("authorization") or ""
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    password = decoded.partition(":")[2]
    return password or None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The caller's key from `Authorization: Bearer …`; None when there is none."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
