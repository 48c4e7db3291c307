"""Choosing the corpus: deduplication, the per-stratum budget, and the seeded sample.

Only what selection needs is kept per record (`Candidate`: id, start, hashes, stratum, class rank —
about 250 bytes), never its text: the full rows of the chosen few are read again at the end.

Every choice here is a pure function of the candidates and the seed (a total order decides each
tie, and each stratum draws from its own generator seeded with `seed` and the stratum's key), so a
rebuild over the same records gives the same corpus, whatever order the store returned them in.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from proxy.corpus._classify import OK, Rank
from proxy.corpus._model import StratumCounts

__all__ = ["Candidate", "Deduplicator", "allocate", "draw", "is_failure"]


class Candidate:
    """One replayable record, as far as selection needs it."""

    __slots__ = ("id", "started_at", "request_hash", "near_key", "stratum", "rank")

    def __init__(self, id: str, started_at: float, request_hash: str | None, near_key: bytes | None,
                 stratum: str, rank: Rank) -> None:
        self.id = id
        self.started_at = started_at
        self.request_hash = request_hash
        self.near_key = near_key
        self.stratum = stratum
        self.rank = rank

    def keeps_over(self, other: Candidate) -> bool:
        """Which of two duplicates stays: the worse failure class (a failure teaches more than a
        routine answer to the same prompt), then the more recent record, then the larger id."""
        if self.rank != other.rank:
            return self.rank < other.rank
        return (self.started_at, self.id) > (other.started_at, other.id)

    def __repr__(self) -> str:
        return f"Candidate({self.id!r}, {self.stratum!r})"


class Deduplicator:
    """Exact duplicates (same `request_hash`) are dropped as records arrive, keeping one per hash;
    near duplicates (same normalized text, different hash) at the end. What is dropped is counted
    in the dropped record's own stratum."""

    def __init__(self, strata: dict[str, StratumCounts]) -> None:
        self._strata = strata
        self._by_hash: dict[str, Candidate] = {}
        self._unhashed: list[Candidate] = []
        self.duplicates = 0
        self.near_duplicates = 0

    def _counts(self, key: str) -> StratumCounts:
        counts = self._strata.get(key)
        if counts is None:
            counts = self._strata[key] = StratumCounts()
        return counts

    def add(self, candidate: Candidate) -> None:
        self._counts(candidate.stratum)
        if candidate.request_hash is None:
            self._unhashed.append(candidate)
            return
        current = self._by_hash.get(candidate.request_hash)
        if current is None:
            self._by_hash[candidate.request_hash] = candidate
            return
        if candidate.keeps_over(current):
            self._by_hash[candidate.request_hash], dropped = candidate, current
        else:
            dropped = candidate
        self._counts(dropped.stratum).duplicates += 1
        self.duplicates += 1

    def finish(self) -> list[Candidate]:
        """The records left after both deduplications; sets each stratum's `available`."""
        kept: list[Candidate] = []
        by_text: dict[bytes, Candidate] = {}
        for candidate in [*self._by_hash.values(), *self._unhashed]:
            if candidate.near_key is None:
                kept.append(candidate)
                continue
            current = by_text.get(candidate.near_key)
            if current is None:
                by_text[candidate.near_key] = candidate
                continue
            if candidate.keeps_over(current):
                by_text[candidate.near_key], dropped = candidate, current
            else:
                dropped = candidate
            self._counts(dropped.stratum).near_duplicates += 1
            self.near_duplicates += 1
        kept += by_text.values()
        self._by_hash.clear()
        self._unhashed.clear()
        for candidate in kept:
            self._counts(candidate.stratum).available += 1
        return kept


def _water_fill(wants: Mapping[str, int], budget: int) -> dict[str, int]:
    """Give each key min(want, cap) with the largest cap that fits the budget; the budget left over
    goes one item each to the still-unsatisfied keys, in key order. Small classes keep all their
    items and big ones share the rest evenly."""
    if sum(wants.values()) <= budget:
        return dict(wants)
    low, high = 0, max(wants.values())
    while low < high:  # the largest cap whose total fits
        cap = (low + high + 1) // 2
        if sum(min(w, cap) for w in wants.values()) <= budget:
            low = cap
        else:
            high = cap - 1
    out = {k: min(w, low) for k, w in wants.items()}
    left = budget - sum(out.values())
    for key in sorted(k for k, w in wants.items() if w > low):
        if left <= 0:
            break
        out[key] += 1
        left -= 1
    return out


def _proportional(available: Mapping[str, int], budget: int) -> dict[str, int]:
    """`budget` items shared in proportion to each key's count (largest remainder; ties by key)."""
    total = sum(available.values())
    if total <= budget:
        return dict(available)
    exact = {k: budget * n / total for k, n in available.items()}
    out = {k: int(x) for k, x in exact.items()}
    left = budget - sum(out.values())
    for key in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[key] += 1
    return out


def allocate(available: Mapping[str, int], failure_keys: Iterable[str], *, size: int, per_class_quota: int,
             include_failures: bool) -> dict[str, int]:
    """Items to draw per stratum.

    Failure strata (class other than `ok`) get up to `per_class_quota` each when
    `include_failures`, none otherwise; if their quotas together exceed `size` they share it evenly
    (`_water_fill`). The rest of `size` goes to the `ok` strata in proportion to their traffic
    (records left after deduplication). A stratum never gets more than it has, so the corpus is
    smaller than `size` when the store holds too few routine records.
    """
    failures = set(failure_keys)
    wants = {k: min(n, max(per_class_quota, 0)) if include_failures else 0
             for k, n in available.items() if k in failures}
    out = _water_fill(wants, max(size, 0))
    left = max(size, 0) - sum(out.values())
    out.update(_proportional({k: n for k, n in available.items() if k not in failures}, left))
    return out


def draw(candidates: Iterable[Candidate], allocation: Mapping[str, int], seed: int) -> list[Candidate]:
    """The seeded sample: per stratum, `allocation[key]` candidates drawn without replacement from
    its candidates in (started_at, id) order, by a generator seeded with (seed, key). Returned in
    (stratum, started_at, id) order."""
    by_stratum: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_stratum.setdefault(candidate.stratum, []).append(candidate)
    chosen: list[Candidate] = []
    for key in sorted(by_stratum):
        k = allocation.get(key, 0)
        if k <= 0:
            continue
        pool = sorted(by_stratum[key], key=lambda c: (c.started_at, c.id))
        picked = pool if k >= len(pool) else random.Random(f"{seed}:{key}").sample(pool, k)
        chosen += sorted(picked, key=lambda c: (c.started_at, c.id))
    return chosen


def is_failure(key: str) -> bool:
    """Whether a stratum key's class is a failure (anything but `ok`)."""
    return key.rsplit("|", 1)[-1] != OK
