"""YAML text -> plain Python data, plus where every key and value sits in the file.

PyYAML's own constructor loses positions and silently keeps the last of two equal keys, so
we compose the node tree (SafeLoader) and build the data ourselves: each scalar string is
interpolated (`_env`), each key path is mapped to the line/column of its key node and of its
value node, duplicate keys are reported, and merge keys (`<<: *anchor`) work as in YAML 1.1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from proxy.config._env import InterpolationError, Protected, interpolate, protect
from proxy.config._errors import PathT, PolicyError, PolicyIssue, format_path
from proxy.config._models import is_auth_header

__all__ = ["Document", "Locator", "compose"]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_MAX_NODES = 200_000  # alias bombs ("billion laughs") stop here

# Values at these places are never echoed in a message; api keys and auth-like header values
# are also scrubbed from every message.
_SECRET_KEYS = frozenset({"api_key", "key", "hash", "admin_keys"})  # never echoed in an error (caller keys too)
_SECRET_PARENTS = frozenset({"headers"})


def is_secret_path(path: PathT) -> bool:
    return any(p in _SECRET_KEYS for p in path) or any(p in _SECRET_PARENTS for p in path[:-1])


def _is_scrubbed(path: PathT) -> bool:
    if "api_key" in path:
        return True
    return any(
        p == "headers" and i + 1 < len(path) and is_auth_header(str(path[i + 1]))
        for i, p in enumerate(path)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Spot:
    line: int  # 1-based
    column: int  # 1-based
    container: bool = False


def _spot(node: Node, container: bool = False) -> _Spot:
    return _Spot(node.start_mark.line + 1, node.start_mark.column + 1, container)


class Locator:
    """Maps a key path to the position of its key node and of its value node."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.keys: dict[PathT, _Spot] = {}
        self.values: dict[PathT, _Spot] = {}

    def _get(self, table: Mapping[PathT, _Spot], path: PathT) -> _Spot | None:
        spot = table.get(path)
        if spot is None and path:
            # pydantic reports dict keys as given; YAML may have made them ints etc.
            wanted = tuple(str(p) for p in path)
            for candidate, s in table.items():
                if len(candidate) == len(path) and tuple(str(p) for p in candidate) == wanted:
                    return s
        return spot

    def spot(self, path: PathT, at: Literal["key", "value", "auto"] = "auto") -> _Spot | None:
        """Where to point for `path`; walks up to the nearest known ancestor if needed.

        "auto": the key of a mapping/sequence value (its header line), the value of a scalar.
        """
        path = tuple(path)
        while True:
            value = self._get(self.values, path)
            key = self._get(self.keys, path)
            if at == "key":
                chosen = key or value
            elif at == "value":
                chosen = value or key
            else:
                chosen = key if (value is None or value.container) and key is not None else value
            if chosen is not None or not path:
                return chosen
            path = path[:-1]
            at = "auto"

    def issue(
        self,
        path: PathT,
        message: str,
        at: Literal["key", "value", "auto"] = "auto",
        *,
        point: PathT | None = None,
    ) -> PolicyIssue:
        """An issue named by `path`, positioned at `point` (default: `path`)."""
        spot = self.spot(path if point is None else point, at)
        return PolicyIssue(
            file=self.source,
            line=spot.line if spot else None,
            column=spot.column if spot else None,
            path=format_path(path),
            message=message,
        )


@dataclasses.dataclass
class Document:
    data: Any
    locator: Locator
    issues: list[PolicyIssue]
    interpolated: set[PathT]  # values that came (partly) from the environment
    broken: set[PathT]  # values whose interpolation failed (later passes stay quiet there)
    secrets: set[str]  # values found at secret places (api_key, headers), for scrubbing


class _Builder:
    def __init__(self, source: str, env: Mapping[str, str], protected: Protected) -> None:
        self.loader = yaml.SafeLoader("")
        self.protected = protected
        self.env = env
        self.doc = Document(None, Locator(source), [], set(), set(), set())
        self.count = 0
        self.stack: set[int] = set()

    def problem(self, path: PathT, node: Node, message: str) -> None:
        self.doc.issues.append(
            PolicyIssue(
                self.doc.locator.source,
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                format_path(path),
                message,
            )
        )

    def build(self, node: Node, path: PathT) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            message = f"document too large (over {_MAX_NODES} nodes once aliases are expanded)"
            raise PolicyError([self.doc.locator.issue(path, message)])
        if isinstance(node, ScalarNode):
            self.doc.locator.values[path] = _spot(node)
            return self.scalar(node, path)
        if id(node) in self.stack:
            self.problem(path, node, "recursive alias: a node cannot contain itself")
            return None
        self.stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self.doc.locator.values[path] = _spot(node, container=True)
                if node.tag != _SEQ:
                    self.problem(path, node, f"unsupported YAML tag '{node.tag}'")
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self.doc.locator.values[path] = _spot(node, container=True)
                if node.tag != _MAP:
                    self.problem(path, node, f"unsupported YAML tag '{node.tag}'")
                return self.mapping(node, path)
        finally:
            self.stack.discard(id(node))
        self.problem(path, node, "unsupported YAML node")
        return None

    def scalar(self, node: ScalarNode, path: PathT) -> Any:
        node.value = self.protected.restore(node.value)
        if node.tag == _STR:
            try:
                value, used = interpolate(node.value, self.env)
            except InterpolationError as exc:
                self.problem(path, node, str(exc))
                self.doc.broken.add(path)
                return node.value
            if used:
                self.doc.interpolated.add(path)
            if value and _is_scrubbed(path):
                self.doc.secrets.add(value)
            return value
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception as exc:  # unknown tag, `!!int abc`, ...
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.problem(path, node, f"cannot read this value: {problem}")
            self.doc.broken.add(path)
            return None

    def key(self, node: Node, path: PathT) -> tuple[bool, Any]:
        if not isinstance(node, ScalarNode):
            self.problem(path, node, "mapping keys must be plain scalars (names)")
            return False, None
        node.value = self.protected.restore(node.value)
        if node.tag == _STR:
            return True, node.value
        try:
            return True, self.loader.construct_object(node, deep=True)
        except Exception as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.problem(path, node, f"cannot read this key: {problem}")
            return False, None

    def mapping(self, node: MappingNode, path: PathT) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merges = [v for k, v in node.value if isinstance(k, ScalarNode) and k.tag == _MERGE]
        # Merged mappings first (explicit keys override them; earlier sources win).
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.problem(path, source, "'<<' merges need a mapping or a list of mappings")
                    continue
                if id(source) in self.stack:
                    self.problem(path, source, "recursive alias: a node cannot contain itself")
                    continue
                self.stack.add(id(source))
                try:
                    for key_node, value_node in source.value:
                        ok, key = self.key(key_node, path)
                        if not ok or key in result or key_node.tag == _MERGE:
                            continue
                        self.doc.locator.keys[(*path, key)] = _spot(key_node)
                        result[key] = self.build(value_node, (*path, key))
                finally:
                    self.stack.discard(id(source))
        seen: dict[Any, Node] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                continue
            ok, key = self.key(key_node, path)
            if not ok:
                continue
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key
                self.problem(path, key_node, "mapping keys must be plain scalars (names)")
                continue
            if first is not None:
                self.problem(
                    (*path, key),
                    key_node,
                    f"duplicate key '{key}' (first at line {first.start_mark.line + 1}); "
                    "YAML would silently keep only the last one",
                )
            seen[key] = key_node
            self.doc.locator.keys[(*path, key)] = _spot(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


def _syntax_issue(source: str, text: str, exc: yaml.YAMLError, protected: Protected) -> PolicyIssue:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        # Only the problem/context phrases: str(exc) quotes the offending line, which may
        # hold a secret.
        message = "YAML syntax error: " + protected.restore(exc.problem or exc.context or "?")
        if exc.context and exc.context.startswith("expected a single document"):
            message = (
                "YAML syntax error: a policy file holds one YAML document; found a second one ('---')"
            )
        elif exc.problem and exc.context:
            message += f" ({protected.restore(exc.context)}"
            ctx = exc.context_mark
            if ctx is not None and (mark is None or (ctx.line, ctx.column) != (mark.line, mark.column)):
                message += f" that starts at line {ctx.line + 1}, column {ctx.column + 1}"
            message += ")"
        return PolicyIssue(
            source, mark.line + 1 if mark else None, mark.column + 1 if mark else None, "", message
        )
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        char = f" (character #x{exc.character:04x})" if isinstance(exc.character, int) else ""
        return PolicyIssue(source, line, column, "", f"unreadable YAML: {exc.reason}{char}")
    return PolicyIssue(source, None, None, "", f"YAML error: {type(exc).__name__}")


def compose(text: str, source: str, env: Mapping[str, str]) -> Document:
    """Parse `text`; YAML syntax errors raise PolicyError, everything else lands in issues."""
    protected = protect(text)
    try:
        loader = yaml.SafeLoader(protected.text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise PolicyError([_syntax_issue(source, text, exc, protected)]) from None
    builder = _Builder(source, env, protected)
    if node is not None:
        builder.doc.data = builder.build(node, ())
    return builder.doc
