"""Scrubbing what an upstream sends before it leaves the gateway (DESIGN.md, "Trust boundaries").

An upstream can echo what it received: proxies and self-hosted servers quote the key in a 401, a
header, a page. `Scrubber.text` masks, in an upstream's error texts (error bodies and the messages
built from them, stream error events):

- the provider's own secrets — its `api_key`, the values of its policy `headers:` whose names say
  they hold one (auth, key, token, secret, cookie, signature: the rule of the log scrubber), the
  credentials in its `base_url` (also as the Basic header value they become) — whole, and any piece
  of 16 or more characters of one (a key cut short by a length bound, or quoted in part);
- key-like tokens whoever they belong to: the secret detectors of the records' redaction (sk-…,
  Bearer …, JWT, AWS, GitHub, Slack, Google, PEM) plus long random-looking tokens (below).

`Scrubber.answer` masks only the provider's whole secrets in answers and stream events: a model
may write key-shaped strings on purpose (code samples), and they are the records' redaction's job.
Headers are not scrubbed but filtered: only a well-formed `retry-after(-ms)` passes
(`_upstream_error.pass_headers`).

Finding pieces stays cheap: any 16-character piece of a secret contains one of the secret's
8-character blocks at offsets 0, 8, 16, … (the first multiple of 8 at or after the piece's start),
so only those blocks are searched for (`str.find`/`bytes.find`, a memchr-speed scan); a hit is
extended byte by byte along the secret to the whole common run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

from proxy.config import MIN_SECRET_CHARS, provider_secrets
from proxy.records._redact import DETECTORS

__all__ = ["MASK", "PIECE_CHARS", "Scrubber", "key_like_spans", "mask_key_like", "provider_secrets"]

MASK = "[SECRET]"
PIECE_CHARS = 16  # a run this long of a secret, anywhere, is masked
_BLOCK = PIECE_CHARS // 2

T = TypeVar("T", str, bytes)  # _mask_spans works on both


class Scrubber:
    """Masks one provider's secrets (see the module doc). Build it once per adapter."""

    __slots__ = ("secrets", "_pieces", "_whole")

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True))
        # each secret with the blocks to search for (a short secret is its own block), and its UTF-8 bytes
        self._pieces: list[tuple[str, list[tuple[str, int]]]] = [
            (secret, [(secret, 0)] if len(secret) < PIECE_CHARS else
             [(secret[i:i + _BLOCK], i) for i in range(0, len(secret) - _BLOCK + 1, _BLOCK)])
            for secret in self.secrets]
        self._whole = tuple(secret.encode() for secret in self.secrets)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str) -> str:
        """An error text from the upstream (a message, a snippet of a page): this provider's secrets,
        whole or any 16+ character piece, and every key-like token, masked. Both are found in the
        original text and masked together, so that neither hides the other from view."""
        spans = self._secret_spans(text)
        spans.extend(key_like_spans(text))
        return _mask_spans(text, spans) if spans else text

    def answer(self, data: bytes) -> bytes:
        """An answer or a stream event: this provider's secrets, whole, masked. Pieces are not looked
        for here: a 16-character run such as "0123456789abcdef" may well be part of something the
        model wrote (and masking a piece of another key would hide that key from the records'
        redaction). Returns `data` itself when there is nothing to mask (a `find` per secret)."""
        spans: list[tuple[int, int]] = []
        for secret in self._whole:
            pos = data.find(secret)
            while pos != -1:
                spans.append((pos, pos + len(secret)))
                pos = data.find(secret, pos + 1)
        return _mask_spans(data, spans) if spans else data

    def _secret_spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for secret, blocks in self._pieces:
            whole = blocks[0][0] is secret
            for block, offset in blocks:
                pos = text.find(block)
                while pos != -1:
                    if whole:
                        spans.append((pos, pos + len(secret)))
                    else:
                        span = _common_run(text, pos, secret, offset)
                        if span[1] - span[0] >= PIECE_CHARS:
                            spans.append(span)
                    pos = text.find(block, pos + 1)
        return spans


def _common_run(text: T, pos: int, secret: T, offset: int) -> tuple[int, int]:
    """The span of `text` around `text[pos:pos+8] == secret[offset:offset+8]` that matches `secret`
    at the same alignment."""
    start, j = pos, offset
    while start > 0 and j > 0 and text[start - 1] == secret[j - 1]:
        start, j = start - 1, j - 1
    end, j = pos + _BLOCK, offset + _BLOCK
    while end < len(text) and j < len(secret) and text[end] == secret[j]:
        end, j = end + 1, j + 1
    return start, end


def _mask_spans(text: T, spans: list[tuple[int, int]]) -> T:
    mask: T = MASK if isinstance(text, str) else MASK.encode()  # type: ignore[assignment]
    parts: list[T] = []
    pos = 0
    for start, end in _merged(spans):
        parts.append(text[pos:start])
        parts.append(mask)
        pos = end
    parts.append(text[pos:])
    return text[:0].join(parts)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


# --- key-like tokens, whoever they belong to (error texts only) ---------------------------------

_SECRET_DETECTORS = tuple(d for d in DETECTORS.values() if d.kind == "secret")
_TOKEN = re.compile(r"[A-Za-z0-9+/_=-]{24,}")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])(?:[0-9a-f]{32,}|[0-9A-F]{32,})(?![0-9A-Za-z])")
# ids providers put in error messages for support (request, message, organization ids): not credentials
_ID_PREFIX = re.compile(r"(?:req|request|msg|resp|chatcmpl|cmpl|org|batch|file|asst|thread|run|call|toolu)[_-]")
_RANDOM_SWITCHES = 0.45  # share of neighbouring letters/digits that switch class (upper, lower, digit)


def _class(c: str) -> int:
    return 0 if c.isdigit() else 1 if c.isupper() else 2 if c.islower() else 3


def _random_looking(token: str) -> bool:
    """A base62/64 token: upper, lower and digits, switching class often. Random characters switch
    at ~62% of neighbours; words, model names and CamelCase names at ~10-40%
    ('mistralai/Mixtral-8x7B-Instruct-v0' ~25%), so they are left alone."""
    if not (any(c.isdigit() for c in token) and any(c.isupper() for c in token)
            and any(c.islower() for c in token)):
        return False
    classes = [_class(c) for c in token]
    pairs = [(a, b) for a, b in zip(classes, classes[1:]) if a != 3 and b != 3]
    return bool(pairs) and sum(a != b for a, b in pairs) / len(pairs) >= _RANDOM_SWITCHES


def mask_key_like(text: str) -> str:
    """`text` with its key-like tokens masked (`key_like_spans`)."""
    spans = key_like_spans(text)
    return _mask_spans(text, spans) if spans else text


def key_like_spans(text: str) -> list[tuple[int, int]]:
    """Where `text` holds key-like tokens: the records' secret detectors, then, in runs of 24+ base64
    characters that are not a provider's id (req_…, msg_…, org-…), hex runs of 32+ digits (Azure keys,
    raw tokens) and random-looking runs."""
    if len(text) < 16:
        return []
    spans: list[tuple[int, int]] = []
    for detector in _SECRET_DETECTORS:
        spans.extend(detector.finditer(text))
    for m in _TOKEN.finditer(text):
        token = m.group()
        if _ID_PREFIX.match(token):
            continue
        hexes = [(m.start() + h.start(), m.start() + h.end()) for h in _HEX_RUN.finditer(token)]
        if hexes:
            spans.extend(hexes)
        elif _random_looking(token):
            spans.append(m.span())
    return spans
