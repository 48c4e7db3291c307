"""Replay: a regression corpus (or one logged request) re-sent to a candidate model, checked with the
same guards and scorers as production, and compared item by item with a baseline.

    run = await run_replay(policy, ReplayOptions(corpus=Path("support.jsonl"), variant="candidate",
                                                 fail_on=tuple(parse_fail_on("new_critical,pass_rate_drop>2@0.05"))))
    print(render_summary(run.summary)); sys.exit(run.exit_code)

- `_body`: the body sent (the recorded request, the target model's name and pinned params over the
  original params; never streaming).
- `_send`, `_pace`: the gateway's provider adapters, `--rate`, 429 back-off shared by all workers,
  bounded retries; an item whose upstream keeps failing is an error item.
- `_checks`: the route's guard chain (as the gateway compiles it), rule scorers, LLM judges.
- `_model`, `_results`: per-item results, appended to a JSON lines file as they finish (resumable).
- `_summary`, `_gate`, `_render`, `_junit`: pass rates (Wilson), McNemar, regressions by class, new
  critical failures, latency/cost deltas, drift; `--fail-on` rules; text; JUnit XML.
- `_record`: `--record ID`, one logged request re-sent and shown side by side.
- `_cli`: `sluicegate replay` (exit codes 0 / 1 gate / 2 usage / 130 interrupted).
"""

from proxy.replay._body import STREAM_KEYS, exact_body, replay_body
from proxy.replay._checks import Checks, RouteChecks, excerpt
from proxy.replay._cli import cli_replay
from proxy.replay._gate import RULE_HELP, FailRule, parse_fail_on, rules_met
from proxy.replay._junit import junit_xml, write_junit
from proxy.replay._model import RECORDED, ItemResult, ScoreFact, Side
from proxy.replay._pace import Pacer
from proxy.replay._progress import ProgressBar, format_eta
from proxy.replay._record import RecordReplay, load_record, render_side_by_side, replay_record
from proxy.replay._render import one_line, render_summary
from proxy.replay._results import RESULTS_KIND, RESULTS_VERSION, ResultsFile, ResultsMismatch, default_out
from proxy.replay._run import (
    DEFAULT_CONCURRENCY,
    Adapters,
    CorpusScan,
    ReplayOptions,
    ReplayRun,
    ReplayUsageError,
    answer_side,
    recorded_side,
    run_replay,
    scan_corpus,
)
from proxy.replay._send import DEFAULT_MAX_RETRIES, Reply, Sender, error_class
from proxy.replay._summary import percentile, summarize

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "RECORDED",
    "RESULTS_KIND",
    "RESULTS_VERSION",
    "RULE_HELP",
    "STREAM_KEYS",
    "Adapters",
    "Checks",
    "CorpusScan",
    "FailRule",
    "ItemResult",
    "Pacer",
    "ProgressBar",
    "RecordReplay",
    "ReplayOptions",
    "ReplayRun",
    "ReplayUsageError",
    "Reply",
    "ResultsFile",
    "ResultsMismatch",
    "RouteChecks",
    "ScoreFact",
    "Sender",
    "Side",
    "answer_side",
    "cli_replay",
    "default_out",
    "error_class",
    "exact_body",
    "excerpt",
    "format_eta",
    "junit_xml",
    "load_record",
    "one_line",
    "parse_fail_on",
    "percentile",
    "recorded_side",
    "render_side_by_side",
    "render_summary",
    "replay_body",
    "replay_record",
    "rules_met",
    "run_replay",
    "scan_corpus",
    "summarize",
    "write_junit",
]
