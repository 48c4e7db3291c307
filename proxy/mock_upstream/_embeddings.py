"""Deterministic embeddings: a unit vector from a SHAKE-256 stream of (model, input).

A shorter `dimensions` gives the re-normalized prefix of a longer vector, as OpenAI's
text-embedding-3 models do.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

from proxy.mock_upstream._answer import BadRequest, count_tokens

__all__ = ["embed", "embedding_inputs", "embedding_response", "MAX_DIMS"]

MAX_DIMS = 8192


def embed(model: str, text: str, dims: int) -> list[float]:
    raw = hashlib.shake_256(f"{model}\x00{text}".encode()).digest(2 * dims)
    vec = [(int.from_bytes(raw[i:i + 2], "little") / 32767.5) - 1.0 for i in range(0, 2 * dims, 2)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def embedding_inputs(body: Mapping[str, Any]) -> tuple[list[str], int]:
    """The inputs as texts (token arrays joined), and their token count."""
    inp = body.get("input")
    if isinstance(inp, str):
        return [inp], max(count_tokens(inp), 1)
    if isinstance(inp, list) and inp:
        if all(isinstance(x, str) for x in inp):
            return list(inp), sum(max(count_tokens(x), 1) for x in inp)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in inp):
            return [" ".join(map(str, inp))], len(inp)
        if all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in inp):
            return [" ".join(map(str, x)) for x in inp], sum(len(x) for x in inp)
    raise BadRequest("Invalid 'input': expected a string, an array of strings, or an array of token arrays.",
                     "input")


def embedding_response(body: Mapping[str, Any], model: str, served_model: str, default_dims: int) -> dict[str, Any]:
    dims = body.get("dimensions", default_dims)
    if dims is None:
        dims = default_dims
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMS:
        raise BadRequest(f"Invalid 'dimensions': expected an integer from 1 to {MAX_DIMS}.", "dimensions")
    encoding = body.get("encoding_format", "float") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    texts, tokens = embedding_inputs(body)
    data: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        vec = embed(model, text, dims)
        emb: Any = vec
        if encoding == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": served_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
