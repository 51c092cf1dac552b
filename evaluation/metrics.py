"""Statistics for results files: mean, standard error, seeded bootstrap CI, unbiased pass@k.

Every summary is a plain dict ``{"mean", "stderr", "ci95": [lo, hi], "n"}`` so it goes into
``results.json`` unchanged. The bootstrap is seeded, so the same values give the same CI on
every machine.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["bootstrap_ci", "breakdown", "pass_at_k", "pass_at_k_table", "summarize"]


def bootstrap_ci(
    values: Sequence[float], *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded, deterministic)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def summarize(values: Iterable[float], *, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Mean, standard error of the mean, bootstrap 95% CI and count of ``values``."""
    x = np.asarray(list(values), dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "stderr": None, "ci95": [None, None], "n": 0}
    stderr = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    lo, hi = bootstrap_ci(x, seed=seed, n_boot=n_boot)
    return {"mean": float(x.mean()), "stderr": stderr, "ci95": [lo, hi], "n": n}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k), as a numerically stable product
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_table(correct_counts: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[str, float]:
    """Mean unbiased pass@k over problems, for every k in ``ks`` (default 1, 2, 4, ... up to n)."""
    if ks is None:
        ks = sorted({1, *[2**i for i in range(1, int(math.log2(n)) + 1)], n}) if n >= 1 else []
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for c in correct_counts])) for k in ks if k <= n}


def breakdown(
    rows: Sequence[Mapping[str, Any]], by: str, metric: str, *, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Summaries of ``metric`` grouped by the value of field ``by`` (e.g. difficulty, task)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.get(metric) is not None:
            groups[str(row.get(by))].append(float(row[metric]))
    return {key: summarize(vals, seed=seed) for key, vals in sorted(groups.items())}
