"""`rule` scorers: cheap, deterministic checks of an answer's text, built from a policy `RuleScorer`.

A rule *matches* when ANY of its configured checks fires; the score then gets `label_on_match`
(default "fail") and the scorer's taxonomy class. Otherwise it gets the other label: "pass"
(or "fail" for the odd rule whose `label_on_match` is "pass"). The checks:

| check       | fires when                                                                         |
| ----------- | ---------------------------------------------------------------------------------- |
| `regex`     | the pattern is found anywhere in the answer text (RE2 search: linear time)         |
| `max_chars` | the answer text is longer than `max_chars` characters                              |
| `pii`       | the redaction detectors (`find_pii`) find an e-mail, phone, card number or secret  |
| `keywords`  | NONE of the keywords appear (case-insensitive, whole words; a keyword may be a     |
|             | phrase): the answer is out of the route's scope. An empty answer is not checked.   |
| `json_path` | the answer text is not JSON, or the path is absent from it                         |

`json_path` is a small, well-defined subset of JSONPath: `$`, then any of `.name`, `['name']` /
`["name"]` and `[index]` (a negative index counts from the end). A key whose value is `null` is
present. No wildcards, slices, filters or recursive descent: a path using them is refused when the
rule is built, with the position of what is not understood.

The reason names the checks that fired. It never quotes the answer: a regex or PII match may be a
secret, so the reason gives offsets, counts and kinds only.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from proxy.guards import PolicyRegex, compile_policy_regex, literal_alternation
from proxy.records._redact import find_pii
from proxy.scoring._score import Score, ScoreInput

if TYPE_CHECKING:
    from proxy.config._models import RuleScorer

__all__ = ["JsonPath", "RuleCheck", "parse_json_path"]

JsonPath = tuple[str | int, ...]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX = re.compile(r"\[(-?\d+)\]")
_QUOTED = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")
_UNESCAPE = re.compile(r"\\(.)")


def parse_json_path(path: str) -> JsonPath:
    """`$.a.b[0]['c d']` -> ("a", "b", 0, "c d"). Raises ValueError naming the position of the
    first thing outside the supported subset."""
    if not path.startswith("$"):
        raise ValueError(f"json_path {path!r} must start with '$'")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        if path[pos] == ".":
            m = _NAME.match(path, pos + 1)
            if m is None:
                raise ValueError(f"json_path {path!r}: expected a name after '.' at position {pos + 1} "
                                 "(supported: $.name, $['name'], $[0])")
            steps.append(m.group())
        elif (m := _INDEX.match(path, pos)) is not None:
            steps.append(int(m.group(1)))
        elif (m := _QUOTED.match(path, pos)) is not None:
            quoted = m.group(1) if m.group(1) is not None else m.group(2)
            steps.append(_UNESCAPE.sub(r"\1", quoted))
        else:
            raise ValueError(f"json_path {path!r}: unsupported syntax at position {pos} "
                             "(supported: $.name, $['name'], $[0]; no wildcards, slices or filters)")
        pos = m.end()
    return tuple(steps)


def _present(doc: Any, steps: JsonPath) -> bool:
    node = doc
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                return False
            node = node[step]
        else:
            if not isinstance(node, dict) or step not in node:
                return False
            node = node[step]
    return True


def _keyword_pattern(keywords: list[str]) -> re.Pattern[str]:
    words = {k.strip().lower() for k in keywords if k.strip()}
    if not words:
        raise ValueError("keywords must hold at least one non-blank keyword")
    return literal_alternation(words, whole_words=True, ignore_case=True)  # longest first: phrases win


class RuleCheck:
    """A `rule` scorer. `score` is synchronous and pure: the same input gives the same score."""

    kind = "rule"
    __slots__ = ("name", "label_on_match", "label_otherwise", "taxonomy", "pattern", "max_chars", "pii",
                 "keywords", "keyword_pattern", "json_path", "json_steps")

    def __init__(self, config: RuleScorer) -> None:
        self.name: str = config.name
        self.label_on_match: str = config.label_on_match
        self.label_otherwise: str = "fail" if config.label_on_match == "pass" else "pass"
        self.taxonomy: str | None = config.taxonomy
        self.pattern: PolicyRegex | None = (
            config.pattern if config.pattern is not None
            else compile_policy_regex(config.regex) if config.regex is not None else None)
        self.max_chars: int | None = config.max_chars
        self.pii: bool = config.pii
        self.keywords: list[str] | None = config.keywords or None
        self.keyword_pattern = _keyword_pattern(self.keywords) if self.keywords else None
        self.json_path: str | None = config.json_path
        self.json_steps: JsonPath | None = parse_json_path(config.json_path) if config.json_path else None

    # --- the checks: each returns why it fired, or None ----------------------------------------

    def _regex(self, text: str) -> str | None:
        if self.pattern is None:
            return None
        m = self.pattern.search(text)
        return None if m is None else f"regex matched at offset {m.start()}"

    def _length(self, text: str) -> str | None:
        if self.max_chars is None or len(text) <= self.max_chars:
            return None
        return f"answer is {len(text)} characters (max_chars {self.max_chars})"

    def _pii(self, text: str) -> str | None:
        if not self.pii:
            return None
        kinds = Counter(kind for kind, _, _ in find_pii(text))
        if not kinds:
            return None
        return "pii found: " + ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))

    def _keywords(self, text: str) -> str | None:
        if self.keyword_pattern is None or not text.strip():
            return None
        if self.keyword_pattern.search(text) is not None:
            return None
        assert self.keywords is not None
        shown = ", ".join(self.keywords[:8]) + (", ..." if len(self.keywords) > 8 else "")
        return f"out of scope: none of the keywords appear ({shown})"

    def _json(self, text: str) -> str | None:
        if self.json_steps is None:
            return None
        try:
            doc = orjson.loads(text.strip())
        except orjson.JSONDecodeError:
            return "answer is not JSON"
        if not _present(doc, self.json_steps):
            return f"json_path {self.json_path} is absent"
        return None

    # --- the scorer ------------------------------------------------------------------------

    def fired(self, text: str) -> list[str]:
        """Why each check that fired did (empty when none did)."""
        checks = (self._regex, self._length, self._pii, self._keywords, self._json)
        return [why for why in (check(text) for check in checks) if why is not None]

    def score(self, item: ScoreInput) -> Score:
        reasons = self.fired(item.answer_text)
        label = self.label_on_match if reasons else self.label_otherwise
        return Score(
            record_id=item.record_id,
            request_id=item.request_id,
            scorer=self.name,
            kind="rule",
            label=label,
            score=1.0 if label == "pass" else 0.0,
            taxonomy=self.taxonomy if reasons and label != "pass" else None,
            reason="; ".join(reasons) if reasons else "no check fired",
            weight=item.weight,
        )
