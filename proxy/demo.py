"""`sluicegate demo`: the whole loop on one machine, no keys, no services.

A mock upstream plays two models whose task success and tool-call defect rates are known (and
seeded); the gateway serves `policies/demo.yaml` in front of it; a few thousand simulated users
work through multi-call episodes; their apps report whether each task succeeded; the report must
recover the known rates within their intervals and name the better variant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import httpx
import uvicorn

from proxy.config import parse_policy
from proxy.mock_upstream import MockConfig, MockModel
from proxy.mock_upstream import create_app as create_mock
from proxy.server import QuietServer, Settings, create_app

__all__ = ["Truth", "TRUTH", "run_demo"]

POLICY_PATH = Path(__file__).resolve().parents[1] / "policies" / "demo.yaml"
ROUTE = "support-bot"
TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order by id", "strict": True,
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                   "required": ["order_id"], "additionalProperties": False}}}]


@dataclasses.dataclass(frozen=True)
class Truth:
    """What the simulation knows and the report must find again."""

    task_success: float  # probability that a user's task succeeds with this variant
    tool_fault_rate: float  # share of answers with an invented tool parameter


TRUTH = {"prod": Truth(task_success=0.60, tool_fault_rate=0.02),
         "candidate": Truth(task_success=0.75, tool_fault_rate=0.10)}
MODELS = {"prod": "gpt-mock-prod", "candidate": "gpt-mock-candidate"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


JUDGE_ERROR_RATE = 0.03  # the mock judge's known error rate (calibration must find it)


# 60 different questions (a corpus of demo traffic keeps one item per distinct question)
QUESTIONS = ("where is {}?", "can you help me with {}?", "I have a problem with {}.", "what is the status of {}?",
             "how do I change {}?", "who can I talk to about {}?")
TOPICS = ("my order", "my refund", "my invoice", "the delivery date", "my password", "my subscription",
          "the shipping address", "a damaged parcel", "my loyalty points", "the return label")


def _mock_config() -> MockConfig:
    models = {MODELS[name]: MockModel(served_model=f"{MODELS[name]}-2026-11-01", tool_call_fault="invented_param",
                                      tool_call_fault_rate=truth.tool_fault_rate)
              for name, truth in TRUTH.items()}
    models["mock-judge"] = MockModel(judge_error_rate=JUDGE_ERROR_RATE)
    return MockConfig(models=models)


class _Progress:
    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out, self.done, self.requests = total, out, 0, 0
        self.started = time.perf_counter()
        self._next = 0.0

    def tick(self, requests: int) -> None:
        self.done += 1
        self.requests += requests
        share = self.done / self.total
        if share >= self._next or self.done == self.total:
            elapsed = time.perf_counter() - self.started
            print(f"  users {self.done:>5}/{self.total}  requests {self.requests:>6}  "
                  f"{self.requests / max(elapsed, 1e-9):6.0f} req/s  {elapsed:5.1f} s", file=self.out, flush=True)
            self._next = share + 0.1


async def _user(http: aiohttp.ClientSession, rng: random.Random, user: int, progress: _Progress,
                outcomes: list[dict[str, Any]], served: dict[str, int]) -> None:
    episode = f"demo-episode-{user}"
    turns = rng.randint(1, 3)
    variant = ""
    for turn in range(turns):
        # the ticket number makes each request unique (the mock's fault draws hash the text); a corpus
        # ignores digits when it looks for near-duplicates, so it keeps one item per question
        question = rng.choice(QUESTIONS).format(rng.choice(TOPICS)) + f" (ticket {user}-{turn})"
        body = {"model": ROUTE, "tools": TOOLS, "user": f"demo-user-{user}",
                "messages": [{"role": "user", "content": question}]}
        async with http.post("/v1/chat/completions", json=body, headers={"x-sluicegate-episode": episode}) as reply:
            await reply.read()
            if reply.status != 200:
                raise RuntimeError(f"demo request failed with {reply.status}: {await reply.text()}")
            variant = reply.headers["x-sluicegate-variant"]
            if turn == turns - 1:  # about one user in ten corrects the last answer
                outcomes.append({"request_id": reply.headers["x-sluicegate-request-id"],
                                 "metric": "user_corrected", "value": rng.random() < 0.1})
    served[variant] = served.get(variant, 0) + 1
    success = rng.random() < TRUTH[variant].task_success
    outcomes.append({"episode_id": episode, "metric": "task_success", "value": success,
                     "idempotency_key": f"{episode}:task_success", "source": "demo"})
    progress.tick(turns)


async def _drive(url: str, users: int, seed: int, out: TextIO) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rng = random.Random(seed)
    outcomes: list[dict[str, Any]] = []
    served: dict[str, int] = {}
    progress = _Progress(users, out)
    queue = list(range(users))
    user_rngs = {u: random.Random(rng.random()) for u in queue}

    async with aiohttp.ClientSession(base_url=url, connector=aiohttp.TCPConnector(limit=32)) as http:
        async def worker() -> None:
            while queue:
                user = queue.pop(0)
                await _user(http, user_rngs[user], user, progress, outcomes, served)

        await asyncio.gather(*(worker() for _ in range(32)))
        for start in range(0, len(outcomes), 500):
            async with http.post("/v1/feedback/batch", json=outcomes[start:start + 500]) as reply:
                result = await reply.json()
                if result.get("rejected"):
                    raise RuntimeError(f"demo feedback rejected: {result['errors'][:3]}")
    return outcomes, served


async def run_demo(users: int = 3000, seed: int = 7, store: str | None = None, out: TextIO = sys.stderr
                   ) -> dict[str, Any]:
    """Runs the loop and returns the report (JSON-able) with a `demo` section: truth vs found."""
    from proxy.reports import build_report, policy_sections, render_text
    from proxy.scoring._calibration import render_calibration
    from proxy.scoring._trust import judge_calibrations

    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-demo-"))
    store_url = store or f"sqlite:///{workdir / 'demo.db'}"
    mock_port, gateway_port = _free_port(), _free_port()
    policy = parse_policy(POLICY_PATH.read_text(), source=str(POLICY_PATH),
                          env={"SLUICEGATE_DEMO_UPSTREAM": f"http://127.0.0.1:{mock_port}/v1"})
    app = create_app(Settings(policy=policy, store_url=store_url, spill_path=workdir / "demo.spill.jsonl"))
    servers = [QuietServer(uvicorn.Config(create_mock(_mock_config()), host="127.0.0.1", port=mock_port,
                                          log_level="warning", lifespan="off", access_log=False)),
               QuietServer(uvicorn.Config(app, host="127.0.0.1", port=gateway_port, log_level="warning",
                                          access_log=False))]
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                raise RuntimeError("the demo servers did not start (ports taken?)")
            await asyncio.sleep(0.02)
        print(f"demo: {users} simulated users against {ROUTE} (store {store_url})", file=out, flush=True)
        _, served = await _drive(f"http://127.0.0.1:{gateway_port}", users, seed, out)
        gateway = app.state.gateway
        await gateway.recorder.flush()
        report = await build_report(gateway.store, route=ROUTE, metrics=dict(policy.metrics),
                                    controls={ROUTE: policy.routes[ROUTE].control},
                                    weights={ROUTE: dict(policy.routes[ROUTE].split or {})})
        labelled = await _judge_and_review(f"http://127.0.0.1:{gateway_port}", gateway, out)
        report.update(await policy_sections(gateway.store, policy, route=ROUTE))
        calibration = (await judge_calibrations(gateway.store, policy)).get("helpfulness")
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    report["demo"] = {"truth": {k: dataclasses.asdict(v) for k, v in TRUTH.items()}, "episodes_per_variant": served,
                      "store": store_url, **recovery(report)}
    report["demo"]["judge"] = judge_check(calibration, labelled)
    print(render_text(report), file=out, flush=True)
    if not isinstance(calibration, (str, type(None))):
        print(render_calibration(calibration), file=out, flush=True)
    print(_summary(report["demo"]), file=out, flush=True)
    return report


async def _judge_and_review(url: str, gateway: Any, out: TextIO) -> int:
    """Wait for the background judge to finish, then play the human reviewers: label every queued
    item with its true label (a defect the mock put in the answer means `fail`)."""
    from proxy.mock_upstream._judge import true_label

    scoring = gateway.scoring
    while True:  # the judge runs in the background; the demo waits for it before reporting
        queue = scoring.queue.stats()
        if not queue["ready"] and not queue["in_flight"]:
            break
        await asyncio.sleep(0.05)
    await gateway.recorder.flush()
    labelled = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while True:
            r = await client.get("/v1/review/next")
            if r.status_code == 204:
                break
            item = r.json()
            answer = item["record"]["answer"] if item.get("record") else {}
            text = (answer or {}).get("text") or ""
            text += " ".join(f"{c.get('name')}({c.get('arguments')})" for c in (answer or {}).get("tool_calls") or [])
            bad, taxonomy = true_label(text)
            r = await client.post(f"/v1/review/{item['id']}", json={
                "label": "fail" if bad else "pass", "taxonomy": taxonomy, "reviewer": "demo-reviewer"})
            r.raise_for_status()
            labelled += 1
    stats = scoring.stats()
    print(f"demo: judge scored {stats['scored']} sampled answers ({stats['sampled']} sampled); "
          f"simulated reviewers labelled {labelled}", file=out, flush=True)
    return labelled


JUDGE_CHECK_CONFIDENCE = 0.99


def judge_check(calibration: Any, labelled: int) -> dict[str, Any]:
    """Did calibration find the mock judge's known error rate (1 - agreement) within its interval?"""
    from proxy.reports import wilson_interval

    if calibration is None or isinstance(calibration, str) or not calibration.n_labels:
        return {"labelled": labelled, "calibrated": False, "why": calibration or "no human labels"}
    n = calibration.n_labels
    errors = round((1 - calibration.agreement) * n)
    # 99%, not 95%: which items get labelled depends on timing, and with ~140-165 labels at a 3% rate a
    # 95% Wilson interval misses the true rate in 3.5-4.8% of runs (binomial, exact); 99% in 1.0-1.6%
    low, high = wilson_interval(errors, n, confidence=JUDGE_CHECK_CONFIDENCE)
    return {"labelled": labelled, "n_labels": n, "calibrated": True, "true_error_rate": JUDGE_ERROR_RATE,
            "found_error_rate": errors / n, "interval": [low, high],
            "within": low <= JUDGE_ERROR_RATE <= high, "kappa": calibration.kappa, "trusted": calibration.trusted}


def recovery(report: dict[str, Any]) -> dict[str, Any]:
    """Did the report find the truth again? Each known rate inside its 95% interval, and the
    comparison on task success naming the variant that really is better."""
    from proxy.reports import wilson_interval

    route = next(r for r in report["routes"] if r["route"] == ROUTE)
    found: dict[str, Any] = {}
    for arm in route["arms"]:
        truth = TRUTH[arm["variant"]]
        success = arm["metrics"]["task_success"]
        guards = arm["guards"]
        guard_interval = wilson_interval(guards["requests_failed"], arm["requests"])
        found[arm["variant"]] = {
            "task_success": {"true": truth.task_success, "found": success["rate"], "interval": success["interval"],
                             "within": success["interval"][0] <= truth.task_success <= success["interval"][1]},
            "guard_failure_rate": {"true": truth.tool_fault_rate, "found": guards["rate"],
                                   "interval": list(guard_interval),
                                   "within": guard_interval[0] <= truth.tool_fault_rate <= guard_interval[1]},
        }
    comparison = next(c for c in route["comparisons"] if c["metric"] == "task_success")
    truly_better = max(TRUTH, key=lambda name: TRUTH[name].task_success)
    named = {"better": comparison["candidate"], "worse": comparison["control"]}.get(comparison["code"])
    within = all(v["within"] for arm in found.values() for v in arm.values())
    return {"found": found, "verdict": comparison["verdict"], "named_better": named, "truly_better": truly_better,
            "recovered": within and named == truly_better}


def _summary(demo: dict[str, Any]) -> str:
    lines = ["", "demo check (true value vs what the report found, 95% interval):"]
    for variant, figures in demo["found"].items():
        for name, f in figures.items():
            mark = "ok" if f["within"] else "MISSED"
            lines.append(f"  {variant:<10} {name:<19} true {f['true']:.3f}  found {f['found']:.3f}  "
                         f"[{f['interval'][0]:.3f}, {f['interval'][1]:.3f}]  {mark}")
    lines.append(f"  verdict on task_success: {demo['verdict']}; truly better: {demo['truly_better']}")
    judge = demo.get("judge") or {}
    if judge.get("calibrated"):
        lines.append(f"  judge error rate (vs {judge['n_labels']} random human labels): true {judge['true_error_rate']:.3f}  "
                     f"found {judge['found_error_rate']:.3f}  [{judge['interval'][0]:.3f}, {judge['interval'][1]:.3f}] "
                     f"({JUDGE_CHECK_CONFIDENCE:.0%})"
                     f"  {'ok' if judge['within'] else 'MISSED'}; kappa {judge['kappa']:.2f}, "
                     f"{'trusted' if judge['trusted'] else 'not trusted'}")
    lines.append("  RECOVERED: the report found the known rates and the better variant" if demo["recovered"]
                 else "  NOT RECOVERED: see above")
    return "\n".join(lines)
