from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from proxy.config import PolicyError, PolicyIssue, parse_policy

def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line number of the nth line containing `needle`."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == nth:
                return number
    raise AssertionError(f"{needle!r} not in text")


def col_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based column of `needle` on the line line_of() finds."""
    return text.splitlines()[line_of(text, needle, nth) - 1].index(needle) + 1


@pytest.fixture
def issues_of(tmp_path: Path) -> Callable[..., list[PolicyIssue]]:
    """Parse dedented policy text (rubrics resolve in tmp_path); return the issues."""

    def run(text: str, env: Mapping[str, str] | None = None) -> list[PolicyIssue]:
        with pytest.raises(PolicyError) as info:
            parse_policy(textwrap.dedent(text), "bad.yaml", env or {}, base_dir=tmp_path)
        assert info.value.issues, "a PolicyError always has issues"
        return info.value.issues

    return run


@pytest.fixture
def rubric_dir(tmp_path: Path) -> Path:
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "r.md").write_text("Request {request}\nAnswer {answer}\n")
    return tmp_path


@pytest.fixture
def where() -> Callable[..., tuple[int, int]]:
    """(line, column), 1-based, of the nth occurrence of a needle in dedented text."""

    def run(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
        text = textwrap.dedent(text)
        return line_of(text, needle, nth), col_of(text, needle, nth)

    return run
