"""Time parameters (`since`, `until`, ages): parsed and validated in one place for every caller —
`/v1/reports`, the `/ui` pages and their JSON twins, and the CLI's `--since`, `--until` and
`--older-than` (report, export, corpus build, prune).

A time is epoch seconds (`1767225600`, `1767225600.5`), an ISO date or time (`2026-11-23`,
`2026-11-23T10:00`, `2026-11-23T10:00+01:00`; without an offset it is local time), or an age
counted back from now (`30s`, `15m`, `24h`, `7d`, `2w`). Whatever it is, the result must be a
finite instant in [1970-01-01, 10000-01-01): `nan`, `inf`, `1e400` (an infinite float), negative
epochs and ages reaching before 1970 are refused, never read as "all time".
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import datetime

from proxy.errors import InvalidRequest

__all__ = ["ACCEPTED", "EARLIEST", "LATEST", "BadTime", "parse_time", "time_param", "time_range"]

EARLIEST = 0.0  # 1970-01-01: nothing was recorded before it
LATEST = 253402300800.0  # 10000-01-01: times past it are typing errors (and datetime cannot show them)
ACCEPTED = ("epoch seconds such as 1767225600, an ISO time such as 2026-11-23T10:00, "
            "or an age such as 30m, 24h or 7d")

_AGE = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)([smhdw])")  # 12 digits of weeks is already before 1970
_EPOCH = re.compile(r"\d{1,12}(?:\.\d{1,20})?")  # plain digits: no sign, exponent, nan, inf or underscores
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadTime(ValueError):
    """A time that cannot be used; the message quotes it (shortened) and says what is accepted."""


def _refuse(text: str, why: str) -> BadTime:
    return BadTime(f"{text[:50]!r} {why}: use {ACCEPTED}")


def parse_time(text: str, *, now: float | None = None) -> float:
    """Epoch seconds of `text`; raises `BadTime` for anything outside [1970, 10000) or unparseable."""
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        seconds = (time.time() if now is None else now) - float(age[1]) * _UNIT_S[age[2]]
    elif _EPOCH.fullmatch(value):
        seconds = float(value)
    else:
        try:
            seconds = datetime.fromisoformat(value).timestamp()
        except (ValueError, OverflowError, OSError):  # OverflowError/OSError: years the platform cannot convert
            raise _refuse(value, "is not a time") from None
    if not (math.isfinite(seconds) and EARLIEST <= seconds < LATEST):
        raise _refuse(value, "is outside 1970-01-01 .. 9999-12-31")
    return seconds


def time_param(query: Mapping[str, str], name: str) -> float | None:
    """The query parameter `name` as epoch seconds (None when absent or empty); a 400 naming it otherwise."""
    raw = query.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return parse_time(raw)
    except BadTime as exc:
        raise InvalidRequest(f"'{name}': {exc}", param=name, code="invalid_time") from None


def time_range(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    """`since` and `until` of a query; `since` after `until` is a 400 too (it would select nothing)."""
    since, until = time_param(query, "since"), time_param(query, "until")
    if since is not None and until is not None and since > until:
        raise InvalidRequest(f"'since' ({query.get('since', '')[:50]!r}) is after 'until' "
                             f"({query.get('until', '')[:50]!r}): the window would be empty",
                             param="until", code="invalid_time")
    return since, until
