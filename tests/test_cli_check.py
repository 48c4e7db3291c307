"""`sluicegate check`: exit 0 with a summary, or exit 1 naming file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """\
providers:
  mock: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
  candidate: {provider: mock, model: gpt-mock-candidate}
routes:
  support-bot:
    split: {prod: 90, candidate: 10}
"""


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    return subprocess.run([sys.executable, "-m", "proxy", "check", str(policy)], capture_output=True, text=True,
                          timeout=30)


def test_good_policy_exits_0_with_one_line_summary(tmp_path):
    result = check(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert "support-bot" in result.stdout


@pytest.mark.parametrize("bad,line,fragment", [
    (GOOD.replace("    split:", "    splitt:"), 8, "splitt"),
    (GOOD.replace("candidate: 10}", "candidate: 5}"), 8, "100"),
    (GOOD.replace("{prod: 90, candidate: 10}", "{prod: 90, candiate: 10}"), 8, "candiate"),
])
def test_bad_policy_exits_1_naming_file_line_and_field(tmp_path, bad, line, fragment):
    result = check(tmp_path, bad)
    assert result.returncode == 1
    assert f"policy.yaml:{line}" in result.stderr
    assert fragment in result.stderr
    assert "routes.support-bot" in result.stderr


def test_shipped_policies_pass_check():
    root = Path(__file__).parents[1] / "policies"
    for policy in sorted(root.glob("*.yaml")):
        result = subprocess.run([sys.executable, "-m", "proxy", "check", str(policy)], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, f"{policy}: {result.stderr}"


@pytest.mark.parametrize("guards,fragment", [
    ("[tool_params, max_char]", "unknown guard 'max_char'"),
    ("[{max_chars: many}]", "max_chars"),
    ("[{regex_deny: {patterns: ['x'], taxonomy: leaked_secret}}]", "taxonomy class 'leaked_secret'"),
])
def test_policy_naming_an_unknown_guard_or_class_is_refused(tmp_path, guards, fragment):
    result = check(tmp_path, GOOD + f"    guards: {guards}\n")
    assert result.returncode == 1
    assert "policy.yaml:9" in result.stderr and "routes.support-bot.guards[" in result.stderr
    assert fragment in result.stderr


def test_custom_class_declared_in_taxonomy_is_accepted(tmp_path):
    text = GOOD + "    guards: [{regex_deny: {patterns: ['x'], taxonomy: leaked_secret}}]\n" \
        "taxonomy:\n  leaked_secret: {severity: critical}\n"
    assert check(tmp_path, text).returncode == 0
