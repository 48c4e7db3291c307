"""Second pass: names that point into other sections must exist there.

It reads the plain data (not the models), so that it also runs when the first pass failed
and one `sluicegate check` reports every problem at once. It skips anything of the wrong
shape: the first pass reports that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.config._errors import PathT, PolicyIssue, suggest, unknown_name
from proxy.config._locate import Locator
from proxy.config._models import STANDARD_SEVERITIES
from proxy.guards import DEFAULT_TAXONOMY, build_guards, guard_classes

__all__ = ["check_references"]


def _section(data: dict[str, Any], name: str) -> dict[Any, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


class _Checker:
    def __init__(self, data: dict[str, Any], locator: Locator, base_dir: Path) -> None:
        self.data = data
        self.locator = locator
        self.base_dir = base_dir
        self.issues: list[PolicyIssue] = []
        self.rubrics: dict[str, tuple[Path, str]] = {}
        self.known = {
            name: [str(k) for k in _section(data, name)]
            for name in ("providers", "models", "metrics", "taxonomy", "scorers", "routes")
        }
        self.known["callers"] = [str(k) for k in _section(_section(data, "auth"), "keys")]
        # the built-in classes of the guards are always known (policies/taxonomy/default.yaml lists them)
        self.known["taxonomy"] = list(dict.fromkeys([*self.known["taxonomy"], *DEFAULT_TAXONOMY]))
        severities = list(STANDARD_SEVERITIES)
        for entry in _section(data, "taxonomy").values():
            if isinstance(entry, dict) and isinstance(entry.get("severity"), str):
                severities.append(entry["severity"])
        self.severities = list(dict.fromkeys(severities))

    def ref(self, path: PathT, value: Any, section: str, what: str, at: str = "value") -> None:
        if isinstance(value, str) and value not in self.known[section]:
            self.issues.append(
                self.locator.issue(
                    path, unknown_name(what, value, self.known[section], section), at  # type: ignore[arg-type]
                )
            )

    def run(self) -> None:
        for name, model in _section(self.data, "models").items():
            if isinstance(model, dict):
                self.ref(("models", name, "provider"), model.get("provider"), "providers", "provider")
        for name, route in _section(self.data, "routes").items():
            if isinstance(route, dict):
                self.route(("routes", name), route)
        for name, scorer in _section(self.data, "scorers").items():
            if isinstance(scorer, dict):
                self.scorer(("scorers", name), name, scorer)
        for name, key in _section(_section(self.data, "auth"), "keys").items():
            if isinstance(key, dict):
                for i, route in _items(key.get("routes")):
                    if route != "*":
                        self.ref(("auth", "keys", name, "routes", i), route, "routes", "route")
        passthrough = self.data.get("passthrough")
        if isinstance(passthrough, dict):
            self.ref(("passthrough", "provider"), passthrough.get("provider"), "providers", "provider")

    def route(self, at: PathT, route: dict[str, Any]) -> None:
        split = route.get("split")
        if isinstance(split, dict):
            for key in split:
                self.ref((*at, "split", key), str(key), "models", "model", at="key")
        self.ref((*at, "model"), route.get("model"), "models", "model")
        for i, name in _items(route.get("fallbacks")):
            self.ref((*at, "fallbacks", i), name, "models", "model")
        for i, entry in _items(route.get("when")):
            if not isinstance(entry, dict):
                continue
            self.ref((*at, "when", i, "model"), entry.get("model"), "models", "model")
            match = entry.get("match")
            if isinstance(match, dict):
                for j, caller in _items(match.get("caller")):
                    self.ref((*at, "when", i, "match", "caller", j), caller, "callers", "caller (auth.keys)")
            if isinstance(entry.get("split"), dict):
                for key in entry["split"]:
                    self.ref((*at, "when", i, "split", key), str(key), "models", "model", at="key")
        shadow = route.get("shadow")
        if isinstance(shadow, dict):
            self.ref((*at, "shadow", "model"), shadow.get("model"), "models", "model")
        canary = route.get("canary")
        if isinstance(canary, dict):
            self.ref((*at, "canary", "baseline"), canary.get("baseline"), "models", "model")
            self.ref((*at, "canary", "candidate"), canary.get("candidate"), "models", "model")
            metric = canary.get("success_metric")
            self.ref((*at, "canary", "success_metric"), metric, "metrics", "metric")
        for i, name in _items(route.get("scorers")):
            self.ref((*at, "scorers", i), name, "scorers", "scorer")

        sampling = route.get("sampling")
        if isinstance(sampling, dict):
            for i, rule in _items(sampling.get("rules")):
                if not isinstance(rule, dict):
                    continue
                where = (*at, "sampling", "rules", i)
                self.ref((*where, "taxonomy"), rule.get("taxonomy"), "taxonomy", "taxonomy class")
                self.ref((*where, "variant"), rule.get("variant"), "models", "model")
                self.severity((*where, "severity"), rule.get("severity"))

        guards: list[str] = []
        for i, guard in _items(route.get("guards")):
            if isinstance(guard, str):
                guards.append(guard)
            elif isinstance(guard, dict) and len(guard) == 1:
                guards.append(str(next(iter(guard))))
            self.guard((*at, "guards", i), guard)
        on_failure = route.get("on_guard_failure")
        if isinstance(on_failure, dict):
            allowed = [*guards, *self.severities]
            for key in on_failure:
                if str(key) in allowed:
                    continue
                close = suggest(key, allowed)
                hint = (
                    f"did you mean '{close}'?"
                    if close
                    else f"guards of this route: {', '.join(guards) or 'none'}; "
                    f"severities: {', '.join(self.severities)}"
                )
                self.issues.append(
                    self.locator.issue(
                        (*at, "on_guard_failure", key),
                        f"'{key}' is neither a guard of this route nor a severity; {hint}",
                        "key",
                    )
                )
            # the values (flag | retry_other_variant | block | fallback) are checked by the model

    def guard(self, path: PathT, spec: Any) -> None:
        """A guard must exist, take its options, and emit only classes the taxonomy knows."""
        if not isinstance(spec, (str, dict)):
            return
        try:
            build_guards([spec])
        except ValueError as exc:
            message = str(exc).split(": ", 1)[-1] if str(exc).startswith("guards[") else str(exc)
            # `where`: the bad value inside the spec (a refused regex pattern), so the line is its own
            self.issues.append(self.locator.issue((*path, *getattr(exc, "where", ())), message))
            return
        for name in sorted(guard_classes(spec) - set(self.known["taxonomy"])):
            message = (f"this guard can report taxonomy class '{name}', which the taxonomy does not define; "
                       f"add it under `taxonomy:` with a severity")
            self.issues.append(self.locator.issue(path, message))

    def severity(self, path: PathT, value: Any) -> None:
        if isinstance(value, str) and value not in self.severities:
            message = unknown_name("severity", value, self.severities, "severities")
            self.issues.append(self.locator.issue(path, message))

    def scorer(self, at: PathT, name: str, scorer: dict[str, Any]) -> None:
        kind = scorer.get("kind")
        if kind in ("rule", "llm_judge"):
            self.ref((*at, "taxonomy"), scorer.get("taxonomy"), "taxonomy", "taxonomy class")
        if kind != "llm_judge":
            return
        self.ref((*at, "model"), scorer.get("model"), "models", "model")
        rubric = scorer.get("rubric")
        if not isinstance(rubric, str) or not rubric:
            return
        path = Path(rubric)
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            message = f"rubric file not found: {path}"
        except IsADirectoryError:
            message = f"rubric is a directory, not a file: {path}"
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
            message = f"cannot read rubric {path}: {type(exc).__name__}"
        else:
            self.rubrics[name] = (path.resolve(), text)
            return
        self.issues.append(self.locator.issue((*at, "rubric"), message))


def check_references(
    data: dict[str, Any], locator: Locator, base_dir: Path
) -> tuple[list[PolicyIssue], dict[str, tuple[Path, str]]]:
    """Return (issues, rubrics read: judge scorer name -> (path, text))."""
    checker = _Checker(data, locator, base_dir)
    checker.run()
    return checker.issues, checker.rubrics
