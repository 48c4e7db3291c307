"""The checks a replayed answer gets: the route's guards and scorers, built as the gateway builds them.

Guards come from `proxy.server._gateway.compile_routes` (the gateway's own compiled chain, with the
policy's effective taxonomy), rule scorers are `proxy.scoring.RuleCheck`s and judges
`proxy.scoring.LLMJudge`s — so a replay cannot disagree with production about what a failure is.
Both sides of a comparison go through the same `Checks`, the recorded baseline included: its
answer is re-checked with the policy as it is *now*, so a policy change never shows up as a model
difference (the corpus keeps the recorded guard results for reference).

Embeddings get no guards and no scorers (the gateway runs none on them either).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from proxy.guards import GuardChain
from proxy.replay._model import ScoreFact, Side
from proxy.scoring import LLMJudge, RuleCheck, ScoreInput, answer_text
from proxy.scoring._score import JUDGE_ERROR

__all__ = ["Checks", "RouteChecks", "excerpt"]

_SPACES = re.compile(r"\s+")


def excerpt(response: Mapping[str, Any] | None, limit: int = 160) -> str:
    """The start of an answer's text (content, else its tool calls as `name(arguments)`), one line."""
    text = _SPACES.sub(" ", answer_text(dict(response) if isinstance(response, Mapping) else None)).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclasses.dataclass(frozen=True, slots=True)
class RouteChecks:
    guards: GuardChain | None
    rules: tuple[RuleCheck, ...] = ()
    judges: tuple[LLMJudge, ...] = ()


class Checks:
    """Per route: its guard chain, its rule scorers and (with `judge_adapters`) its LLM judges.

    `judge_adapters` maps provider name -> adapter for the judges' models; None runs no judge.
    Raises ValueError naming what is missing (a judge whose provider has no adapter)."""

    def __init__(self, policy: Any, judge_adapters: Mapping[str, Any] | None = None) -> None:
        from proxy.server._gateway import compile_routes

        compiled = compile_routes(policy)
        self.routes: dict[str, RouteChecks] = {}
        for name, route in compiled.items():
            rules: list[RuleCheck] = []
            judges: list[LLMJudge] = []
            for scorer in route.config.scorers:
                config = policy.scorers.get(scorer)
                if config is None:
                    continue
                if config.kind == "rule":
                    rules.append(RuleCheck(config))
                elif config.kind == "llm_judge" and judge_adapters is not None:
                    judge = policy.models[config.model]
                    adapter = judge_adapters.get(judge.provider)
                    if adapter is None:
                        raise ValueError(f"scorer '{scorer}': the judge's provider '{judge.provider}' has no adapter")
                    judges.append(LLMJudge(config, judge, adapter))
            self.routes[name] = RouteChecks(route.guards, tuple(rules), tuple(judges))

    def judges_of(self, route: str) -> tuple[LLMJudge, ...]:
        checks = self.routes.get(route)
        return checks.judges if checks is not None else ()

    async def check(self, side: Side, *, route: str, endpoint: str, request: dict[str, Any],
                    record_id: str, request_id: str, retrieval_ids: tuple[str, ...] = ()) -> None:
        """Fill `side.guards` and `side.scores` for its answer (nothing when it was not answered)."""
        checks = self.routes.get(route)
        if checks is None or not side.answered or side.response is None or endpoint == "embeddings":
            return
        if checks.guards is not None:
            side.guards = [failure.to_dict() for failure in checks.guards.run(request, side.response)]
        if not checks.rules and not checks.judges:
            return
        item = ScoreInput(record_id=record_id, request_id=request_id, route=route, variant=side.source,
                          request=request, answer_text=answer_text(side.response), answer=side.response,
                          retrieval_ids=retrieval_ids)
        for rule in checks.rules:
            score = rule.score(item)
            side.scores.append(ScoreFact(scorer=rule.name, kind="rule", label=score.label,
                                         passed=score.label == "pass", taxonomy=score.taxonomy,
                                         reason=score.reason))
        for judge in checks.judges:
            score = await judge.score(item)
            verdict = None if score.label == JUDGE_ERROR else score.label == judge.pass_label
            side.scores.append(ScoreFact(scorer=judge.name, kind="llm_judge", label=score.label, passed=verdict,
                                         taxonomy=score.taxonomy, cost_usd=score.cost_usd,
                                         reason=score.reason or score.error))
