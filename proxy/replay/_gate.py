"""`--fail-on RULES`: when a replay should fail a CI pipeline (exit code 1).

Rules are comma-separated; any rule met fails the gate:

| rule | met when |
| --- | --- |
| `new_critical` | an item's candidate answer has a `critical` class its baseline answer does not |
| `pass_rate_drop>X` | the candidate's pass rate is more than X points below the baseline's |
| `pass_rate_drop>X@P` | the same, and McNemar's p-value on the paired items is below P |
| `regressions>N` | more than N items passed on the baseline and fail on the candidate |
| `errors>N` | more than N items got no answer from the candidate (its upstream kept failing) |

The `@P` form exists because a small corpus drops a few points by chance: a gate on the drop alone
is noisy, a gate on the p-value alone blocks tiny but certain drops. Quote the rules in a shell
(`'pass_rate_drop>2@0.05'`): an unquoted `>` is a redirection.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FailRule", "RULE_HELP", "parse_fail_on", "rules_met"]

RULE_HELP = "new_critical, pass_rate_drop>X[@P], regressions>N, errors>N"

_THRESHOLD = re.compile(r"(pass_rate_drop|regressions|errors)\s*>\s*(\d+(?:\.\d+)?)(?:\s*@\s*(0?\.\d+|1(?:\.0*)?))?")


@dataclasses.dataclass(frozen=True, slots=True)
class FailRule:
    name: str  # new_critical | pass_rate_drop | regressions | errors
    threshold: float = 0.0
    alpha: float | None = None  # pass_rate_drop only: also require McNemar p < alpha
    text: str = ""

    def check(self, summary: Mapping[str, Any]) -> str | None:
        """Why the rule is met, or None."""
        if self.name == "new_critical":
            n = summary["new_critical"]["count"]
            if not n:
                return None
            first = summary["new_critical"]["items"][0]
            return f"{self.text}: {n} item(s) with a new critical failure (e.g. {first['record_id']}: " \
                   f"{', '.join(first['classes'])})"
        if self.name == "regressions":
            n = summary["paired"]["regressions"]
            return f"{self.text}: {n} regressions" if n > self.threshold else None
        if self.name == "errors":
            n = summary["errors"]["count"]
            return f"{self.text}: {n} error items" if n > self.threshold else None
        base, cand = summary["pass_rate"]["baseline"]["rate"], summary["pass_rate"]["candidate"]["rate"]
        if base is None or cand is None:
            return None
        drop = (base - cand) * 100
        if drop <= self.threshold:
            return None
        p = summary["paired"]["p_value"]
        if self.alpha is not None and not p < self.alpha:
            return None
        why = f"{self.text}: pass rate {cand:.1%} vs {base:.1%}, a drop of {drop:.1f} points"
        return why + (f", McNemar p = {p:.3g} < {self.alpha:g}" if self.alpha is not None else "")


def parse_fail_on(text: str | None) -> list[FailRule]:
    """Rules from `--fail-on`. Raises ValueError naming the rule it does not understand."""
    rules: list[FailRule] = []
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        if part == "new_critical":
            rules.append(FailRule("new_critical", text=part))
            continue
        m = _THRESHOLD.fullmatch(part)
        if m is None:
            raise ValueError(f"--fail-on: cannot read rule {part!r}; the rules are: {RULE_HELP} "
                             "(comma-separated; quote them in a shell, '>' is a redirection)")
        name, threshold, alpha = m.group(1), float(m.group(2)), m.group(3)
        if alpha is not None and name != "pass_rate_drop":
            raise ValueError(f"--fail-on: {part!r}: '@P' (a p-value) applies to pass_rate_drop only")
        rules.append(FailRule(name, threshold, float(alpha) if alpha is not None else None, part))
    return rules


def rules_met(rules: Sequence[FailRule], summary: Mapping[str, Any]) -> list[str]:
    """The reasons of every rule met (empty: the gate passes)."""
    return [why for why in (rule.check(summary) for rule in rules) if why is not None]
