"""PII and secret detectors, and the redaction used by the `redacted` capture mode.

The detectors are public so that rule scorers can reuse them (`find_pii`, `scan`, `DETECTORS`).

Kinds and their masks:

| kind     | mask       | detectors                                                              |
| -------- | ---------- | ---------------------------------------------------------------------- |
| `email`  | `[EMAIL]`  | `email`                                                                |
| `phone`  | `[PHONE]`  | `phone_intl` (+CC …), `phone_us` ((555) 123-4567, 555-123-4567, …)      |
| `card`   | `[CARD]`   | `card` (13–19 digits, spaces/dashes allowed, Luhn-validated)           |
| `secret` | `[SECRET]` | `private_key`, `jwt`, `bearer`, `openai_key`, `anthropic_key`, `aws_key`, `github_token`, `slack_token`, `google_key` |

How it stays cheap (CPython's `re` scans a character class at ~6-10 ns per character and has no
prefix optimisation for alternations, so one big alternation costs ~100 µs per KB; a one-character
`in` check is a memchr, ~0.03 µs per KB):

- secrets: each secret pattern starts with a literal, which `re` finds with its fast literal
  search; a pattern runs only if a one-character gate (and, for some, a needle) is in the text
  (`-` for `sk-…`/PEM, `A` for AWS/Google, `_` for GitHub, `J` for JWT, `x` for Slack, "earer"
  for Bearer);
- e-mails: only where there is an `@`: walk back over the local part, match forward from there;
- phones and cards: ONE pass over the runs of digits (the UTF-8 bytes with every digit translated
  to "0", then memchr), trying the card and phone patterns only where a run starts and what
  follows it could continue a number (and at a `+` or `(` just before it).

Measured on this project's 2-core box (`.venv/bin/python tests/records/bench_records.py redact`),
per KB: prose ~5 µs, prose with a few numbers ~10 µs, Python code ~25 µs; text full of PII pays
~7 µs per finding.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "DETECTORS",
    "MASKS",
    "Detector",
    "find_pii",
    "luhn_ok",
    "redact_text",
    "redact_value",
    "scan",
]

MASKS: dict[str, str] = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "secret": "[SECRET]"}

# The shortest thing any detector matches is an e-mail like "a@b.co" (6 chars).
_MIN_LEN = 6

_KEYCHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


@dataclasses.dataclass(frozen=True, slots=True)
class Detector:
    """One detector: `pattern` finds candidates, `validator(match)` (optional) confirms them.

    `finditer(text)` runs this detector alone over a text (what `scan` does for it, minus the
    prefilters and the resolution of overlaps with other detectors).
    """

    name: str
    kind: str
    pattern: re.Pattern[str]
    validator: Callable[[re.Match[str]], bool] | None = None

    def finditer(self, text: str) -> Iterable[tuple[int, int]]:
        validator = self.validator
        for m in self.pattern.finditer(text):
            if validator is None or validator(m):
                yield m.span()


# --- validators ------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of decimal digits."""
    total = 0
    parity = len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits_of(s: str | bytes) -> str:
    if isinstance(s, bytes):  # the digit detectors also run on the UTF-8 bytes (see _scan_digits)
        s = s.decode("ascii")
    return "".join(ch for ch in s if "0" <= ch <= "9")


def _card_ok(m: re.Match[str]) -> bool:
    digits = _digits_of(m.group())
    if not 13 <= len(digits) <= 19:
        return False
    if digits.count(digits[0]) == len(digits):  # 0000 0000 0000 0000 and friends
        return False
    return luhn_ok(digits)


def _phone_intl_ok(m: re.Match[str]) -> bool:
    end = m.end()
    if m.string[end:end + 1].isdigit():
        return False
    n = len(_digits_of(m.group()))
    return 8 <= n <= 15  # E.164: at most 15 digits including the country code


def _not_after_keychar(m: re.Match[str]) -> bool:
    start = m.start()
    return start == 0 or m.string[start - 1] not in _KEYCHARS


def _not_after_alnum(m: re.Match[str]) -> bool:
    start = m.start()
    return start == 0 or m.string[start - 1] not in _ALNUM


def _random_looking_key(m: re.Match[str]) -> bool:
    """`sk-…` keys: not glued to a word, and the body mixes letters and digits (keys are random;
    `sk-learn-is-a-library-name` is not a key)."""
    if not _not_after_keychar(m):
        return False
    body = m.group()[3:]
    return any(c.isdigit() for c in body) and any(c.isalpha() for c in body)


def _bearer_ok(m: re.Match[str]) -> bool:
    if not _not_after_alnum(m):
        return False
    token = m.group("token")
    return any(c.isdigit() for c in token)


# --- detectors -------------------------------------------------------------------------------

_SECRET_DETECTORS = [
    Detector(
        "private_key", "secret",
        re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?s:.*?)"
                   r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)"),
        None),
    Detector(
        "jwt", "secret",
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        _not_after_keychar),
    Detector(
        "bearer", "secret",
        re.compile(r"[Bb]earer[ \t]+(?P<token>[A-Za-z0-9._~+/=-]{16,})"),
        _bearer_ok),
    Detector(
        "anthropic_key", "secret",
        re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}"),
        _random_looking_key),
    Detector(
        "openai_key", "secret",
        re.compile(r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        _random_looking_key),
    Detector(
        "aws_key", "secret",
        re.compile(r"A(?:KIA|SIA)[0-9A-Z]{16}(?![0-9A-Za-z])"),
        _not_after_alnum),
    Detector(
        "github_token", "secret",
        re.compile(r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"),
        _not_after_alnum),
    Detector(
        "slack_token", "secret",
        re.compile(r"xox[abprs]-[A-Za-z0-9-]{10,}"),
        _not_after_alnum),
    Detector(
        "google_key", "secret",
        re.compile(r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
        _not_after_keychar),
]

_EMAIL = Detector(
    "email", "email",
    # local part and domain may be non-ASCII (RFC 6531 / IDN): \w is Unicode-aware here
    re.compile(r"(?<![\w.%+-])[\w%+-](?:[\w.%+-]{0,62}[\w%+-])?"
               r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}(?![\w-])"),
    None)

# Digit detectors. Every match starts at a digit, or at a `+` or `(` right before one.
_DIGIT_DETECTORS = [
    Detector(
        "phone_intl", "phone",
        re.compile(r"(?<![\w+])\+[1-9][0-9]{0,2}(?:[ .-]?\([0-9]{1,4}\)|[ .-]?[0-9]{1,5}){1,6}"),
        _phone_intl_ok),
    Detector(
        "card", "card",
        re.compile(r"(?<![0-9])(?<![0-9][ -])[0-9](?:[ -]?[0-9]){12,18}(?![0-9]|[ -][0-9])"),
        _card_ok),
    Detector(
        "phone_us", "phone",
        re.compile(r"(?<![\w+(.-])(?:1[ .-]?)?"
                   r"(?:\([0-9]{3}\)[ .-]?[0-9]{3}[ .-]|[0-9]{3}(?P<sep>[ .-])[0-9]{3}(?P=sep))"
                   r"[0-9]{4}(?![\w-]|\.[0-9])"),
        None),
]
DETECTORS: dict[str, Detector] = {d.name: d for d in [*_SECRET_DETECTORS, _EMAIL, *_DIGIT_DETECTORS]}

_PHONE_INTL, _CARD, _PHONE_US = _DIGIT_DETECTORS


def _secret_groups() -> tuple[tuple[str, tuple[str, ...], tuple[Detector, ...]], ...]:
    """Secret detectors grouped by (gate, needles). The gate is one character (a memchr), the
    needles (checked only when the gate is present, once per group) are used where `in` is
    cheaper than the regex's own search: measured per KB of prose, a regex with a short literal
    prefix searches in ~0.5 µs, `in` of a 3-4 char needle takes ~0.7-0.9 µs, of "-----BEGIN"
    ~0.3 µs; `[Bb]earer` has no literal prefix (~7 µs) so it hides behind "earer"."""
    gates = {
        "private_key": "-", "anthropic_key": "-", "openai_key": "-", "slack_token": "x",
        "github_token": "_", "aws_key": "A", "google_key": "A", "jwt": "J", "bearer": "e",
    }
    needles = {"private_key": ("-----BEGIN",), "anthropic_key": ("sk-",), "openai_key": ("sk-",),
               "bearer": ("earer",)}
    groups: dict[tuple[str, tuple[str, ...]], list[Detector]] = {}
    for det in _SECRET_DETECTORS:
        groups.setdefault((gates[det.name], needles.get(det.name, ())), []).append(det)
    return tuple((g, n, tuple(ds)) for (g, n), ds in groups.items())


_SECRET_GROUPS = _secret_groups()


def _has_digit(t: str) -> bool:
    return ("0" in t or "1" in t or "2" in t or "3" in t or "4" in t
            or "5" in t or "6" in t or "7" in t or "8" in t or "9" in t)


# The digit detectors match ASCII only, so they run on the UTF-8 bytes of the text, where
# `bytes.translate` turns every digit into "0" (~1 µs per KB) and the runs of digits are then
# found with memchr (`bytes.find`). Bytes twins of the patterns (`\w` is ASCII there: the only
# difference is a non-ASCII letter glued to a number, which no longer prevents a match).
_B_PHONE_INTL, _B_CARD, _B_PHONE_US = (re.compile(d.pattern.pattern.encode()) for d in _DIGIT_DETECTORS)
_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_ZERO_RUN = re.compile(rb"0*")
# Where a phone or card number can start, in the text with its digits read as "0": a digit after
# "+", "(000)", or a run of digits followed by what could continue a number (a separator then a
# digit or "(", a "(" as in "1(555) …") or 13+ digits in a row. It starts with a literal, so `re`
# finds candidates at C speed and plain numbers ("in 2024", "x = 0", "f(2)") cost nothing in Python.
_CANDIDATE = re.compile(rb"0(?:(?<=\+0)|(?<=\(0)00\)|0*(?:[ .-][0(]|\(|(?<=0{13})))")


def _try(det: Detector, pattern: re.Pattern[bytes], data: bytes, start: int) -> int:
    m = pattern.match(data, start)
    if m is not None and (det.validator is None or det.validator(m)):
        return m.end()
    return -1


def _scan_digits(text: str, out: list[tuple[str, str, int, int]]) -> None:
    """One pass over the candidate starts of phone and card numbers (see `_CANDIDATE`)."""
    ascii_only = text.isascii()
    data = text.encode("ascii") if ascii_only else text.encode("utf-8", "surrogatepass")
    zeros = data.translate(_TO_ZERO)
    search = _CANDIDATE.search
    hits: list[tuple[Detector, int, int]] = []
    pos = 0
    while True:
        m = search(zeros, pos)
        if m is None:
            break
        s = m.start()
        found: tuple[Detector, int, int] | None = None
        if s > pos:
            before = data[s - 1:s]
            if before == b"+":
                end = _try(_PHONE_INTL, _B_PHONE_INTL, data, s - 1)
                if end != -1:
                    found = (_PHONE_INTL, s - 1, end)
            elif before == b"(":
                end = _try(_PHONE_US, _B_PHONE_US, data, s - 1)
                if end != -1:
                    found = (_PHONE_US, s - 1, end)
        if found is None:
            for det, pattern in ((_CARD, _B_CARD), (_PHONE_US, _B_PHONE_US)):
                end = _try(det, pattern, data, s)
                if end != -1:
                    found = (det, s, end)
                    break
        if found is None:
            pos = _ZERO_RUN.match(zeros, s).end()  # no pattern may start right after a digit
        else:
            hits.append(found)
            pos = found[2]
    if not hits:
        return
    if ascii_only:
        out.extend((det.name, det.kind, start, end) for det, start, end in hits)
        return
    # byte offsets -> character offsets, decoding only the stretches between hits
    b_at = c_at = 0
    for det, start, end in hits:
        c_start = c_at + len(data[b_at:start].decode("utf-8", "surrogatepass"))
        c_end = c_start + (end - start)  # a match is ASCII: one byte per character
        out.append((det.name, det.kind, c_start, c_end))
        b_at, c_at = end, c_end


def _scan_emails(text: str, out: list[tuple[str, str, int, int]]) -> None:
    pattern = _EMAIL.pattern
    find = text.find
    at = find("@")
    last_end = 0
    while at != -1:
        # walk back over the local part (at most 64 chars) to where a match could start
        i = at
        lo = max(last_end, at - 65)
        while i > lo and (text[i - 1] in _LOCAL_PUNCT or text[i - 1].isalnum()):
            i -= 1
        while i < at and text[i] == ".":
            i += 1
        m = pattern.match(text, i) if i < at else None
        if m is not None:
            out.append(("email", "email", m.start(), m.end()))
            last_end = m.end()
            at = find("@", last_end)
        else:
            at = find("@", at + 1)


_LOCAL_PUNCT = frozenset("._%+-_")  # with str.isalnum(): the \w of the e-mail pattern


def scan(text: str) -> list[tuple[str, str, int, int]]:
    """All detections in `text` as `(detector_name, kind, start, end)`, sorted, non-overlapping.

    Where detections overlap, secrets win over e-mails, e-mails over phone and card numbers.
    """
    if len(text) < _MIN_LEN:
        return []
    found: list[tuple[str, str, int, int]] = []
    for gate, needles, dets in _SECRET_GROUPS:
        if gate not in text:
            continue
        if needles:
            for needle in needles:
                if needle in text:
                    break
            else:
                continue
        for det in dets:
            m = det.pattern.search(text)  # the common case, no match, without a generator
            if m is None:
                continue
            validator = det.validator
            for m in det.pattern.finditer(text, m.start()):
                if validator is None or validator(m):
                    found.append((det.name, det.kind, m.start(), m.end()))
    n_secret = len(found)
    if "@" in text:
        _scan_emails(text, found)
    n_email = len(found)
    if _has_digit(text):
        _scan_digits(text, found)
    if not found:
        return found
    if len(found) == 1:
        return found
    # resolve overlaps by priority: secrets, then e-mails, then phones and cards
    groups = [g for g in (found[:n_secret], found[n_secret:n_email], found[n_email:]) if g]
    if len(groups) == 1 and n_secret == 0:
        return groups[0]  # e-mails alone, or digits alone: already sorted, never overlapping
    starts: list[int] = []  # of the accepted items, sorted
    accepted: list[tuple[str, str, int, int]] = []
    for group in groups:
        for item in sorted(group, key=lambda x: (x[2], -x[3])):
            s, e = item[2], item[3]
            i = bisect.bisect_right(starts, s)
            if i > 0 and accepted[i - 1][3] > s:
                continue  # overlaps the accepted item that starts before it
            if i < len(starts) and starts[i] < e:
                continue  # overlaps the accepted item that starts after it
            starts.insert(i, s)
            accepted.insert(i, item)
    return accepted


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """`(kind, start, end)` for every PII or secret found; kind is email | phone | card | secret."""
    return [(kind, start, end) for _, kind, start, end in scan(text)]


def redact_text(text: str) -> str:
    """`text` with every detection replaced by its mask ([EMAIL], [PHONE], [CARD], [SECRET]).

    Returns `text` itself (the same object) when nothing is found.
    """
    found = scan(text)
    if not found:
        return text
    parts: list[str] = []
    pos = 0
    for _, kind, start, end in found:
        parts.append(text[pos:start])
        parts.append(MASKS[kind])
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def redact_value(obj: Any) -> Any:
    """A copy of `obj` (JSON-like: dicts, lists, tuples, scalars) with every string redacted.

    Dict keys are kept as they are; non-string scalars are returned unchanged.
    """
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_value(v) for v in obj]
    return obj
