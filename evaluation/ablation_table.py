"""The ablation table: per preset, mean and 95% t-interval over seeds of each run's numbers.

A run is ``OUT/PRESET/seedS/metrics.jsonl`` written by ``lavida train``. Per run:

* ``before/<k>`` and ``after/<k>`` for the held-out ``eval/reward`` (mean over the run's
  tasks) and ``eval/reward/<task>``: the first and the last evaluation, and ``delta`` of
  the mean;
* the mean over RL steps of ``reward``, ``frac_reward_zero_std`` (before forcing),
  ``frac_reward_zero_std/after_forcing``, ``forced_frac``, ``kl``, ``grad_norm``,
  ``tree_nfe``; the maximum ``grad_norm``; the count of ``skipped`` steps and
  ``collapse_alarm`` s; ``time`` (s, the last step's).

Intervals use Student's t with ``n - 1`` degrees of freedom (3 seeds: mean ± 4.30 · s/√3).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

__all__ = ["TASKS", "mean_ci", "run_numbers", "write_table"]

TASKS = ("visual_math", "grounding", "image_edit")
_STEP_MEANS = ("reward", "frac_reward_zero_std", "frac_reward_zero_std/after_forcing", "forced_frac", "kl",
               "grad_norm", "tree_nfe")  # fmt: skip
#: Columns of the Markdown table (all columns go to CSV/JSON).
SHOWN = ("after/eval/reward", "delta/eval/reward", *(f"after/eval/reward/{t}" for t in TASKS), "reward",
         "frac_reward_zero_std", "frac_reward_zero_std/after_forcing", "forced_frac", "kl", "max_grad_norm",
         "tree_nfe", "collapse_alarm", "time")  # fmt: skip


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """``{"mean", "half", "n"}``: the mean and the half-width of its t confidence interval."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"mean": None, "half": None, "n": 0}
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return {"mean": float(x.mean()), "half": half, "n": int(x.size)}


def run_numbers(log: Path) -> dict[str, float]:
    """The numbers of one run (module docstring) from its ``metrics.jsonl``."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    evals = [r for r in rows if "eval/reward" in r]
    steps = [r for r in rows if r.get("step", 0) > 0 and "loss" in r]
    out: dict[str, float] = {}
    if evals:
        for tag, row in (("before", evals[0]), ("after", evals[-1])):
            out.update({f"{tag}/{k}": v for k, v in row.items() if k.startswith("eval/reward")})
        out["delta/eval/reward"] = evals[-1]["eval/reward"] - evals[0]["eval/reward"]
    for key in _STEP_MEANS:
        values = [r[key] for r in steps if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = float(np.mean(values))
    norms = [r["grad_norm"] for r in steps if isinstance(r.get("grad_norm"), (int, float))]
    out["max_grad_norm"] = float(max(norms)) if norms else math.nan
    out["skipped"] = float(sum(r.get("skipped", 0.0) for r in steps))
    out["collapse_alarm"] = float(sum(r.get("collapse_alarm", 0.0) for r in steps))
    out["time"] = float(steps[-1]["time"]) if steps else math.nan
    return out


def _fmt(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "–"
    if summary["half"] is None or not math.isfinite(summary["half"]):
        return f"{summary['mean']:.3g}"
    return f"{summary['mean']:.3f} ± {summary['half']:.3f}"


def write_table(out: Path, presets: Sequence[str], seeds: Sequence[int]) -> Path:
    """Summarize ``out/PRESET/seedS`` into ``out/ablation.{json,csv,md}``; returns the ``.md`` path."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for preset in presets:
        runs = [run_numbers(p) for s in seeds if (p := out / preset / f"seed{s}" / "metrics.jsonl").is_file()]
        keys = sorted({k for r in runs for k in r})
        table[preset] = {k: mean_ci([r.get(k, math.nan) for r in runs]) for k in keys}
        table[preset]["runs"] = {"mean": len(runs), "half": None, "n": len(runs)}
    (out / "ablation.json").write_text(json.dumps({"seeds": list(seeds), "table": table}, indent=2))
    columns = sorted({k for row in table.values() for k in row})
    with open(out / "ablation.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["preset", *(f"{c}{suffix}" for c in columns for suffix in ("", " ±95%"))])
        for preset, row in table.items():
            cells = [row.get(c, {"mean": None, "half": None}) for c in columns]
            writer.writerow([preset, *(v for cell in cells for v in (cell["mean"], cell["half"]))])
    shown = [c for c in SHOWN if any(c in row for row in table.values())]
    lines = [f"Mean ± 95% t-interval over seeds {', '.join(map(str, seeds))} (runs per preset in the last column).", "",
             "| preset | " + " | ".join(shown) + " | runs |", "|---|" + "---:|" * (len(shown) + 1)]  # fmt: skip
    for preset, row in table.items():
        cells = [_fmt(row[c]) if c in row else "–" for c in shown]
        lines.append(f"| {preset} | " + " | ".join(cells) + f" | {row['runs']['n']} |")
    md = out / "ablation.md"
    md.write_text("\n".join(lines) + "\n")
    return md
