"""`build_corpus`: from the store's records to a corpus file, in two passes.

1. **Scan** the route's served attempts in the window, page by page (never shadows, never the
   unserved attempts of a request). Each record is parsed once, classified (guards, scores,
   latest outcomes), placed in its stratum, checked against its capture mode, and reduced to a
   `Candidate`; its text is dropped with the page. Exact duplicates are resolved as the scan goes.
2. **Select** (near duplicates, the per-stratum budget, the seeded draw), then **fetch** the chosen
   records' full rows again by id, a page at a time, and write them as items.

Memory therefore grows with the number of distinct requests (a few hundred bytes each), not with
their text; the file's items are spooled to a temporary file until the header is known.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from proxy.corpus._classify import (
    Classifier,
    CorpusPolicy,
    effective_capture,
    has_tools,
    near_duplicate_key,
    stratum_key,
    tighten_capture,
)
from proxy.corpus._io import CorpusWriter
from proxy.corpus._model import (
    Baseline,
    CorpusCounts,
    CorpusFilters,
    CorpusHeader,
    CorpusItem,
    CorpusSource,
    OutcomeValue,
    ScoreResult,
    StratumCounts,
)
from proxy.corpus._queries import (
    PAGE,
    count_served,
    latest_outcomes,
    metric_kinds,
    rows_by_id,
    scan_served,
    scores_for,
)
from proxy.corpus._select import Candidate, Deduplicator, allocate, draw, is_failure
from proxy.records import capture_request

__all__ = ["DEFAULT_PER_CLASS_QUOTA", "BuildOptions", "Progress", "build_corpus", "public_url"]

DEFAULT_PER_CLASS_QUOTA = 50

# called after each page with (records scanned so far, about how many there are in all)
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class BuildOptions:
    """What to build. `since`/`until` are epoch seconds (since <= started_at < until)."""

    route: str
    size: int
    since: float | None = None
    until: float | None = None
    per_class_quota: int = DEFAULT_PER_CLASS_QUOTA
    include_failures: bool = True
    seed: int = 0
    policy: CorpusPolicy = dataclasses.field(default_factory=CorpusPolicy)

    def filters(self) -> CorpusFilters:
        return CorpusFilters(route=self.route, since=self.since, until=self.until, size=self.size,
                             per_class_quota=self.per_class_quota, include_failures=self.include_failures,
                             seed=self.seed)


def public_url(url: str) -> str:
    """A store URL fit for a file others read: any password removed (`user:secret@host` -> `user@host`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class _Metrics:
    """The outcome metrics the store holds, by level: all of them (for the baseline) and those
    with a bad value (the only ones that can make a record a failure)."""

    def __init__(self, kinds: Mapping[str, tuple[set[str], bool]], classifier: Classifier) -> None:
        self.all = {level: sorted(m for m, (levels, _) in kinds.items() if level in levels)
                    for level in ("inference", "episode")}
        self.failing = {level: [m for m in names if classifier.bad_value(m) is not None]
                        for level, names in self.all.items()}


async def _outcomes(store: Any, metrics: Mapping[str, list[str]], request_ids: list[str],
                    episode_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    by_request = await latest_outcomes(store, "inference", metrics["inference"], request_ids)
    by_episode = await latest_outcomes(store, "episode", metrics["episode"], episode_ids)
    return by_request, by_episode


def _episodes(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["episode_id"] for r in rows if isinstance(r.get("episode_id"), str)})


async def _scan(store: Any, options: BuildOptions, classifier: Classifier, metrics: _Metrics,
                counts: CorpusCounts, progress: Progress | None) -> list[Candidate]:
    """Pass 1: every served record of the window, classified; the deduplicated candidates."""
    dedup = Deduplicator(counts.strata)
    keys: dict[str, str] = {}  # one string object per stratum key, shared by its candidates
    route_mode = options.policy.capture.get(options.route)
    loads = orjson.loads
    total = await count_served(store, options.route, options.since, options.until) if progress else 0
    async for page in scan_served(store, options.route, options.since, options.until):
        facts = [loads(f) for (*_, f) in page]  # SCAN_FIELDS of each record
        scores = await scores_for(store, [rid for (rid, *_) in page])
        episodes = sorted({f[3] for f in facts if isinstance(f[3], str)})
        by_request, by_episode = await _outcomes(store, metrics.failing, [p[3] for p in page], episodes)
        for (rid, started_at, rhash, request_id, _), (request, template_ref, stored_mode, episode_id, params,
                                                     guards, stored_hash) in zip(page, facts):
            outcomes = [(m, o[0]) for m, o in by_request.get(request_id, {}).items()]
            if episode_id in by_episode:
                outcomes += [(m, o[0]) for m, o in by_episode[episode_id].items()]
            rank, failure_class = classifier.failure_class(
                guards, [(s[0], s[1], s[2], s[4]) for s in scores.get(rid, ())], outcomes)
            key = stratum_key(options.route, template_ref, has_tools(request, params), failure_class)
            key = keys.setdefault(key, key)
            stratum = counts.strata.get(key)
            if stratum is None:
                stratum = counts.strata[key] = StratumCounts()
            mode = effective_capture(stored_mode, route_mode)
            if mode == "refs_only":  # no text: nothing to replay, and nothing of it may be written
                counts.refs_only_skipped += 1
                stratum.refs_only_skipped += 1
                continue
            if not isinstance(request, dict) or not request:
                counts.no_request_skipped += 1
                continue
            if mode != stored_mode:
                request = capture_request(request, mode)
            counts.replayable += 1
            dedup.add(Candidate(rid, started_at, rhash or stored_hash, near_duplicate_key(request), key, rank))
        counts.records_scanned += len(page)
        if progress is not None:
            progress(counts.records_scanned, max(total, counts.records_scanned))
    kept = dedup.finish()
    counts.duplicates, counts.near_duplicates = dedup.duplicates, dedup.near_duplicates
    return kept


def _item(row: dict[str, Any], candidate: Candidate, mode: str, scores: list[tuple[Any, ...]],
          request_outcomes: Mapping[str, tuple[float, float, str]],
          episode_outcomes: Mapping[str, tuple[float, float, str]]) -> CorpusItem:
    if mode != row.get("capture"):
        row = tighten_capture(row, mode)
    outcomes = {m: OutcomeValue(value=o[0], level="episode", received_at=o[1]) for m, o in episode_outcomes.items()}
    outcomes.update({m: OutcomeValue(value=o[0], level="inference", received_at=o[1])
                     for m, o in request_outcomes.items()})
    baseline = Baseline(
        response=row.get("response"), guards=list(row.get("guards") or ()),
        scores=[ScoreResult(scorer=s[0], kind=s[1], label=s[2], score=s[3], taxonomy=s[4]) for s in scores],
        outcomes=dict(sorted(outcomes.items())), failure_class=candidate.stratum.rsplit("|", 1)[-1],
        status=row.get("status"), finish_reason=row.get("finish_reason"), usage=row.get("usage"),
        latency_ms=row.get("latency_ms"), ttft_ms=row.get("ttft_ms"), cost_usd=row.get("cost_usd"),
        cache_hit=bool(row.get("cache_hit")),
        model_served=row.get("model_served"), system_fingerprint=row.get("system_fingerprint"))
    return CorpusItem(
        record_id=row["id"], request_id=row["request_id"], route=row["route"], variant=row["variant"],
        model=row.get("model_requested") or "", endpoint=row.get("endpoint") or "chat.completions",
        request=row["request"], baseline=baseline, stratum=candidate.stratum, provider=row.get("provider"),
        episode_id=row.get("episode_id"), template_ref=row.get("template_ref"), capture=row["capture"],
        stream=bool(row.get("stream")), params=dict(row.get("params") or {}), request_hash=row.get("request_hash"),
        started_at=row.get("started_at"), tags=list(row.get("tags") or ()),
        retrieval_ids=list(row.get("retrieval_ids") or ()))


async def _write_items(store: Any, chosen: list[Candidate], options: BuildOptions, metrics: _Metrics,
                       writer: CorpusWriter) -> None:
    """Pass 2: the chosen records' full rows, a page at a time, written as items."""
    route_mode = options.policy.capture.get(options.route)
    for start in range(0, len(chosen), PAGE):
        page = chosen[start:start + PAGE]
        found = await rows_by_id(store, [c.id for c in page])
        rows = {rid: orjson.loads(data) for rid, data in found.items()}
        scores = await scores_for(store, list(rows))
        by_request, by_episode = await _outcomes(store, metrics.all, [r["request_id"] for r in rows.values()],
                                                 _episodes(list(rows.values())))
        for candidate in page:
            row = rows.get(candidate.id)
            if row is None:  # gone since the scan: the header counts only what is written
                continue
            mode = effective_capture(row.get("capture"), route_mode)
            if mode == "refs_only" or not isinstance(row.get("request"), dict):
                continue
            writer.write(_item(row, candidate, mode, scores.get(candidate.id, []),
                               by_request.get(row["request_id"], {}), by_episode.get(row.get("episode_id") or "", {})))


async def build_corpus(store: Any, options: BuildOptions, out: str | Path | IO[bytes], *,
                       progress: Progress | None = None) -> CorpusHeader:
    """Build a corpus from an open store's records and write it to `out` (a path, "-" for standard
    output, or a binary file object). Returns the header as written."""
    if options.size < 0 or options.per_class_quota < 0:
        raise ValueError("size and per_class_quota must be >= 0")
    built_at = time.time()
    kinds = await metric_kinds(store)
    classifier = Classifier(options.policy, boolean_metrics=[m for m, (_, boolean) in kinds.items() if boolean])
    metrics = _Metrics(kinds, classifier)
    counts = CorpusCounts()
    kept = await _scan(store, options, classifier, metrics, counts, progress)
    available = {key: c.available for key, c in counts.strata.items()}
    allocation = allocate(available, [k for k in available if is_failure(k)], size=options.size,
                          per_class_quota=options.per_class_quota, include_failures=options.include_failures)
    chosen = draw(kept, allocation, options.seed)
    del kept
    header = CorpusHeader(source=CorpusSource(store=public_url(store.url), built_at=built_at,
                                              policy_version=options.policy.version),
                          filters=options.filters(), counts=counts)
    with CorpusWriter(out) as writer:
        await _write_items(store, chosen, options, metrics, writer)
        return writer.close(header)
