"""How one record is placed in the corpus: its failure class, its stratum, its near-duplicate key,
and the capture mode its text may be used under.

A corpus over-represents failures, so every record gets the *worst* thing known about it, in this
order (first match wins):

1. `guard:<taxonomy>` — a failed guard on the served answer (the most severe one: critical, major,
   minor, other; ties by name). A guard result without a taxonomy uses the guard's name.
2. `score:<taxonomy or label>` — a failing score: any label other than the scorer's pass label and
   other than `judge_error` (a judge that gave no verdict says nothing about the answer). Human
   labels are preferred, then rules, then judges.
3. `outcome:<metric>` — the latest outcome of a boolean metric is bad by the metric's goal:
   0 for `maximize` (`task_success: false`), 1 for `minimize` (`user_corrected: true`) — the same
   rule the sampler uses to re-score a request after negative feedback (`negative_feedback`).
   Episode outcomes count for every request of the episode.
4. `ok`.

Without a policy the pass label is `pass`, a metric is boolean when every stored value of it is 0
or 1 (as in the reports), and its goal is `minimize` when its name reads like a bad event
(`corrected`, `escalated`, `complaint`, `reopened`, `abandoned`, `failed`, `error`), else `maximize`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from proxy._jsontypes import content_text
from proxy.records import capture_request, capture_response, redact_value

__all__ = [
    "CAPTURE_ORDER",
    "Classifier",
    "CorpusPolicy",
    "OK",
    "effective_capture",
    "failed_guards",
    "has_tools",
    "near_duplicate_key",
    "normalize_text",
    "stratum_key",
    "tighten_capture",
]

OK = "ok"
JUDGE_ERROR = "judge_error"
CAPTURE_ORDER = {"full": 0, "redacted": 1, "refs_only": 2}
_SEVERITY_ORDER = {"critical": 0, "major": 1, "minor": 2}
_KIND_ORDER = {"human": 0, "rule": 1, "llm_judge": 2}
_BAD_EVENT = re.compile(r"correct|escalat|complain|reopen|abandon|fail|error", re.IGNORECASE)
# Rank of a class: smaller is worse. (group, detail): guard 0 (detail: severity), score 1
# (detail: scorer kind), outcome 2, ok 3.
Rank = tuple[int, int]
OK_RANK: Rank = (3, 0)


@dataclasses.dataclass(frozen=True, slots=True)
class CorpusPolicy:
    """What a policy tells the corpus builder (all optional: without a policy, heuristics).

    `pass_labels`: scorer -> the label that counts as a pass; `metrics`: metric -> (type, goal);
    `capture`: route -> the route's capture mode *now* — a corpus never holds more of a record's
    text than that mode allows, even if the record was captured under a looser mode.
    """

    pass_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metrics: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    capture: Mapping[str, str] = dataclasses.field(default_factory=dict)
    version: str | None = None

    @classmethod
    def from_policy(cls, policy: Any) -> CorpusPolicy:
        """From a loaded `proxy.config.Policy` (duck-typed: routes, metrics, scorers, version)."""
        if policy is None:
            return cls()
        pass_labels: dict[str, str] = {}
        for name, scorer in policy.scorers.items():
            labels = list(getattr(scorer, "labels", None) or [])
            # as the reports count a pass: "pass" when it is a label, else the first label
            pass_labels[name] = "pass" if not labels or "pass" in labels else labels[0]
        metrics = {name: (m.type, m.goal) for name, m in policy.metrics.items()}
        capture = {name: route.capture for name, route in policy.routes.items()}
        version = getattr(policy, "version", None)
        return cls(pass_labels=pass_labels, metrics=metrics, capture=capture,
                   version=version if isinstance(version, str) and version else None)


class Classifier:
    """Failure classes of records, under a policy and what the store says about each metric."""

    def __init__(self, policy: CorpusPolicy, boolean_metrics: Iterable[str] = ()) -> None:
        """`boolean_metrics`: metrics whose stored values are all 0/1 (used for metrics the policy
        does not declare)."""
        self.policy = policy
        self._bad: dict[str, float | None] = {}
        observed = set(boolean_metrics)
        for name in observed | set(policy.metrics):
            self._bad[name] = self._bad_value(name, observed)

    def _bad_value(self, metric: str, observed: set[str]) -> float | None:
        declared = self.policy.metrics.get(metric)
        if declared is not None:
            kind, goal = declared
            if kind != "boolean":
                return None
            return 0.0 if goal == "maximize" else 1.0
        if metric not in observed:
            return None
        return 1.0 if _BAD_EVENT.search(metric) else 0.0

    def bad_value(self, metric: str) -> float | None:
        """The value of a boolean metric that is a failure (None: the metric has no bad value)."""
        return self._bad.get(metric)

    def pass_label(self, scorer: str) -> str:
        return self.policy.pass_labels.get(scorer, "pass")

    def failure_class(self, guards: Any, scores: Iterable[tuple[str, str, str, str | None]],
                      outcomes: Iterable[tuple[str, float]]) -> tuple[Rank, str]:
        """(rank, class) of a record: `guards` as stored, `scores` as (scorer, kind, label,
        taxonomy), `outcomes` as (metric, latest value) — the request's and its episode's."""
        worst: tuple[Rank, str] | None = None
        for name, severity in failed_guards(guards):
            candidate = ((0, _SEVERITY_ORDER.get(severity or "", 3)), f"guard:{name}")
            if worst is None or candidate < worst:
                worst = candidate
        if worst is not None:
            return worst
        for scorer, kind, label, taxonomy in scores:
            if label == JUDGE_ERROR or label == self.pass_label(scorer):
                continue
            candidate = ((1, _KIND_ORDER.get(kind, 3)), f"score:{taxonomy or label}")
            if worst is None or candidate < worst:
                worst = candidate
        if worst is not None:
            return worst
        negatives = sorted(m for m, v in outcomes if v is not None and v == self._bad.get(m))
        if negatives:
            return (2, 0), f"outcome:{negatives[0]}"
        return OK_RANK, OK


def failed_guards(guards: Any) -> list[tuple[str, str | None]]:
    """(taxonomy, severity) of each failed guard result; a result fails when `passed` is missing,
    null, false or 0 — the store's rule for its `guard_failures` column."""
    if not guards:
        return []
    if isinstance(guards, Mapping):
        guards = list(guards.values())
    out: list[tuple[str, str | None]] = []
    for g in guards if isinstance(guards, list) else [guards]:
        if not isinstance(g, Mapping):
            out.append(("unknown", None))
            continue
        passed = g.get("passed")
        if passed is None or (passed == 0 and not isinstance(passed, str)):
            name = g.get("taxonomy") or g.get("guard") or "unknown"
            severity = g.get("severity")
            out.append((str(name), severity if isinstance(severity, str) else None))
    return out


def has_tools(request: Mapping[str, Any] | None, params: Mapping[str, Any] | None) -> bool:
    """Whether the request offered tools (or legacy functions); works on every capture mode."""
    if isinstance(request, Mapping) and (request.get("tools") or request.get("functions")
                                         or request.get("tools_count")):
        return True
    return bool(isinstance(params, Mapping) and params.get("tool_names"))


def stratum_key(route: str, template_ref: str | None, tools: bool, failure_class: str) -> str:
    """`route|template_ref|tools|class`; a record without a template ref has `-` there."""
    return f"{route}|{template_ref or '-'}|{'tools' if tools else 'no_tools'}|{failure_class}"


# --- near duplicates ---------------------------------------------------------------------------

_NON_LETTERS = re.compile(r"[\W\d_]+")  # punctuation, digits, underscores and whitespace
_KEY_ROLES = frozenset({"system", "developer", "user"})


def normalize_text(text: str) -> str:
    """Lowercase, digits and punctuation removed, whitespace collapsed: "Order #123 — late!!" and
    "order   4711 late" both become "order late"."""
    return " ".join(_NON_LETTERS.sub(" ", text.lower()).split())


def _prompt_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(v for v in value if isinstance(v, str))
    return ""


def _tool_names(request: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for tool in [*(request.get("tools") or ()), *(request.get("functions") or ())]:
        if isinstance(tool, Mapping):
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, Mapping) else tool.get("name")
            if isinstance(name, str):
                names.append(name)
    return sorted(names)


def near_duplicate_key(request: Mapping[str, Any] | None) -> bytes | None:
    """A 16-byte hash of the normalized system/developer/user texts (or a completions prompt /
    embeddings input), plus the names of the tools offered — the same words asked with other
    tools exercise other behaviour (and sit in another stratum). None when the request has no
    such text (it is then only deduplicated by its exact request hash)."""
    if not isinstance(request, Mapping):
        return None
    parts: list[str] = []
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping) and message.get("role") in _KEY_ROLES:
                text = normalize_text(content_text(message.get("content")))
                if text:
                    parts.append(f"{message['role']}:{text}")
    for field in ("prompt", "input"):
        if field in request:
            text = normalize_text(_prompt_text(request[field]))
            if text:
                parts.append(f"{field}:{text}")
    if not parts:
        return None
    tools = _tool_names(request)
    if tools:
        parts.append("tools:" + ",".join(tools))
    return hashlib.blake2b("\n".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


# --- capture -----------------------------------------------------------------------------------


def effective_capture(stored: str | None, route_mode: str | None) -> str:
    """The stricter of the record's own capture mode and the route's current one."""
    mode = stored if stored is not None and stored in CAPTURE_ORDER else "refs_only"  # unknown: use nothing
    if route_mode is not None and route_mode in CAPTURE_ORDER and CAPTURE_ORDER[route_mode] > CAPTURE_ORDER[mode]:
        return route_mode
    return mode


def tighten_capture(row: dict[str, Any], mode: str) -> dict[str, Any]:
    """The stored row as `mode` (stricter than the row's own) would have kept it. Only ever removes
    or masks text: `full` -> `redacted` applies the recorder's own redaction to request, answer and
    guard details."""
    if mode == row.get("capture") or mode == "refs_only":
        return row
    out = dict(row)
    endpoint = row.get("endpoint") or "chat.completions"
    out["request"] = capture_request(row.get("request"), mode)
    out["response"] = capture_response(row.get("response"), mode, endpoint)
    out["guards"] = redact_value(row.get("guards") or [])
    out["capture"] = mode
    return out
