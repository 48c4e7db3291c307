"""Interrupted replays resume where they stopped; upstream rate limits are honoured; failures are counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.mock_upstream import MockModel
from proxy.replay import ReplayOptions, ReplayUsageError, ResultsFile, parse_fail_on, run_replay

from .conftest import MOCK_MODELS, make_corpus, mock_app, record_id, sent_questions, transports


def item_lines(path: Path) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [line for line in lines if line.get("kind") == "item"]


async def test_an_interrupted_replay_resumes_without_re_sending_done_items(tmp_path: Path, policy: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"] * 14 + ["tools"] * 6)
    out = tmp_path / "results.jsonl"
    options = ReplayOptions(corpus=corpus, variant="candidate", concurrency=2, out=out)
    slow = mock_app(**{"gpt-cand": MOCK_MODELS["gpt-cand"].model_copy(update={"latency_ms": 40})})

    # first run: interrupted (cancelled, as Ctrl-C cancels `asyncio.run`'s task) once 6 items are written
    task = asyncio.create_task(run_replay(policy, options, transports=transports(slow)))
    async with asyncio.timeout(10):
        while not out.exists() or len(item_lines(out)) < 6:
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = {line["record_id"] for line in item_lines(out)}
    assert 6 <= len(done) < 20
    first_sent = sent_questions(slow, "gpt-cand")
    assert len(first_sent) < 20  # it really stopped midway

    # second run: only the items not in the file are sent, each once
    app = mock_app()
    run = await run_replay(policy, options, transports=transports(app))
    resent = sent_questions(app, "gpt-cand")
    assert sorted(record_id(i) for i in resent) == sorted({record_id(i) for i in range(20)} - done)
    assert run.skipped == len(done) and run.sent == 20 - len(done)
    lines = item_lines(out)
    assert sorted(line["record_id"] for line in lines) == [record_id(i) for i in range(20)]  # no item twice
    assert run.summary["results"] == 20 and run.summary["complete"]
    assert run.summary["paired"]["regressions"] == 6  # the summary covers both runs' items
    assert any(note.startswith("resumed: ") for note in run.summary["notes"])

    # a third run has nothing left to send
    again = mock_app()
    run = await run_replay(policy, options, transports=transports(again))
    assert again.state.mock.total == 0 and run.sent == 0 and run.summary["results"] == 20


async def test_a_line_cut_by_a_kill_is_dropped_and_its_item_sent_again(tmp_path: Path, policy: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"] * 4)
    out = tmp_path / "results.jsonl"
    options = ReplayOptions(corpus=corpus, variant="candidate", out=out)
    await run_replay(policy, options, transports=transports(mock_app()))
    data = out.read_bytes()
    out.write_bytes(data[:-40])  # the last item's line, cut short mid-write

    app = mock_app()
    run = await run_replay(policy, options, transports=transports(app))
    assert sent_questions(app, "gpt-cand") == [3]
    assert [line["record_id"] for line in item_lines(out)] == [record_id(i) for i in range(4)]
    assert run.summary["results"] == 4


async def test_a_results_file_of_another_comparison_is_refused(tmp_path: Path, policy: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"])
    out = tmp_path / "results.jsonl"
    await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate", out=out),
                     transports=transports(mock_app()))
    app = mock_app()
    with pytest.raises(ReplayUsageError, match="holds a replay with variant='candidate'"):
        await run_replay(policy, ReplayOptions(corpus=corpus, variant="clean", out=out), transports=transports(app))
    assert app.state.mock.total == 0


async def test_a_429_is_waited_out_as_the_upstream_asks_and_the_item_retried(tmp_path: Path, policy: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"] * 3)
    limited = MockModel(fault="http_429", fault_count=2, retry_after=0.2)
    app = mock_app(**{"gpt-clean": limited})
    loop = asyncio.get_running_loop()
    started = loop.time()
    run = await run_replay(policy, ReplayOptions(corpus=corpus, variant="clean", concurrency=1,
                                                 out=tmp_path / "r.jsonl"), transports=transports(app))
    assert loop.time() - started >= 0.4  # two waits of retry-after-ms = 200
    assert run.summary["errors"]["count"] == 0 and run.summary["pass_rate"]["candidate"]["passes"] == 3
    assert run.summary["run"]["rate_limited"] == 2 and run.summary["run"]["calls"] == 5
    assert any("rate-limited 2 call(s)" in note for note in run.summary["notes"])


async def test_an_upstream_that_keeps_failing_makes_error_items_that_count_and_gate(tmp_path: Path,
                                                                                     policy: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"] * 3)
    broken = mock_app(**{"gpt-clean": MockModel(fault="http_503")})
    out = tmp_path / "r.jsonl"
    options = ReplayOptions(corpus=corpus, variant="clean", out=out, max_retries=1, retry_base_s=0.01,
                            fail_on=tuple(parse_fail_on("errors>2")))
    run = await run_replay(policy, options, transports=transports(broken))
    s = run.summary
    assert s["errors"] == {"count": 3, "by_class": {"http_503": 3}}
    assert s["pass_rate"]["candidate"]["passes"] == 0 and s["regressions_by_class"] == {"http_503": 3}
    assert broken.state.mock.total == 6  # one retry each, then given up
    assert run.exit_code == 1 and s["gate"]["met"] == ["errors>2: 3 error items"]
    results = ResultsFile.open(out, {"variant": "clean", "baseline": "recorded", "judge": False})
    try:
        assert results.done() == set()
    finally:
        results.close()

    # error items are not "done": a re-run tries them again
    app = mock_app()
    run = await run_replay(policy, options, transports=transports(app))
    assert sorted(sent_questions(app, "gpt-clean")) == [0, 1, 2]
    assert run.summary["errors"]["count"] == 0 and run.exit_code == 0


@pytest.mark.e2e
def test_ctrl_c_on_the_real_command_keeps_what_is_done_and_the_rerun_sends_only_the_rest(
        tmp_path: Path) -> None:
    """`sluicegate replay` as a process, interrupted with SIGINT (Ctrl-C) midway, against the mock on 127.0.0.1."""
    import asyncio as aio
    import signal
    import subprocess
    import sys
    import time

    from proxy.mock_upstream import MockConfig, MockServer

    from .conftest import MOCK_MODELS, POLICY_YAML

    corpus = tmp_path / "c.jsonl"
    aio.run(make_corpus(corpus, ["plain"] * 12))
    slow = MOCK_MODELS["gpt-cand"].model_copy(update={"latency_ms": 150})
    with MockServer(MockConfig(models={**MOCK_MODELS, "gpt-cand": slow})) as mock:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY_YAML.replace("http://mock.test/v1", mock.base_url))
        out = tmp_path / "r.jsonl"
        argv = [sys.executable, "-m", "proxy", "replay", str(corpus), "--policy", str(policy), "--variant",
                "candidate", "--concurrency", "1", "--out", str(out)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while (not out.exists() or len(item_lines(out)) < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "run the same command again to resume" in err
        done = {line["record_id"] for line in item_lines(out)}
        assert 3 <= len(done) < 12
        state = mock.app.state.mock
        state.requests.clear()

        finished = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert finished.returncode == 0, finished.stderr
        resent = sent_questions(mock.app, "gpt-cand")
    assert sorted(record_id(i) for i in resent) == sorted({record_id(i) for i in range(12)} - done)
    assert sorted(line["record_id"] for line in item_lines(out)) == [record_id(i) for i in range(12)]


async def test_a_request_the_candidate_refuses_is_its_failure_not_an_error_item(tmp_path: Path, policy: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"] * 2)
    out = tmp_path / "r.jsonl"
    options = ReplayOptions(corpus=corpus, variant="clean", out=out, retry_base_s=0.01)
    refusing = mock_app(**{"gpt-clean": MockModel(fault="http_400")})
    run = await run_replay(policy, options, transports=transports(refusing))
    assert refusing.state.mock.total == 2  # a 400 is not retried
    assert run.summary["errors"]["count"] == 0 and run.summary["regressions_by_class"] == {"http_400": 2}
    again = mock_app()
    await run_replay(policy, options, transports=transports(again))
    assert again.state.mock.total == 0  # it is a result: a resume does not send it again
