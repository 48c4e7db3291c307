"""The benchmark harness does not rot: `python -m bench --quick` runs end to end (a few seconds).

Not a performance test — no figure is asserted, only that the run completes, exits 0 and writes
the JSON with the expected keys and nonzero request counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_bench_quick_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), "--retry-wait", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# Sluicegate benchmark")
    for key in ("machine", "pinning", "commands", "systems", "scenarios", "comparison", "summary", "notes"):
        assert key in report, key
    assert report["quick"] is True
    assert report["machine"]["python"] and report["machine"]["cores"] >= 1
    assert report["systems"]["floor"]["status"] == "ok"
    assert report["systems"]["bare-stack"]["status"] == "ok"
    assert report["systems"]["sluicegate-minimal"]["status"] == "ok"
    assert report["systems"]["sluicegate-minimal"]["info"]["store"] == "none://"
    assert "litellm" not in report["systems"]
    assert set(report["scenarios"]) == {"open-50", "max-c8", "stream"}
    for name, scenario in report["scenarios"].items():
        for system in ("floor", "bare-stack", "sluicegate-minimal"):
            result = scenario["results"][system]
            assert result["requests"] > 0 and result["ok"] > 0, (name, system, result)
            assert result["latency_ms"]["p50"] is not None
            assert name in report["commands"]["load"] and system in report["commands"]["load"][name]
        figures = report["comparison"][name]["sluicegate-minimal"]
        assert set(figures) == {"figures", "x_floor", "x_litellm"}
    assert report["scenarios"]["stream"]["results"]["floor"]["gap_ms"]["p50"] is not None
    assert report["scenarios"]["max-c8"]["results"]["sluicegate-minimal"]["rss_mb"] > 0
    assert report["scenarios"]["stream"]["results"]["bare-stack"]["gap_ms"]["p50"] is not None
    recorder = report["recorder"]
    assert "error" not in recorder, recorder
    assert recorder["sustained"]["written"] == recorder["sustained"]["submitted"] > 0
    assert recorder["maximum"]["written"] > 0 and recorder["baseline_loop_lag_ms"]["p99"] is not None
    assert any(row["target"].startswith("recorder") for row in report["summary"])


def test_the_benchmarks_policies_pass_check() -> None:
    """The full run's systems start only if `sluicegate check` takes their policies: catch it here,
    not ten minutes into a benchmark."""
    from bench.systems import FULL_POLICY, GUARDS, MINIMAL_POLICY
    from proxy.config import parse_policy

    for text in (FULL_POLICY.format(port=9, guards=GUARDS), FULL_POLICY.format(port=9, guards=""),
                 MINIMAL_POLICY.format(port=9)):
        policy = parse_policy(text)
        assert policy.routes["bench"]
    assert parse_policy(FULL_POLICY.format(port=9, guards=GUARDS)).routes["bench"].scorers == ["no_secrets"]
