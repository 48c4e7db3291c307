"""Report statistics: pure functions over summary numbers (no server, no store).

Arm 1 is the control, arm 2 the candidate; every difference is candidate − control.
``_stats``: fixed-horizon intervals and tests; ``_sequential``: always-valid mSPRT
(Johari, Pekelis & Walsh 2022); ``_verdict``: better / worse / no difference (powered) /
inconclusive with the numbers behind it.
"""

from ._engine import MEANINGS, build_report, report_inputs
from ._render_html import render_html
from ._render_text import render_text
from ._scores import judge_family_warnings, policy_scores, score_section
from ._sections import policy_sections
from ._shadow import shadow_section
from ._sequential import (
    DEFAULT_TUNE_N,
    SequentialResult,
    confidence_sequence,
    confidence_sequence_means,
    msprt,
    optimal_mixing_ratio,
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
    DEFAULT_MDE,
    DEFAULT_MIN_N,
    Goal,
    Verdict,
    sample_size_per_arm,
    sample_size_per_arm_means,
    verdict,
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
    "DEFAULT_MDE",
    "DEFAULT_MIN_N",
    "DEFAULT_TUNE_N",
    "Goal",
    "SequentialResult",
    "Verdict",
    "chi2_sf",
    "chi_square_srm",
    "confidence_sequence",
    "confidence_sequence_means",
    "holm",
    "mcnemar",
    "msprt",
    "newcombe_diff_interval",
    "normal_quantile",
    "normal_sf",
    "optimal_mixing_ratio",
    "sample_size_per_arm",
    "sample_size_per_arm_means",
    "sequential_boundary",
    "sequential_p_value",
    "sequential_p_value_means",
    "student_t_quantile",
    "student_t_sf",
    "two_proportion_ztest",
    "verdict",
    "verdict_means",
    "welch_interval",
    "welch_ttest",
    "wilson_interval",
]
