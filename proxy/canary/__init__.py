"""Canary routes: runs with a start (``_state``), periods of constant allocation and the stratified,
cluster-robust estimates over them (``_strata``, ``_figures``), the pure promote / hold / rollback decision
(``decide``), per-stage planning (``_plan``) and the controller that applies it (``_controller``)."""

from ._decide import Action, ArmFigures, CanaryFigures, Decision, Evidence, decide, next_stage, rollback_rules
from ._strata import MetricCells, Period, Stratified, periods, stratified

__all__ = ["Action", "ArmFigures", "CanaryFigures", "Decision", "Evidence", "MetricCells", "Period", "Stratified",
           "decide", "next_stage", "periods", "rollback_rules", "stratified"]
