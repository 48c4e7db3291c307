"""What the edge-safe verdicts cost in power, measured (README "Why you can trust a verdict").

    python -m bench.verdict_power [--runs 1000]

1. Outcomes per arm to detect 0.60 vs 0.63 (80% power, α = 0.05, 50/50) with the sequential
   test, before issue 18 (plug-in variance) and after (at least the pooled null variance), and
   the power measured at the planned size through ``verdict`` (one look, and 20 looks).
2. Time to a verdict for real effects with rare events and a 90/10 split: the median outcomes
   in the small arm when ``verdict`` first says better/worse, looking 40 times, for the current
   rule and for the rule before issue 18 (plug-in variance; its A/A false verdict rate is shown
   too, since speed bought with false verdicts is not worth having).
"""

from __future__ import annotations

import argparse

import numpy as np

from proxy.reports import (
    DEFAULT_TUNE_N,
    always_valid,
    optimal_mixing_ratio,
    outcomes_needed,
    proportion_estimate,
    units_needed,
    verdict,
)

ALPHA = 0.05


def old_rule_p(s1: int, n1: int, s2: int, n2: int) -> float:
    """The always-valid p-value before issue 18: plug-in variance, τ² from the plug-in variances."""
    unit = s1 / n1 * (1 - s1 / n1) + s2 / n2 * (1 - s2 / n2)
    tau2 = optimal_mixing_ratio(ALPHA) * unit / DEFAULT_TUNE_N if unit > 0 else 1.0
    return always_valid(proportion_estimate(s1, n1, s2, n2, edge_safe=False), tau2=tau2).p_value


def planning(runs: int) -> None:
    before = units_needed(0.60 * 0.40, 0.63 * 0.37, 0.03).candidate  # unpooled, as before
    after = outcomes_needed(0.60, 0.03).candidate
    fixed = outcomes_needed(0.60, 0.03, sequential=False).candidate
    print(f"0.60 vs 0.63, 50/50, 80% power: sequential {before} per arm before, {after} after "
          f"(+{after / before - 1:.2%}); fixed-horizon {fixed}")
    rng = np.random.default_rng(1)
    looks = np.linspace(after / 20, after, 20).astype(int)
    inc = np.diff(looks, prepend=0)
    s1 = np.cumsum(rng.binomial(inc, 0.60, size=(runs, 20)), axis=1)
    s2 = np.cumsum(rng.binomial(inc, 0.63, size=(runs, 20)), axis=1)
    one = sum(verdict(int(a), after, int(b), after, mde=0.03).code == "better"
              for a, b in zip(s1[:, -1], s2[:, -1]))
    many = sum(any(verdict(int(s1[r, k]), int(n), int(s2[r, k]), int(n), mde=0.03).code == "better"
                   for k, n in enumerate(looks)) for r in range(runs))
    print(f"  power at {after} per arm: one look {one / runs:.1%}, 20 looks {many / runs:.1%} ({runs} runs)")


def time_to_verdict(p1: float, p2: float, share: float, runs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    small = np.unique(np.geomspace(30, 3000, 40).astype(int))
    n1 = np.round(small * (1 - share) / share).astype(int)
    s1 = np.cumsum(rng.binomial(np.diff(n1, prepend=0), p1, size=(runs, len(small))), axis=1)
    s2 = np.cumsum(rng.binomial(np.diff(small, prepend=0), p2, size=(runs, len(small))), axis=1)
    for name, decides in (("now", lambda a, b, c, d: verdict(a, b, c, d).code in ("better", "worse")),
                          ("before", lambda a, b, c, d: old_rule_p(a, b, c, d) < ALPHA)):
        firsts = []
        for r in range(runs):
            for k, n in enumerate(small):
                if decides(int(s1[r, k]), int(n1[k]), int(s2[r, k]), int(n)):
                    firsts.append(int(n))
                    break
        found = len(firsts) / runs
        median = int(np.median(firsts)) if firsts else None
        print(f"  {p1:.2f} vs {p2:.2f} at {1 - share:.0%}/{share:.0%}, {name:6s}: decided in {found:.1%}, "
              f"median small arm {median}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    planning(args.runs)
    print("time to a verdict (40 looks, small arm 30 … 3,000):")
    for i, (p1, p2) in enumerate(((0.05, 0.08), (0.08, 0.05), (0.01, 0.03), (0.03, 0.01), (0.05, 0.05))):
        time_to_verdict(p1, p2, 0.1, args.runs // 2, seed=10 + i)


if __name__ == "__main__":
    main()
