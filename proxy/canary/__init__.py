"""Canary routes: the pure promote / hold / rollback decision (``decide``)."""

from ._decide import Action, ArmFigures, CanaryFigures, Decision, decide, next_stage

__all__ = ["Action", "ArmFigures", "CanaryFigures", "Decision", "decide", "next_stage"]
