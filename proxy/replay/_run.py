"""`run_replay`: a corpus against a candidate model, item by item, compared with a baseline.

    run = await run_replay(policy, ReplayOptions(corpus=Path("c.jsonl"), variant="candidate"))
    run.summary["paired"]["p_value"], run.exit_code

Order of work, and why:

1. **Check everything before sending anything**: the variant and baseline are models of the policy,
   the corpus reads to its last line, every item's route exists (its guards and scorers are the
   yardstick), the results file holds this same comparison. A usage error costs nothing.
2. **Send** each item not already done (`--concurrency` workers sharing one reader of the corpus, so
   memory does not grow with its size), paced by `--rate` and upstream rate limits (`Pacer`,
   `Sender`): to the candidate, and with `--baseline MODEL` to that model too.
3. **Check** both answers with the route's guards, rule scorers and (`--judge`) judges (`Checks`).
4. **Append** the item's result to the results file and flush it at once: an interrupted run has
   lost only the items in flight, and a re-run skips what is written.
5. **Summarize** every result in the file (earlier runs' included), in corpus order; the `--fail-on`
   rules decide the exit code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx

from proxy.corpus import CorpusFormatError, CorpusHeader, CorpusItem, iter_items, read_header
from proxy.costs import cost_usd
from proxy.prices import price_for
from proxy.providers import ProviderAdapter, build_provider
from proxy.replay._body import replay_body
from proxy.replay._checks import Checks, excerpt
from proxy.replay._gate import FailRule, rules_met
from proxy.replay._model import RECORDED, ItemResult, Side
from proxy.replay._pace import Pacer
from proxy.replay._progress import ProgressBar
from proxy.replay._results import ResultsFile, ResultsMismatch, default_out, new_header, results_of
from proxy.replay._send import DEFAULT_MAX_RETRIES, Reply, Sender
from proxy.server._cache import cache_key
from proxy.replay._summary import summarize

__all__ = ["DEFAULT_CONCURRENCY", "Adapters", "CorpusScan", "ReplayOptions", "ReplayRun", "ReplayUsageError",
           "answer_side", "recorded_side", "run_replay", "scan_corpus"]

DEFAULT_CONCURRENCY = 4


class ReplayUsageError(ValueError):
    """The replay cannot start as asked (exit code 2); the message says what to fix."""


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayOptions:
    corpus: Path
    variant: str
    baseline: str = RECORDED  # "recorded", or a model of the policy
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None  # upstream calls per second, across all workers; None: unlimited
    judge: bool = False
    out: Path | None = None  # default: <corpus>.replay-<variant>.jsonl
    fail_on: tuple[FailRule, ...] = ()
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    cache: Any = None  # a ResponseCache for the baseline model's answers (`--cache`): reruns stay stable
    cache_ttl_s: float = 30 * 86400

    @property
    def out_path(self) -> Path:
        return self.out if self.out is not None else default_out(self.corpus, self.variant)


@dataclasses.dataclass(slots=True)
class ReplayRun:
    """What a run did: the summary (every result in the file), the results in corpus order
    (answers left out), and this run's own counts."""

    summary: dict[str, Any]
    results: list[ItemResult]
    out: Path
    sent: int  # items sent in this run
    skipped: int  # items an earlier run had finished
    duration_s: float

    @property
    def gate_met(self) -> list[str]:
        return list(self.summary.get("gate", {}).get("met", []))

    @property
    def exit_code(self) -> int:
        return 1 if self.gate_met else 0


@dataclasses.dataclass(slots=True)
class CorpusScan:
    header: CorpusHeader
    ids: list[str]  # record ids in file order, each once
    routes: set[str]
    streamed: int
    duplicates: int


def scan_corpus(path: Path) -> CorpusScan:
    """Read the whole corpus once (before anything is sent): a broken line is a usage error now, not
    a crash half-way through a paid run."""
    if not path.exists():
        raise ReplayUsageError(f"{path}: no such corpus file (build one with `sluicegate corpus build --route R "
                               f"--size N --out {path}`)")
    try:
        header = read_header(path)
        ids: list[str] = []
        seen: set[str] = set()
        routes: set[str] = set()
        streamed = duplicates = 0
        for item in iter_items(path):
            if item.record_id in seen:
                duplicates += 1
                continue
            seen.add(item.record_id)
            ids.append(item.record_id)
            routes.add(item.route)
            streamed += item.stream
    except CorpusFormatError as exc:
        raise ReplayUsageError(str(exc)) from None
    except OSError as exc:
        raise ReplayUsageError(f"{path}: cannot read the corpus: {exc.strerror}") from None
    return CorpusScan(header, ids, routes, streamed, duplicates)


class Adapters:
    """The providers' adapters a replay needs, built on first use (one pool each), closed at the end."""

    def __init__(self, policy: Any, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> None:
        self.policy = policy
        self.transports = dict(transports or {})
        self._built: dict[str, ProviderAdapter] = {}

    def get(self, provider: str) -> ProviderAdapter:
        adapter = self._built.get(provider)
        if adapter is None:
            config = self.policy.providers.get(provider)
            if config is None:
                known = ", ".join(sorted(self.policy.providers)) or "none"
                raise ReplayUsageError(f"provider '{provider}' is not in the policy (its providers: {known})")
            try:
                adapter = build_provider(provider, config, self.transports.get(provider))
            except NotImplementedError as exc:
                raise ReplayUsageError(f"provider '{provider}': {exc}") from None
            self._built[provider] = adapter
        return adapter

    def built(self) -> dict[str, ProviderAdapter]:
        return dict(self._built)

    async def close(self) -> None:
        built, self._built = self._built, {}
        for adapter in built.values():
            await adapter.close()


def _model_names(policy: Any) -> str:
    return ", ".join(sorted(policy.models)) or "none"


def _check(policy: Any, options: ReplayOptions) -> None:
    source = getattr(policy, "source", "the policy")
    if options.variant not in policy.models:
        raise ReplayUsageError(f"--variant {options.variant}: not a model of {source}; its models: "
                               f"{_model_names(policy)}")
    if options.baseline != RECORDED and options.baseline not in policy.models:
        raise ReplayUsageError(f"--baseline {options.baseline}: not a model of {source} (nor 'recorded'); "
                               f"its models: {_model_names(policy)}")
    if options.concurrency < 1:
        raise ReplayUsageError(f"--concurrency {options.concurrency}: must be at least 1")
    if options.rate is not None and options.rate <= 0:
        raise ReplayUsageError(f"--rate {options.rate:g}: must be > 0 requests per second (leave it out for no limit)")
    if options.max_retries < 0:
        raise ReplayUsageError("max_retries must be >= 0")
    if options.cache is not None and options.baseline == RECORDED:
        raise ReplayUsageError("--cache keeps a baseline model's answers: use it with --baseline MODEL "
                               "(a recorded baseline is stable already)")


def _first(choices: Any) -> Mapping[str, Any] | None:
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        return choices[0]
    return None


def answer_side(source: str, model: Any, reply: Reply) -> Side:
    """A side from a live call to policy model `model` (named `source`)."""
    side = Side(source=source, model=model.model, status=reply.status, error=reply.error,
                error_class=reply.error_class, transient=reply.transient, latency_ms=reply.latency_ms, attempts=reply.attempts,
                response=reply.data)
    data = reply.data
    if data is not None:
        side.model_served = data.get("model") if isinstance(data.get("model"), str) else None
        side.system_fingerprint = data.get("system_fingerprint")
        usage = data.get("usage")
        side.usage = usage if isinstance(usage, dict) else None
        first = _first(data.get("choices"))
        side.finish_reason = first.get("finish_reason") if first is not None else None
        side.cost_usd = cost_usd(price_for(model), side.usage)
        side.excerpt = excerpt(data)
    return side


def recorded_side(item: CorpusItem) -> Side:
    """The baseline as the corpus recorded it. A corpus written before output caching existed has
    no `cache_hit`: such answers count as live."""
    b = item.baseline
    status = b.status if b.status is not None else (200 if b.response is not None else None)
    return Side(source=RECORDED, model=item.model, status=status, latency_ms=b.latency_ms, cost_usd=b.cost_usd,
                usage=b.usage, model_served=b.model_served, system_fingerprint=b.system_fingerprint,
                finish_reason=b.finish_reason, cache_hit=b.cache_hit,
                excerpt=excerpt(b.response), response=b.response)


class _Replayer:
    """One run's state: what to send where, and how to check it."""

    def __init__(self, policy: Any, options: ReplayOptions, adapters: Adapters, checks: Checks, sender: Sender) -> None:
        self.policy = policy
        self.options = options
        self.adapters = adapters
        self.checks = checks
        self.sender = sender

    async def _ask(self, name: str, item: CorpusItem) -> tuple[Side, dict[str, Any]]:
        model = self.policy.models[name]
        body = replay_body(item.request, item.params, model, self.policy.providers[model.provider])
        cache = self.options.cache if name == self.options.baseline else None
        key = cache_key(model.provider, body) if cache is not None else None
        if key is not None:
            answer = await cache.get(key)
            if answer is not None:  # the baseline as it answered before: a rerun compares with the same text
                side = answer_side(name, model, Reply(data=answer, status=200, latency_ms=None, attempts=0))
                side.cache_hit = True
                return side, body
        reply = await self.sender.send(self.adapters.get(model.provider), item.endpoint, body)
        if key is not None and reply.status == 200 and reply.data is not None:
            cache.put(key, route=item.route, variant=name, model=model.model, answer=reply.data,
                      ttl_s=self.options.cache_ttl_s)
        return answer_side(name, model, reply), body

    async def _checked(self, side: Side, item: CorpusItem, request: dict[str, Any]) -> Side:
        await self.checks.check(side, route=item.route, endpoint=item.endpoint, request=request,
                                record_id=item.record_id, request_id=item.request_id,
                                retrieval_ids=tuple(item.retrieval_ids))
        return side

    async def one(self, item: CorpusItem) -> ItemResult:
        if self.options.baseline == RECORDED:
            candidate, body = await self._ask(self.options.variant, item)
            baseline, baseline_request = recorded_side(item), item.request
        else:
            (candidate, body), (baseline, baseline_request) = await asyncio.gather(
                self._ask(self.options.variant, item), self._ask(self.options.baseline, item))
        await asyncio.gather(self._checked(candidate, item, body), self._checked(baseline, item, baseline_request))
        b = item.baseline
        return ItemResult(record_id=item.record_id, stratum=item.stratum, route=item.route, variant=item.variant,
                          baseline=baseline, candidate=candidate, stream=item.stream,
                          recorded_served=(b.model_served, b.system_fingerprint), finished_at=time.time())


def _pending(path: Path, done: set[str]) -> Generator[CorpusItem, None, None]:
    seen: set[str] = set()
    for item in iter_items(path):
        if item.record_id in done or item.record_id in seen:
            continue
        seen.add(item.record_id)
        yield item


async def run_replay(policy: Any, options: ReplayOptions, *,
                     transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
                     progress: TextIO | None = None,
                     on_result: Callable[[ItemResult], None] | None = None) -> ReplayRun:
    """Replay a corpus. Raises ReplayUsageError (before sending anything) when it cannot start.
    `transports`: provider name -> httpx transport (tests). `progress`: a stream for the progress line."""
    started = time.monotonic()
    _check(policy, options)
    scan = scan_corpus(options.corpus)
    missing = sorted(scan.routes - set(policy.routes))
    if missing:
        raise ReplayUsageError(f"{options.corpus}: items of route(s) {', '.join(missing)}, which the policy does not "
                               f"have (its routes: {', '.join(sorted(policy.routes)) or 'none'}); the route's guards "
                               "and scorers are what a replay checks: pass the policy the corpus was built under")
    adapters = Adapters(policy, transports)
    try:
        for name in {options.variant, options.baseline} - {RECORDED}:
            adapters.get(policy.models[name].provider)
        judge_adapters = None
        if options.judge:
            judge_adapters = {}
            for route in scan.routes:
                for scorer in policy.routes[route].scorers:
                    config = policy.scorers.get(scorer)
                    if config is not None and config.kind == "llm_judge":
                        provider = policy.models[config.model].provider
                        judge_adapters[provider] = adapters.get(provider)
        try:
            checks = Checks(policy, judge_adapters)
        except ValueError as exc:
            raise ReplayUsageError(str(exc)) from None
        try:
            results_file = ResultsFile.open(options.out_path, new_header(options.corpus, options.variant,
                                                                         options.baseline, options.judge))
        except ResultsMismatch as exc:
            raise ReplayUsageError(str(exc)) from None
        except OSError as exc:
            raise ReplayUsageError(f"{options.out_path}: cannot write the results: {exc.strerror}") from None
        sender = Sender(Pacer(options.rate), max_retries=options.max_retries, base_delay_s=options.retry_base_s,
                        max_delay_s=options.retry_max_s)
        replayer = _Replayer(policy, options, adapters, checks, sender)
        done = results_file.done() & set(scan.ids)
        results: dict[str, ItemResult] = dict(results_file.previous)
        bar = ProgressBar(len(scan.ids), progress, already_done=len(done)) if progress is not None else None
        pending = _pending(options.corpus, done)
        sent = 0

        async def worker() -> None:
            nonlocal sent
            for item in pending:  # one shared reader: each `next` runs to completion between awaits
                result = await replayer.one(item)
                results_file.append(result)
                result.candidate.response = result.baseline.response = None  # the file has them
                results[item.record_id] = result
                sent += 1
                if on_result is not None:
                    on_result(result)
                if bar is not None:
                    bar.advance()

        try:
            if bar is not None:
                bar.start()
            async with asyncio.TaskGroup() as group:
                for _ in range(min(options.concurrency, max(1, len(scan.ids) - len(done)))):
                    group.create_task(worker())
        finally:
            pending.close()
            results_file.close()
            if bar is not None:
                bar.finish()
    finally:
        await adapters.close()

    ordered = results_of(scan.ids, results)
    notes = []
    if done:
        notes.append(f"resumed: {len(done)} item(s) were finished by an earlier run (in {options.out_path})")
    if scan.duplicates:
        notes.append(f"the corpus lists {scan.duplicates} record id(s) twice: each was replayed once")
    if sender.rate_limited:
        notes.append(f"the upstream rate-limited {sender.rate_limited} call(s) (429): waited as told "
                     f"({sender.pacer.waited_s:.1f} s in all) and retried")
    duration = time.monotonic() - started
    summary = summarize(
        ordered, items=len(scan.ids), taxonomy=_taxonomy(policy), corpus=str(options.corpus),
        variant=options.variant, baseline=options.baseline, judge=options.judge, notes=notes,
        run={"out": str(options.out_path), "sent": sent, "skipped": len(done), "calls": sender.calls,
             "retries": sender.retries, "rate_limited": sender.rate_limited, "duration_s": round(duration, 3),
             "concurrency": options.concurrency, "rate": options.rate})
    summary["gate"] = {"rules": [r.text for r in options.fail_on], "met": rules_met(options.fail_on, summary)}
    return ReplayRun(summary=summary, results=ordered, out=options.out_path, sent=sent, skipped=len(done),
                     duration_s=duration)


def _taxonomy(policy: Any) -> dict[str, str]:
    from proxy.server._gateway import effective_taxonomy

    return effective_taxonomy(policy)
