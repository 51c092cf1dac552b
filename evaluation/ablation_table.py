"""The ablation table: per preset, mean and 95% t-interval over seeds of each run's numbers.

A run is ``OUT/PRESET/seedS/metrics.jsonl`` written by ``lavida train``. Per run:

* ``before/<k>`` and ``after/<k>`` for the held-out ``eval/reward`` (mean over the run's
  tasks) and ``eval/reward/<task>``: the first and the last evaluation, and ``delta`` of
  the mean;
* the mean over RL steps of ``reward``, ``frac_reward_zero_std`` (before forcing),
  ``frac_reward_zero_std/after_forcing``, ``forced_frac``, ``kl``, ``grad_norm``,
  ``tree_nfe``; the maximum ``grad_norm``; the count of ``skipped`` steps and
  ``collapse_alarm`` s; ``time`` (s, the last step's) and ``cpu_time`` (the last step's process CPU seconds
  of the training loop, held-out evaluations after it excluded).

Intervals use Student's t with ``n - 1`` degrees of freedom (3 seeds: mean ± 4.30 · s/√3).
``claims.md`` sets each claim of the paper (``CLAIMS``) against its pair of presets (or, where that pair
has no runs, the CPU testbed's pair for it, ``TESTBED_PAIRS``): a verdict
row per claim (the paper's number, our difference on the deciding metric with a Welch 95%
interval, reproduced / contradicted / inconclusive / not measurable here), then both means and
the difference for every metric of the claim.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

__all__ = ["CLAIMS", "TASKS", "TESTBED_PAIRS", "VERDICTS", "diff_ci", "mean_ci", "run_numbers", "verdict", "write_claims", "write_table"]

TASKS = ("visual_math", "grounding", "image_edit")
_STEP_MEANS = ("reward", "frac_reward_zero_std", "frac_reward_zero_std/after_forcing", "forced_frac", "kl",
               "grad_norm", "tree_nfe")  # fmt: skip
#: Columns of the Markdown table (all columns go to CSV/JSON).
SHOWN = ("after/eval/reward", "delta/eval/reward", *(f"after/eval/reward/{t}" for t in TASKS), "reward",
         "frac_reward_zero_std", "frac_reward_zero_std/after_forcing", "forced_frac", "kl", "max_grad_norm",
         "tree_nfe", "collapse_alarm", "time", "cpu_time")  # fmt: skip


#: (claim, preset A, preset B, metrics compared): the paper's claims as preset pairs.
CLAIMS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("SFT rows instead of KL keep RL stable", "demo", "ablate_kl",
     ("after/eval/reward", "delta/eval/reward", "max_grad_norm", "collapse_alarm")),
    ("SFT rows vs no regularizer", "demo", "ablate_grpo_only", ("after/eval/reward", "delta/eval/reward", "max_grad_norm")),
    ("Answer forcing cuts zero-variance groups", "demo", "ablate_no_forcing",
     ("frac_reward_zero_std/after_forcing", "after/eval/reward/visual_math", "after/eval/reward/grounding")),
    ("Forcing every triggered group hurts", "demo", "ablate_forcing_always",
     ("after/eval/reward", "forced_frac", "frac_reward_zero_std/after_forcing")),
    ("Tree search helps editing at equal model calls", "ablate_single_task_image_edit",
     "ablate_single_task_image_edit_no_tree", ("after/eval/reward/image_edit", "reward")),
    ("Tree search in the task mix", "demo", "ablate_no_tree", ("after/eval/reward/image_edit", "reward")),
    ("Complementary vs random masks", "demo", "ablate_random_mask", ("after/eval/reward", "max_grad_norm")),
    ("Complementary vs mean field", "demo", "ablate_mean_field", ("after/eval/reward", "max_grad_norm")),
    ("Self-distillation gamma 0.5 vs 0", "demo", "ablate_gamma0", ("after/eval/reward", "delta/eval/reward")),
    ("Multi-task RL vs visual math alone", "demo", "ablate_single_task_visual_math", ("after/eval/reward/visual_math",)),
    ("Multi-task RL vs grounding alone", "demo", "ablate_single_task_grounding", ("after/eval/reward/grounding",)),
    ("Multi-task RL vs editing alone", "demo", "ablate_single_task_image_edit", ("after/eval/reward/image_edit",)),
    ("LaViDa-R1 recipe vs the d1 preset", "demo", "d1", ("after/eval/reward", "delta/eval/reward", "max_grad_norm")),
    ("RL beyond imperfect SFT references", "testbed_teacher", "testbed_teacher_sft",
     ("after/eval/reward", "delta/eval/reward", "cpu_time")),
    ("RL on the verifier alone beyond imperfect SFT references", "testbed_teacher_rl_only", "testbed_teacher_sft",
     ("after/eval/reward", "delta/eval/reward", "cpu_time")),
)  # fmt: skip

#: claim -> the CPU testbed's preset pair for it (docs/testbed.md, "Tree search and multi-task RL"), used
#: where the claim's own pair has no runs (the demo-scale presets stay at the floor on CPU).
TESTBED_PAIRS: dict[str, tuple[str, str]] = {
    "Tree search helps editing at equal model calls": ("testbed_edit", "testbed_edit_no_tree"),
    "Multi-task RL vs visual math alone": ("testbed_mix", "testbed_mix_visual_math"),
    "Multi-task RL vs grounding alone": ("testbed_mix", "testbed_mix_grounding"),
}

#: claim -> (what the paper reports, the metric that decides it, the sign of A - B the paper predicts).
#: Paper numbers from arXiv 2602.14147 as recovered (PAPER: the sources' ablation tables).
VERDICTS: dict[str, tuple[str, str, int]] = {
    "SFT rows instead of KL keep RL stable": ("GRPO+KL diverges, unified loss stable with higher reward (Fig. 5, curves only)",
                                              "after/eval/reward", +1),
    "SFT rows vs no regularizer": ("pure GRPO diverges (Fig. 5, curves only)", "after/eval/reward", +1),
    "Answer forcing cuts zero-variance groups": ("forcing 10% vs 0%: MathVista 58.9 vs 57.8, Lisa 65.0 vs 63.1",
                                                 "frac_reward_zero_std/after_forcing", -1),
    "Forcing every triggered group hurts": ("100% forcing collapses: MathVista 4.1 vs 58.9", "after/eval/reward", +1),
    "Tree search helps editing at equal model calls": ("ImgEdit 3.90 with tree search vs 3.84-3.85 without",
                                                       "after/eval/reward/image_edit", +1),
    "Tree search in the task mix": ("ImgEdit 3.90 vs 3.84-3.85", "after/eval/reward/image_edit", +1),
    "Complementary vs random masks": ("complementary credited as key (numbers not recovered)", "after/eval/reward", +1),
    "Complementary vs mean field": ("complementary credited as key (numbers not recovered)", "after/eval/reward", +1),
    "Self-distillation gamma 0.5 vs 0": ("gamma 0.5 best of {0, 0.5, 1} (numbers not recovered)", "after/eval/reward", +1),
    "Multi-task RL vs visual math alone": ("one unified model for all tasks (no single-task numbers)",
                                           "after/eval/reward/visual_math", +1),
    "Multi-task RL vs grounding alone": ("one unified model for all tasks (no single-task numbers)",
                                         "after/eval/reward/grounding", +1),
    "Multi-task RL vs editing alone": ("one unified model for all tasks (no single-task numbers)",
                                       "after/eval/reward/image_edit", +1),
    "LaViDa-R1 recipe vs the d1 preset": ("LaViDa-R1 above d1-style baselines (main tables)", "after/eval/reward", +1),
    "RL beyond imperfect SFT references": ("RL with verifiable rewards goes beyond the SFT data (the thesis; no "
                                           "numbers): here vs continued SFT on a wrong teacher at equal CPU time",
                                           "after/eval/reward", +1),
    "RL on the verifier alone beyond imperfect SFT references": ("as above; the RL arm without the teacher's SFT rows",
                                                                 "after/eval/reward", +1),
}


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """The finite values (None and NaN/inf dropped) as float64."""
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)


def diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """``{"diff", "lo", "hi"}``: mean(a) - mean(b) with a Welch t interval (None if a side has < 2 values)."""
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return {"diff": None, "lo": None, "hi": None}
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return {"diff": diff, "lo": diff, "hi": diff}
    dof = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return {"diff": diff, "lo": diff - half, "hi": diff + half}


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """``{"mean", "half", "n"}``: the mean and the half-width of its t confidence interval."""
    x = _finite(values)
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
    series = {key: [r[key] for r in steps if isinstance(r.get(key), (int, float))] for key in _STEP_MEANS}
    out.update({key: float(np.mean(values)) for key, values in series.items() if values})
    out["max_grad_norm"] = float(max(series["grad_norm"])) if series["grad_norm"] else math.nan
    out["skipped"] = float(sum(r.get("skipped", 0.0) for r in steps))
    out["collapse_alarm"] = float(sum(r.get("collapse_alarm", 0.0) for r in steps))
    out["time"] = float(steps[-1]["time"]) if steps else math.nan
    cpu = [r["cpu_time"] for r in steps if isinstance(r.get("cpu_time"), (int, float))]
    out["cpu_time"] = float(cpu[-1]) if cpu else math.nan
    return out


def _fmt(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "–"
    if summary["half"] is None or not math.isfinite(summary["half"]):
        return f"{summary['mean']:.3g}"
    return f"{summary['mean']:.3f} ± {summary['half']:.3f}"


def earlier_runs(path: Path) -> dict[str, list[dict[str, float]]]:
    """The per-run numbers of an earlier sweep's ``ablation.json`` (its ``runs``), by preset."""
    try:
        runs = json.loads(Path(path).read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--merge {path}: not an ablation.json with a 'runs' object ({exc})") from None
    if not isinstance(runs, dict) or not all(isinstance(v, list) for v in runs.values()):
        raise ValueError(f"--merge {path}: 'runs' must map each preset to a list of runs")
    return runs


def write_table(out: Path, presets: Sequence[str], seeds: Sequence[int],
                earlier: dict[str, list[dict[str, float]]] | None = None) -> Path:
    """Summarize ``out/PRESET/seedS`` into ``out/ablation.{json,csv,md}``; returns the ``.md`` path.

    A preset with no run under ``out`` takes its runs from ``earlier`` (an earlier sweep's per-run numbers).
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    per_run: dict[str, list[dict[str, float]]] = {}
    merged = []
    for preset in presets:
        runs = [run_numbers(p) for s in seeds if (p := out / preset / f"seed{s}" / "metrics.jsonl").is_file()]
        if not runs and (earlier or {}).get(preset):
            runs, merged = list(earlier[preset]), [*merged, preset]  # type: ignore[index]
        per_run[preset] = runs
        keys = sorted({k for r in runs for k in r})
        table[preset] = {k: mean_ci([r.get(k, math.nan) for r in runs]) for k in keys}
        table[preset]["runs"] = {"mean": len(runs), "half": None, "n": len(runs)}
    (out / "ablation.json").write_text(json.dumps({"seeds": list(seeds), "table": table, "runs": per_run}, indent=2))
    write_claims(out / "claims.md", per_run)
    columns = sorted({k for row in table.values() for k in row})
    with open(out / "ablation.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["preset", *(f"{c}{suffix}" for c in columns for suffix in ("", " ±95%"))])
        for preset, row in table.items():
            cells = [row.get(c, {"mean": None, "half": None}) for c in columns]
            writer.writerow([preset, *(v for cell in cells for v in (cell["mean"], cell["half"]))])
    shown = [c for c in SHOWN if any(c in row for row in table.values())]
    lines = [f"Mean ± 95% t-interval over seeds {', '.join(map(str, seeds))} (runs per preset in the last column).", "",
             *([f"Runs of an earlier sweep (--merge): {', '.join(merged)}.", ""] if merged else []),
             "| preset | " + " | ".join(shown) + " | runs |", "|---|" + "---:|" * (len(shown) + 1)]  # fmt: skip
    for preset, row in table.items():
        cells = [_fmt(row[c]) if c in row else "–" for c in shown]
        lines.append(f"| {preset} | " + " | ".join(cells) + f" | {row['runs']['n']} |")
    md = out / "ablation.md"
    md.write_text("\n".join(lines) + "\n")
    write_chart(out / "ablation.png", table, seeds)
    return md


def write_chart(path: Path, table: dict[str, dict[str, dict[str, Any]]], seeds: Sequence[int]) -> Path:
    """``ablation.png``: each preset's held-out reward after RL, mean with its 95% t-interval over seeds."""
    from evaluation.plot import bar_chart

    cells = [row.get("after/eval/reward", {"mean": None, "half": None}) for row in table.values()]
    return bar_chart(path, [f"{p} ({row['runs']['n']} runs)" for p, row in table.items()], [c["mean"] for c in cells],
                     [c["half"] for c in cells], "held-out reward after RL (mean, 95% t-interval)",
                     f"lavida ablate: seeds {', '.join(map(str, seeds))}")  # fmt: skip


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def verdict(d: dict[str, Any], sign: int) -> str:
    """``reproduced`` when the difference CI excludes 0 on the paper's side, ``contradicted`` on the other side,
    ``inconclusive (CI includes 0)`` otherwise, ``not measurable here`` without an interval."""
    if d["diff"] is None or d["lo"] is None:
        return "not measurable here"
    if (d["lo"] > 0 and sign > 0) or (d["hi"] < 0 and sign < 0):
        return "reproduced"
    if (d["hi"] < 0 and sign > 0) or (d["lo"] > 0 and sign < 0):
        return "contradicted"
    return "inconclusive (CI includes 0)"


def _measured_pair(claim: str, a: str, b: str, per_run: dict[str, list[dict[str, float]]]) -> tuple[str, str, str]:
    """``(A, B, "")``: the claim's own presets, or its TESTBED_PAIRS pair where only that one has runs on both
    sides; ``(a, b, what is missing)`` where neither pair has."""
    pairs = [(a, b), *([TESTBED_PAIRS[claim]] if claim in TESTBED_PAIRS else [])]
    for x, y in pairs:
        if per_run.get(x) and per_run.get(y):
            return x, y, ""
    return a, b, ", or ".join(f"{x} or {y}" for x, y in pairs)


def write_claims(path: Path, per_run: dict[str, list[dict[str, float]]]) -> Path:
    """``claims.md``: one verdict row per claim, then each claim whose two presets have runs, metric by metric."""
    summary = ["| claim | paper | metric | ours: A − B [95% Welch CI] | verdict |", "|---|---|---|---|---|"]
    lines = ["| claim | metric | A | B | A − B [95% Welch CI] |", "|---|---|---|---|---|"]
    for claim, a, b, metrics in CLAIMS:
        paper, key, sign = VERDICTS.get(claim, ("", metrics[0], +1))
        a, b, missing = _measured_pair(claim, a, b, per_run)
        if missing:
            summary.append(f"| {claim} | {paper} | {key} | – ({missing} not run) | not measurable here |")
            continue
        for metric in metrics:
            xa = [r.get(metric, math.nan) for r in per_run[a]]
            xb = [r.get(metric, math.nan) for r in per_run[b]]
            d = diff_ci(xa, xb)
            cell = "–" if d["diff"] is None else f"{d['diff']:+.3f} [{_num(d['lo'])}, {_num(d['hi'])}]"
            lines.append(f"| {claim} | {metric} | {a}: {_fmt(mean_ci(xa))} | {b}: {_fmt(mean_ci(xb))} | {cell} |")
            if metric == key:
                summary.append(f"| {claim} | {paper} | {key} | {cell} | {verdict(d, sign)} |")
    text = "## Verdicts\n\n" + "\n".join(summary) + "\n\n## Every metric\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)
    return path
