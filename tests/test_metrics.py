"""evaluation.metrics: pass@k against brute force, bootstrap coverage, summaries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from evaluation.metrics import bootstrap_ci, breakdown, pass_at_k, pass_at_k_table, summarize


@pytest.mark.parametrize("n, c, k", [(5, 2, 1), (5, 2, 3), (6, 0, 2), (6, 6, 4), (7, 3, 7), (8, 1, 3)])
def test_pass_at_k_matches_brute_force_enumeration(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)


def test_pass_at_k_table_averages_over_problems():
    table = pass_at_k_table([0, 4, 2], n=4)
    assert set(table) == {"pass@1", "pass@2", "pass@4"}
    assert table["pass@1"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert table["pass@4"] == pytest.approx(2 / 3)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(123)
    trials, hits = 300, 0
    for t in range(trials):
        x = rng.binomial(1, 0.3, size=200).astype(float)
        lo, hi = bootstrap_ci(x, n_boot=500, seed=t)
        hits += lo <= 0.3 <= hi
    assert 0.90 <= hits / trials <= 0.99


def test_bootstrap_is_seeded_and_degenerate_cases_are_exact():
    x = [0.0, 1.0, 1.0, 0.5, 0.25]
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_summarize_reports_mean_stderr_ci_and_n():
    s = summarize([1.0, 0.0, 1.0, 1.0])
    assert s["mean"] == 0.75 and s["n"] == 4
    assert s["stderr"] == pytest.approx(np.std([1, 0, 1, 1], ddof=1) / 2)
    assert s["ci95"][0] <= 0.75 <= s["ci95"][1]
    assert summarize([])["n"] == 0


def test_breakdown_groups_by_field():
    rows = [{"difficulty": 1, "reward": 1.0}, {"difficulty": 1, "reward": 0.0}, {"difficulty": 2, "reward": 1.0}]
    out = breakdown(rows, "difficulty", "reward")
    assert out["1"]["mean"] == 0.5 and out["2"]["n"] == 1
