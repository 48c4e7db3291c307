"""Policy loading under arbitrary YAML: `parse_policy` returns a Policy or raises `PolicyError` whose
issues each name a line and a key path — never any other exception.

Inputs: mutations of policies/example.yaml (keys dropped, values of the wrong type, unknown keys,
references to names that do not exist), line-level edits of its text, arbitrary YAML documents,
and arbitrary text.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import Policy, PolicyError, parse_policy
from proxy.config._locate import compose
from tests.fuzz._gateway import fuzz

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SOURCE = "fuzz.yaml"
EXAMPLE_TEXT = (POLICIES / "example.yaml").read_text()
EXAMPLE = compose(EXAMPLE_TEXT, SOURCE, {}).data  # (unquoted ${...} in flow style: not plain YAML)
# top-level problems have no key path to name (the document itself is wrong)
_WHOLE_DOCUMENT = ("YAML syntax error", "unreadable YAML", "YAML error", "a policy must be a mapping",
                   "document too large")


def parse(text: str, env: dict[str, str] | None = None) -> Policy | PolicyError:
    """parse_policy's result or its PolicyError; any other exception fails the test."""
    try:
        return parse_policy(text, SOURCE, env={} if env is None else env, base_dir=POLICIES)
    except PolicyError as exc:
        return exc


def assert_well_formed(result: Policy | PolicyError, text: str, *, needs_path: bool) -> None:
    if isinstance(result, Policy):
        return
    assert result.issues, "a PolicyError with no issue"
    message = str(result)
    assert message.strip()
    for issue in result.issues:
        assert issue.file == SOURCE
        assert issue.message.strip(), issue
        whole = issue.message.startswith(_WHOLE_DOCUMENT)
        if text.strip() and not whole:
            assert issue.line is not None and issue.line >= 1, f"issue without a line: {issue}"
            assert f"{SOURCE}:{issue.line}" in message and issue.path in message
        if needs_path and not whole:  # a mapping whose keys are all names: every issue has a key path
            assert issue.path, f"issue without a key path: {issue}"


# --------------------------------------------------------------------------- strategies

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "\x00", "${X}", "${X:-d}", "$${", "${", "prod", "candidate", "judge", "openai", "task_success",
     "verbose", "header:x-sluicegate-episode", "metadata:session", "body:user", "nope:thing", "-1", "1e999"])
SCALAR = (st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats(allow_nan=True) | TEXT)
ANY = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                   max_leaves=8)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


EXAMPLE_PATHS = _paths(EXAMPLE)
NAMES = ["prod", "candidate", "judge", "openai", "anthropic", "local", "task_success", "helpfulness"]


def _mutate(data: Any, kind: str, path: tuple[Any, ...], value: Any, key: Any) -> Any:
    data = copy.deepcopy(data)
    if not path:
        return value if kind == "replace" else data
    parent = _get(data, path[:-1])
    last = path[-1]
    if kind == "drop":
        del parent[last]
    elif kind == "replace":
        parent[last] = value
    elif kind == "unknown_key":
        target = _get(data, path)
        if isinstance(target, dict):
            target[key] = value
        else:
            parent[last] = {key: value}
    elif kind == "bad_reference":
        target = parent[last]
        if isinstance(target, str):
            parent[last] = target + "x" if target in NAMES else "missing-" + target
        elif isinstance(target, dict) and target:
            first = next(iter(target))
            target[f"{first}-renamed"] = target.pop(first)
    return data


MUTATION = st.tuples(st.sampled_from(["drop", "replace", "unknown_key", "bad_reference"]),
                     st.sampled_from(EXAMPLE_PATHS), ANY, TEXT)


# --------------------------------------------------------------------------- properties


def test_the_example_itself_loads() -> None:
    assert isinstance(parse(EXAMPLE_TEXT), Policy)


@fuzz(200)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_example_policies(mutations: list[tuple[str, tuple[Any, ...], Any, Any]]) -> None:
    data: Any = EXAMPLE
    for kind, path, value, key in mutations:
        try:
            _get(data, path)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced it
        data = _mutate(data, kind, path, value, key)
    try:
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return
    assert_well_formed(parse(text), text, needs_path=True)


LINES = EXAMPLE_TEXT.splitlines(keepends=True)


@fuzz(150)
@given(edits=st.lists(st.tuples(st.sampled_from(["delete", "duplicate", "insert", "indent", "dedent", "swap"]),
                                st.integers(0, len(LINES) - 1), TEXT), min_size=1, max_size=4))
def test_line_edits_of_the_example(edits: list[tuple[str, int, str]]) -> None:
    lines = list(LINES)
    for kind, at, text in edits:
        at = at % max(1, len(lines))
        if not lines:
            break
        if kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "insert":
            lines.insert(at, text + "\n")
        elif kind == "indent":
            lines[at] = "  " + lines[at]
        elif kind == "dedent":
            lines[at] = lines[at].lstrip()
        else:
            lines[at] = lines[at][: len(lines[at]) // 2] + text + lines[at][len(lines[at]) // 2:]
    text = "".join(lines)
    assert_well_formed(parse(text), text, needs_path=False)


@fuzz(150)
@given(data=ANY | st.dictionaries(st.sampled_from(["providers", "models", "routes", "metrics", "taxonomy",
                                                   "scorers", "budgets", "server", "passthrough", "auth"]) | TEXT,
                                  ANY, max_size=6))
def test_arbitrary_yaml_documents(data: Any) -> None:
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return
    assert_well_formed(parse(text), text, needs_path=False)


@fuzz(150)
@given(text=st.text(max_size=300) | st.sampled_from([
    ("a: &a [1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
     "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"),  # an alias bomb
    "a: &x {b: *x}\n", "--- 1\n--- 2\n", "? [a]\n: 1\n", "a: !!python/object:os.system x\n",
    "a: !custom 1\n", "<<: 1\n", "a: {<<: [1, 2]}\n", "\t- x\n", "a: \"\\0\"\n", "providers: ${NOPE}\n",
    "providers: {p: {kind: openai, api_key: ${K}}}\n", "routes: {r: {split: {a: 100}}}\n"]))
def test_arbitrary_text(text: str) -> None:
    assert_well_formed(parse(text), text, needs_path=False)


# --------------------------------------------------------------------------- bugs the fuzzing found (fixed)


def test_rubric_path_with_a_nul_is_a_policy_error() -> None:
    text = EXAMPLE_TEXT.replace("rubric: rubrics/helpfulness.md", 'rubric: "rubrics/help\\0fulness.md"')
    assert text != EXAMPLE_TEXT
    result = parse(text)
    assert isinstance(result, PolicyError)
    assert any(issue.path == "scorers.helpfulness.rubric" for issue in result.issues)
