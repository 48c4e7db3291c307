"""Report statistics: pure functions over summary numbers (no server, no store).

Arm 1 is the control, arm 2 the candidate; every difference is candidate − control.
``_stats``: fixed-horizon intervals and tests; ``_sequential``: always-valid mSPRT
(Johari, Pekelis & Walsh 2022); ``_estimates``: edge-safe, cluster-robust and stratified
estimates of candidate − baseline and their always-valid test; ``_verdict``: better / worse / no difference (powered) /
inconclusive with the numbers behind it.
"""

from ._engine import MEANINGS, build_report, report_inputs
from ._estimates import (
    Estimate,
    UnitSums,
    always_valid,
    mean_estimate,
    proportion_estimate,
    ratio_estimate,
    stratified_estimate,
    unit_sums,
)
from ._render_html import render_html
from ._render_text import render_text
from ._scores import judge_family_warnings, policy_scores, score_section
from ._sections import policy_sections
from ._shadow import shadow_section
from ._units import route_estimate, srm_on_units
from ._sequential import (
    DEFAULT_TUNE_N,
    SequentialResult,
    confidence_sequence,
    confidence_sequence_means,
    msprt,
    optimal_mixing_ratio,
    proportion_variance,
    sequential_boundary,
    sequential_p_value,
    sequential_p_value_means,
)
from ._stats import (
    chi2_sf,
    chi_square_srm,
    holm,
    mcnemar,
    newcombe_diff_interval,
    normal_quantile,
    normal_sf,
    student_t_quantile,
    student_t_sf,
    two_proportion_ztest,
    welch_interval,
    welch_ttest,
    wilson_interval,
)
from ._verdict import (
    DEFAULT_COVERAGE_ALPHA,
    DEFAULT_MDE,
    DEFAULT_MIN_N,
    CoverageCheck,
    Goal,
    OutcomesNeeded,
    Verdict,
    coverage_check,
    coverage_check_units,
    holm_verdicts,
    outcomes_needed,
    outcomes_needed_means,
    sample_size_per_arm,
    sample_size_per_arm_means,
    units_needed,
    verdict,
    verdict_estimate,
    verdict_means,
)

__all__ = [
    "MEANINGS",
    "build_report",
    "judge_family_warnings",
    "policy_scores",
    "policy_sections",
    "shadow_section",
    "score_section",
    "render_html",
    "render_text",
    "report_inputs",
    "route_estimate",
    "srm_on_units",
    "DEFAULT_COVERAGE_ALPHA",
    "DEFAULT_MDE",
    "DEFAULT_MIN_N",
    "DEFAULT_TUNE_N",
    "CoverageCheck",
    "Estimate",
    "Goal",
    "OutcomesNeeded",
    "UnitSums",
    "always_valid",
    "mean_estimate",
    "proportion_estimate",
    "ratio_estimate",
    "stratified_estimate",
    "unit_sums",
    "SequentialResult",
    "Verdict",
    "chi2_sf",
    "chi_square_srm",
    "confidence_sequence",
    "confidence_sequence_means",
    "coverage_check",
    "coverage_check_units",
    "holm",
    "holm_verdicts",
    "mcnemar",
    "msprt",
    "newcombe_diff_interval",
    "normal_quantile",
    "normal_sf",
    "outcomes_needed",
    "outcomes_needed_means",
    "optimal_mixing_ratio",
    "proportion_variance",
    "sample_size_per_arm",
    "sample_size_per_arm_means",
    "sequential_boundary",
    "sequential_p_value",
    "sequential_p_value_means",
    "student_t_quantile",
    "student_t_sf",
    "two_proportion_ztest",
    "units_needed",
    "verdict",
    "verdict_estimate",
    "verdict_means",
    "welch_interval",
    "welch_ttest",
    "wilson_interval",
]
