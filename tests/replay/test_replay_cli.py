"""`sluicegate replay` as CI runs it: exit codes, JUnit XML, and `--record ID`.

The command is parsed by the real parser and run by `cli_replay`, with the mock upstream plugged into the
provider's transport slot (as the server tests do), so nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import orjson
import xmlschema

from proxy.cli import build_parser
from proxy.config import parse_policy
from proxy.replay import cli_replay
from proxy.server import Settings, create_app

from .conftest import POLICY_YAML, TOOLS, make_corpus, mock_app, record_id, transports

XSD = Path(__file__).with_name("junit.xsd")


def replay(argv: list[str], app: Any | None = None) -> tuple[int, str, str]:
    args = build_parser().parse_args(["replay", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = cli_replay(args, transports=transports(app if app is not None else mock_app()), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def corpus_of(tmp_path: Path, kinds: list[str]) -> Path:
    path = tmp_path / "corpus.jsonl"
    asyncio.run(make_corpus(path, kinds))
    return path


def test_fail_on_sets_the_exit_code_both_ways(tmp_path: Path, policy_file: Path) -> None:
    corpus = corpus_of(tmp_path, ["plain"] * 4 + ["tools"] * 8)  # 8 regressions: a 67-point drop, exact p = 0.0078
    common = [str(corpus), "--policy", str(policy_file), "--variant", "candidate"]

    code, _, err = replay([*common, "--out", str(tmp_path / "a.jsonl"), "--fail-on",
                           "new_critical,regressions>8,pass_rate_drop>2@0.001,errors>0"])
    assert code == 0, err
    assert "gate passed" in err

    code, out, err = replay([*common, "--out", str(tmp_path / "b.jsonl"), "--fail-on", "pass_rate_drop>2@0.05"])
    assert code == 1
    assert "--fail-on pass_rate_drop>2@0.05: pass rate 33.3% vs 100.0%, a drop of 66.7 points" in err
    assert "gate: FAILED" in out

    code, _, err = replay([*common, "--out", str(tmp_path / "c.jsonl"), "--fail-on", "regressions>7"])
    assert code == 1 and "regressions>7: 8 regressions" in err

    # a critical class the baseline never had: the rule scorer no_secrets (taxonomy dangerous_advice, critical)
    plain = corpus_of(tmp_path / "plain", ["plain"] * 3)
    code, out, err = replay([str(plain), "--policy", str(policy_file), "--variant", "leaky", "--json",
                             "--out", str(tmp_path / "d.jsonl"), "--fail-on", "new_critical"])
    summary = orjson.loads(out)
    assert code == 1 and "new_critical: 3 item(s) with a new critical failure" in err
    assert summary["new_critical"]["count"] == 3 and summary["regressions_by_class"] == {"dangerous_advice": 3}
    assert summary["new_critical"]["items"][0]["classes"] == ["dangerous_advice"]


def test_usage_errors_exit_2_with_a_message_naming_what_to_fix(tmp_path: Path, policy_file: Path) -> None:
    corpus = corpus_of(tmp_path, ["plain"])
    app = mock_app()

    code, _, err = replay([str(corpus), "--policy", str(policy_file), "--variant", "nope"], app)
    assert code == 2 and "--variant nope: not a model of" in err and "candidate, clean, leaky, prod" in err

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "something else"}\n')
    code, _, err = replay([str(bad), "--policy", str(policy_file), "--variant", "candidate"], app)
    assert code == 2 and "not a sluicegate corpus" in err

    code, _, err = replay([str(tmp_path / "missing.jsonl"), "--policy", str(policy_file), "--variant", "candidate"],
                          app)
    assert code == 2 and "no such corpus file" in err and "sluicegate corpus build" in err

    code, _, err = replay([str(corpus), "--policy", str(policy_file), "--variant", "candidate",
                           "--fail-on", "pass_rate_drops>2"], app)
    assert code == 2 and "cannot read rule 'pass_rate_drops>2'" in err

    code, _, err = replay([str(corpus), "--policy", str(policy_file)], app)
    assert code == 2 and "--variant MODEL is required" in err
    assert app.state.mock.total == 0  # nothing was sent for any of them


def test_junit_xml_validates_against_the_ant_junit_schema(tmp_path: Path, policy_file: Path) -> None:
    kinds = ["plain"] * 5 + ["tools"] * 3
    corpus = corpus_of(tmp_path, kinds)
    junit = tmp_path / "replay.xml"
    code, _, err = replay([str(corpus), "--policy", str(policy_file), "--variant", "candidate",
                           "--junit", str(junit)])
    assert code == 0, err
    xmlschema.XMLSchema(str(XSD)).validate(str(junit))  # raises with the offending path when invalid
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("8", "3", "0")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {record_id(i) for i in range(8)}
    for i, kind in enumerate(kinds):
        case = cases[record_id(i)]
        failure = case.find("failure")
        if kind == "tools":
            assert case.get("classname") == "bot|-|tools|ok"
            assert failure is not None and failure.get("type") == "invented_tool_param"
            assert "invented_tool_param (major)" in (failure.get("message") or "")
        else:
            assert case.get("classname") == "bot|-|no_tools|ok" and failure is None


# --- --record ID ----------------------------------------------------------------------------------


async def _record_traffic(store: str, app: Any) -> tuple[str, str]:
    """One request through the gateway on each route; their request ids (bot: full capture, secret: refs_only)."""
    gateway = create_app(Settings(policy=parse_policy(POLICY_YAML.replace("split: {prod: 90, candidate: 10}",
                                                                          "model: prod")),
                                  store_url=store, transports=transports(app)))
    async with gateway.router.lifespan_context(gateway):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://localhost") as client:
            ids = []
            for route in ("bot", "secret"):
                r = await client.post("/v1/chat/completions", json={
                    "model": route, "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": TOOLS})
                assert r.status_code == 200
                ids.append(r.headers["x-sluicegate-request-id"])
            await gateway.state.gateway.recorder.flush()
    return ids[0], ids[1]


def test_record_id_prints_both_answers_side_by_side_with_their_guard_results(tmp_path: Path,
                                                                              policy_file: Path) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    app = mock_app()
    bot, secret = asyncio.run(_record_traffic(store, app))

    code, out, err = replay(["--record", bot, "--policy", str(policy_file), "--store", store,
                             "--variant", "candidate"], app)
    assert code == 0, err
    left, right = zip(*(line.split(" | ", 1) for line in out.splitlines() if " | " in line))
    left_text, right_text = "\n".join(left), "\n".join(right)
    assert "recorded (prod" in left_text and "replayed to candidate" in right_text
    assert 'get_weather({"city"' in left_text and "mock_invented_param" not in left_text  # prod's answer
    assert "mock_invented_param" in right_text  # the candidate's answer
    assert "guards (as recorded):" in left_text and "pass" in left_text
    assert "FAIL tool_params: invented_tool_param (major)" in right_text
    sent = app.state.mock.requests[-1]["body"]
    assert sent["model"] == "gpt-cand" and sent["tools"] == TOOLS and sent["temperature"] == 0

    # without --variant: the recorded body, exactly, to the recorded model
    code, out, _ = replay(["--record", bot, "--policy", str(policy_file), "--store", store, "--json"], app)
    assert code == 0
    data = orjson.loads(out)
    assert data["replayed"]["model"] == "gpt-prod" and data["replayed"]["guards"] == []
    assert app.state.mock.requests[-1]["body"] == app.state.mock.requests[0]["body"]

    code, _, err = replay(["--record", secret, "--policy", str(policy_file), "--store", store], app)
    assert code == 2 and "refs_only" in err and "cannot be replayed" in err
