"""`${VAR}` / `${VAR:-default}` interpolation, and `$${` for a literal `${`."""

from __future__ import annotations

import textwrap

import pytest

from proxy.config import parse_policy
from proxy.config._env import InterpolationError, interpolate


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("plain", {}, "plain"),
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-dflt}", {"A": ""}, "dflt"),  # as in the shell: empty counts as unset
        ("${A:-dflt}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("${A:-with spaces: and colons}", {}, "with spaces: and colons"),
        ("${A}${B:-2}", {"A": "1"}, "12"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("$${A} and ${A}", {"A": "x"}, "${A} and x"),
        ("cost: $5, $$", {}, "cost: $5, $$"),
        ("${A}", {"A": "${B}"}, "${B}"),  # values are not interpolated again
    ],
)
def test_interpolate(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env)[0] == expected


def test_interpolate_reports_use() -> None:
    assert interpolate("no refs", {}) == ("no refs", False)
    assert interpolate("$${X}", {}) == ("${X}", False)
    assert interpolate("${X:-1}", {}) == ("1", True)


def test_missing_variable_names_it_and_suggests_a_default() -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate("${OPENAI_API_KEY}", {})
    assert "OPENAI_API_KEY" in str(info.value)
    assert "${OPENAI_API_KEY:-}" in str(info.value)


@pytest.mark.parametrize("text", ["${", "${1A}", "${A", "${A:x}", "${ A }", "${}"])
def test_malformed_reference(text: str) -> None:
    with pytest.raises(InterpolationError, match="malformed"):
        interpolate(text, {"A": "x"})


POLICY = """\
providers:
  openai:
    kind: openai
    api_key: ${OPENAI_API_KEY}
    base_url: ${BASE_URL:-https://example.test/v1}
    max_connections: ${MAXCONN:-12}
    headers: {x-literal: "$${NOT_A_VAR}", x-team: "${TEAM:-core}"}
"""


def test_interpolation_in_policy() -> None:
    policy = parse_policy(POLICY, env={"OPENAI_API_KEY": "sk-x"})
    provider = policy.providers["openai"]
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-x"
    assert provider.base_url == "https://example.test/v1"
    assert provider.max_connections == 12  # the string "12" validated as an int
    assert provider.headers == {"x-literal": "${NOT_A_VAR}", "x-team": "core"}


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-environ")
    monkeypatch.setenv("MAXCONN", "7")
    provider = parse_policy(POLICY).providers["openai"]
    assert provider.max_connections == 7
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-from-environ"


def test_unset_variable_is_an_error_with_line_and_field(issues_of) -> None:
    (issue,) = issues_of(POLICY, env={})
    assert (issue.line, issue.column) == (4, 14)
    assert issue.path == "providers.openai.api_key"
    assert "OPENAI_API_KEY is not set" in issue.message
    assert "${OPENAI_API_KEY:-}" in issue.message
    assert str(issue).startswith("bad.yaml:4:14: providers.openai.api_key: environment variable OPENAI_API_KEY")


def test_empty_key_means_no_key() -> None:
    text = "providers: {openai: {kind: openai, api_key: '${OPENAI_API_KEY:-}'}}\n"
    policy = parse_policy(text, env={})
    assert policy.providers["openai"].api_key is None
    assert policy.secrets() == []


def test_unquoted_references_in_flow_style(where) -> None:
    text = textwrap.dedent(
        """\
        providers:
          a: {kind: openai, api_key: ${KEY}, base_url: ${URL:-http://h:1/v1}, read_timeout: ${T:-2.5}}
        """
    )
    policy = parse_policy(text, env={"KEY": "k-1"})
    provider = policy.providers["a"]
    assert provider.base_url == "http://h:1/v1"
    assert provider.read_timeout == 2.5
    assert policy.secrets() == ["k-1"]


def test_positions_survive_unquoted_references(issues_of, where) -> None:
    text = """\
    providers:
      a: {kind: openai, api_key: ${KEY:-}, base_url: ${URL:-x}, read_timeout: slow}
    """
    issues = issues_of(text)
    assert [(i.path, i.line, i.column) for i in issues] == [
        ("providers.a.base_url", *where(text, "${URL:-x}")),
        ("providers.a.read_timeout", *where(text, "slow")),
    ]
    assert "(got 'slow')" in issues[1].message


def test_keys_are_not_interpolated() -> None:
    text = "providers: {'${X}': {kind: openai}}\n"
    assert list(parse_policy(text, env={"X": "y"}).providers) == ["${X}"]


def test_literal_dollar_brace_in_flow_style() -> None:
    text = "providers: {a: {kind: openai, headers: {x-t: $${HOME}}}}\n"
    assert parse_policy(text, env={"HOME": "/root"}).providers["a"].headers == {"x-t": "${HOME}"}
