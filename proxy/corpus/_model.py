"""The corpus file's shapes: a header line, then one `CorpusItem` per line.

A corpus is the input of a replay run that someone else writes, possibly with a later sluicegate,
so the shapes are explicit dataclasses with `to_dict` / `from_dict` (JSON-ready dicts). `from_dict`
ignores keys it does not know, so a reader accepts a file written by a newer minor revision of the
same `version`; a different `version` is refused by the reader (`proxy.corpus._io`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CORPUS_KIND",
    "CORPUS_VERSION",
    "Baseline",
    "CorpusCounts",
    "CorpusFilters",
    "CorpusHeader",
    "CorpusItem",
    "CorpusSource",
    "OutcomeValue",
    "ScoreResult",
    "StratumCounts",
]

CORPUS_KIND = "sluicegate.corpus"
CORPUS_VERSION = 1


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `data` that are fields of dataclass `cls` (unknown keys: a newer writer's)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


# --- items -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ScoreResult:
    """One stored score of the baseline answer (a row of the store's `scores` table)."""

    scorer: str
    kind: str  # rule | llm_judge | human
    label: str  # the scorer's label; "judge_error" when the judge gave no verdict
    score: float | None = None
    taxonomy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreResult:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True, slots=True)
class OutcomeValue:
    """The latest downstream outcome of one metric (a later report overrides an earlier one, as in
    the reports). `level` says whether it was reported for the request or for its episode."""

    value: float
    level: str  # inference | episode
    received_at: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutcomeValue:
        return cls(**_known(cls, data))


@dataclasses.dataclass(slots=True)
class Baseline:
    """What the original variant did with the request: the yardstick a replayed candidate is
    compared with. `response` and `guards` are as the record holds them (capture mode applied)."""

    response: dict[str, Any] | None
    guards: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scores: list[ScoreResult] = dataclasses.field(default_factory=list)
    outcomes: dict[str, OutcomeValue] = dataclasses.field(default_factory=dict)
    failure_class: str = "ok"  # the class part of the item's stratum, e.g. "guard:schema_violation"
    status: int | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None
    cache_hit: bool = False  # answered from the output cache: no latency or cost of its own
    model_served: str | None = None
    system_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["scores"] = [s.to_dict() for s in self.scores]
        out["outcomes"] = {metric: o.to_dict() for metric, o in self.outcomes.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        known = _known(cls, data)
        known["scores"] = [ScoreResult.from_dict(s) for s in known.get("scores") or ()]
        known["outcomes"] = {m: OutcomeValue.from_dict(o) for m, o in (known.get("outcomes") or {}).items()}
        known["guards"] = list(known.get("guards") or ())
        return cls(**known)


@dataclasses.dataclass(slots=True)
class CorpusItem:
    """One replayable request and its baseline.

    `request` is the stored request body exactly as the record's capture mode kept it (`full`:
    verbatim; `redacted`: PII and secrets already masked by the recorder) — never more. `model` is
    the pinned model the variant sent upstream; `params` the sampling parameters as sent, so a
    replay can pin them again. `stratum` is `route|template_ref|tools|class` (see `proxy.corpus`).
    """

    record_id: str
    request_id: str
    route: str
    variant: str
    model: str
    endpoint: str
    request: dict[str, Any]
    baseline: Baseline
    stratum: str
    provider: str | None = None
    episode_id: str | None = None
    template_ref: str | None = None
    capture: str = "full"  # full | redacted (refs_only records are never items)
    stream: bool = False
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    request_hash: str | None = None
    started_at: float | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    retrieval_ids: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["baseline"] = self.baseline.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorpusItem:
        known = _known(cls, data)
        known["baseline"] = Baseline.from_dict(known.get("baseline") or {})
        return cls(**known)


# --- header ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CorpusSource:
    """Where the corpus came from: the store (URL without password), when, and under which policy."""

    store: str
    built_at: float
    policy_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorpusSource:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True, slots=True)
class CorpusFilters:
    """The build's arguments, so a corpus can be rebuilt identically (same store content + seed)."""

    route: str
    since: float | None
    until: float | None
    size: int
    per_class_quota: int
    include_failures: bool
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorpusFilters:
        return cls(**_known(cls, data))


@dataclasses.dataclass(slots=True)
class StratumCounts:
    """Per stratum: records left after deduplication (`available`), items in the file
    (`selected`), and what was set aside: exact and near duplicates, `refs_only` records."""

    available: int = 0
    selected: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    refs_only_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StratumCounts:
        return cls(**_known(cls, data))


@dataclasses.dataclass(slots=True)
class CorpusCounts:
    """Totals of the build. They add up: records_scanned = refs_only_skipped + no_request_skipped
    + replayable, and replayable = duplicates + near_duplicates + Σ strata available."""

    records_scanned: int = 0
    replayable: int = 0
    refs_only_skipped: int = 0
    no_request_skipped: int = 0  # served records holding no request body at all (nothing to replay)
    duplicates: int = 0
    near_duplicates: int = 0
    selected: int = 0
    strata: dict[str, StratumCounts] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["strata"] = {key: c.to_dict() for key, c in sorted(self.strata.items())}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorpusCounts:
        known = _known(cls, data)
        known["strata"] = {k: StratumCounts.from_dict(v) for k, v in (known.get("strata") or {}).items()}
        return cls(**known)


@dataclasses.dataclass(slots=True)
class CorpusHeader:
    """The first line of a corpus file."""

    source: CorpusSource
    filters: CorpusFilters
    counts: CorpusCounts
    kind: str = CORPUS_KIND
    version: int = CORPUS_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "source": self.source.to_dict(),
                "filters": self.filters.to_dict(), "counts": self.counts.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorpusHeader:
        return cls(source=CorpusSource.from_dict(data.get("source") or {}),
                   filters=CorpusFilters.from_dict(data.get("filters") or {}),
                   counts=CorpusCounts.from_dict(data.get("counts") or {}),
                   kind=data.get("kind", CORPUS_KIND), version=data.get("version", CORPUS_VERSION))
