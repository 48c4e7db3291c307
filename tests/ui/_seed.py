"""A store with something on every dashboard page, written through the store's own write path.

Two routes over the last 48 hours: `support-bot`, a canary (prod -> cand at 25%, one controller
decision already logged) with a shadow model, fallbacks, guard failures of every severity, a
served-model drift, judge scores (an untrusted judge) and a review queue with two reviewers;
`faq`, a 50/50 split whose traffic is deliberately 60/40 (a sample-ratio alert). Outcomes:
task_success per request. The canary's `min_samples` is far above the seeded outcomes, so the
controller running inside the gateway only ever holds (holds are not stored): the tests alone
write decisions.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

from proxy.canary import ArmFigures, CanaryFigures, decide
from proxy.canary._state import decision_rows
from proxy.config._models import Canary
from proxy.keys import hash_key
from proxy.records import Outcome, Record
from proxy.scoring import Score, score_row

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "sk-ui-admin-0123456789abcdef"
CALLER_KEY = "sk-ui-caller-abcdef0123456789"
HOURS = 48

POLICY = f"""
providers:
  mock: {{kind: openai, base_url: "{{mock}}"}}
models:
  prod: {{provider: mock, model: gpt-mock-prod, family: openai}}
  cand: {{provider: mock, model: gpt-mock-candidate, family: openai}}
  next: {{provider: mock, model: gpt-mock-next, family: openai}}
  judge: {{provider: mock, model: gpt-mock-judge, family: openai}}
metrics:
  task_success: {{type: boolean, level: inference, goal: maximize}}
routes:
  support-bot:
    canary: {{baseline: prod, candidate: cand, stages: [5, 25, 50, 100], min_samples: 100000,
             success_metric: task_success, evaluate_every_s: 3600}}
    shadow: {{model: next, rate: 0.1}}
    fallbacks: [prod]
    capture: full
    sampling: {{default: 0.0}}
    scorers: [helpfulness, review]
  faq:
    split: {{prod: 50, cand: 50}}
    capture: full
    sampling: {{default: 0.0}}
scorers:
  helpfulness: {{kind: llm_judge, model: judge, rubric: rubric.md}}
  review: {{kind: human, rate: 0.0}}
budgets:
  judge_usd_per_day: 20
auth:
  keys:
    app: {{hash: "{hash_key(CALLER_KEY)}"}}
  admin_keys: ["{hash_key(ADMIN_KEY)}"]
"""

CLASSES = [("invented_tool_param", "major"), ("schema_violation", "major"), ("verbose", "minor"),
           ("forbidden_content", "critical")]
QUESTIONS = ["Where is my order?", "How do I reset my password?", "Can I get a refund?", "Cancel my plan, please."]


def write_policy(directory: Path, mock_base_url: str = "http://mock.test/v1") -> Path:
    """The policy file (and its judge's rubric) in `directory`."""
    shutil.copy(ROOT / "policies" / "rubrics" / "helpfulness.md", directory / "rubric.md")
    path = directory / "policy.yaml"
    path.write_text(POLICY.replace("{mock}", mock_base_url))
    return path


def _record(rng: random.Random, i: int, route: str, variant: str, t: float, *, attempt: int = 1,
            reason: str = "primary", served: bool = True, request_id: str | None = None,
            episode: str | None = None, guards: list[dict[str, Any]] | None = None,
            fingerprint: str = "fp_a", outcome: str = "ok") -> Record:
    question = QUESTIONS[i % len(QUESTIONS)]
    model = {"prod": "gpt-mock-prod", "cand": "gpt-mock-candidate", "next": "gpt-mock-next"}[variant]
    answer = f"({variant}) Here is what I found about: {question.lower()}"
    latency = rng.uniform(80, 400) * (1.3 if variant == "cand" else 1.0)
    return Record(
        id=f"att_{route}_{i:05d}_{attempt}", request_id=request_id or f"req_{route}_{i:05d}", attempt=attempt,
        attempt_reason=reason, endpoint="chat.completions", route=route, variant=variant, provider="mock",
        model_requested=model, started_at=t, served=served, episode_id=episode or f"ep_{route}_{i // 3:04d}",
        correlation_id=f"corr-{i:05d}", user_id=f"user-{i % 37}", capture="full", experiment=route,
        request={"model": model, "messages": [{"role": "system", "content": "You are a support bot."},
                                              {"role": "user", "content": question}]},
        response={"id": f"chatcmpl-{i}", "object": "chat.completion", "model": model, "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}]}
        if served else None,
        model_served=f"{model}-2024" if served else None, system_fingerprint=fingerprint if served else None,
        finish_reason="stop" if served else None, usage={"prompt_tokens": 40, "completion_tokens": 20},
        cost_usd=0.0002 if variant == "prod" else 0.0001, latency_ms=latency, ttft_ms=latency / 3,
        status=200 if served else 502, outcome=outcome, guards=guards or [], policy_version="v-test",
        error=None if served else "upstream mock answered 502")


def _guard(rng: random.Random, variant: str) -> list[dict[str, Any]]:
    chance = 0.06 if variant == "prod" else 0.12
    if rng.random() >= chance:
        return []
    cls, severity = rng.choice(CLASSES[:3]) if variant == "prod" else rng.choice(CLASSES)
    return [{"guard": "tool_params" if "tool" in cls else "json_schema" if "schema" in cls else "max_chars",
             "passed": False, "taxonomy": cls, "severity": severity, "detail": f"seeded {cls}", "pointer": "/x"}]


async def seed(store: Any, *, now: float | None = None, seed_value: int = 7) -> dict[str, Any]:
    """Write the records, outcomes, scores, review entries and canary decisions; return ids worth
    following (a record with fallback and shadow attempts, a review item, …)."""
    rng = random.Random(seed_value)
    end = time.time() if now is None else now
    start = end - HOURS * 3600
    rows: list[Any] = []
    notable: dict[str, Any] = {"review_ids": []}
    i = 0
    for route, plan in (("support-bot", [("prod", 300), ("cand", 100)]), ("faq", [("prod", 300), ("cand", 200)])):
        for variant, n in plan:
            for k in range(n):
                i += 1
                t = start + (HOURS * 3600 - 60) * (k + 0.5) / n
                fingerprint = "fp_b" if variant == "cand" and k > n * 0.7 else "fp_a"
                guards = _guard(rng, variant)
                fallback = route == "support-bot" and variant == "prod" and k % 40 == 7
                first = _record(rng, i, route, variant, t, guards=guards, fingerprint=fingerprint,
                                served=not fallback, outcome="upstream_error" if fallback else "ok",
                                episode=f"ep_{route}_{variant}_{k // 3:04d}")
                rows.append(first)
                if fallback:
                    rows.append(_record(rng, i, route, "prod", t + 0.4, attempt=2, reason="fallback",
                                        request_id=first.request_id, episode=first.episode_id))
                    notable.setdefault("fallback_request", first.request_id)
                if route == "support-bot" and k % 10 == 3:  # the shadow copy: attempt 0, never served
                    rows.append(_record(rng, i, route, "next", t + 0.5, attempt=0, reason="shadow",
                                        request_id=first.request_id, episode=first.episode_id))
                    rows[-1].served = False
                    notable.setdefault("shadow_request", first.request_id)
                if rng.random() < 0.7:
                    p = {"prod": 0.62, "cand": 0.70}[variant]
                    rows.append(Outcome(id=f"out_{i}", metric="task_success", value=float(rng.random() < p),
                                        level="inference", received_at=t + 600, request_id=first.request_id))
                if route == "support-bot" and k % 5 == 0:
                    label = "pass" if rng.random() < 0.8 else "fail"
                    rows.append(score_row(Score(record_id=first.id, request_id=first.request_id, scorer="helpfulness",
                                                kind="llm_judge", label=label, score=1.0 if label == "pass" else 0.0,
                                                confidence=0.9, reason="seeded verdict", cost_usd=0.0004,
                                                weight=1.0, created_at=t + 5)))
                if route == "support-bot" and k % 25 == 1:
                    entry = f"{first.id}:review"
                    rows.append({"row": "review", "id": entry, "record_id": first.id, "request_id": first.request_id,
                                 "route": route, "variant": variant, "scorer": "review", "reason": "rate",
                                 "entered_at": t + 10})
                    notable["review_ids"].append(entry)
    # two reviewers have labelled the oldest entries
    for j, entry in enumerate(notable["review_ids"][:5]):
        record_id = entry.rsplit(":", 1)[0]
        request_id = "req_" + record_id[len("att_"):].rsplit("_", 1)[0]
        score = Score(record_id=record_id, request_id=request_id, scorer="review", kind="human",
                      label="pass" if j % 2 == 0 else "fail", score=None, weight=1.0, created_at=end - 3600 * (5 - j))
        rows.append({**score_row(score), "reviewer": "ana" if j < 3 else "ben", "review_reason": "rate"})
    await store.write_records(rows)
    # the canary's history: one controller promotion 5% -> 25%, decided by the real rules on seeded figures
    canary = Canary(baseline="prod", candidate="cand", stages=[5, 25, 50, 100], min_samples=60,
                    success_metric="task_success")
    decision = decide(canary, 5.0, CanaryFigures(
        baseline=ArmFigures(successes=1200, outcomes=2000, requests=2100, guard_failures=40, latency_p95_ms=380.0),
        candidate=ArmFigures(successes=450, outcomes=600, requests=640, guard_failures=30, latency_p95_ms=470.0)))
    assert decision.action == "promote", decision.reason
    await store.write_records(decision_rows("support-bot", action=decision.action, from_stage=5.0,
                                            to_stage=decision.to_stage, status="running", rule=decision.rule,
                                            reason=decision.reason, figures=decision.figures, now=end - 7200))
    notable["record_count"] = sum(1 for r in rows if isinstance(r, Record))
    return notable
