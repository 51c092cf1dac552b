"""``lavida plot RUN_DIR... [--out curves.png]``: training curves of ``lavida train`` runs from ``metrics.jsonl``.

Four panels, one line per run, against the run's optimizer step: held-out greedy reward
(``eval/reward``, the points the trainer evaluated), training reward (``reward``: the mean of
the step's rollouts; SFT steps have none), the fraction of zero-variance groups
(``frac_reward_zero_std``; dashed: after answer forcing) and the fraction of forced rows
(``forced_frac``). A run is a folder holding ``metrics.jsonl`` (or that file itself); its
label is the folder's name, or ``DIR=LABEL``; ``DIR@STEP`` starts its steps at ``STEP`` (a run
continued from another's policy). ``lavida demo`` draws its ``curves.png`` with
this, and :func:`bar_chart` draws ``lavida ablate``'s ``ablation.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from agents.cli_args import ArgumentParser, nonempty

__all__ = ["PANELS", "Run", "bar_chart", "curves", "load_run", "main", "plot_runs"]

#: (title, metric key, dashed companion key or None) of each panel
PANELS: tuple[tuple[str, str, str | None], ...] = (
    ("held-out reward (greedy)", "eval/reward", None),
    ("training reward (rollouts)", "reward", None),
    ("zero-variance groups (dashed: after forcing)", "frac_reward_zero_std", "frac_reward_zero_std/after_forcing"),
    ("forced rows", "forced_frac", None),
)

Run = dict[str, Any]  # {"label": str, "path": Path, "rows": list[dict]}


def load_run(spec: str) -> Run:
    """``DIR[=LABEL][@STEP]`` (DIR: a run folder or its ``metrics.jsonl``) -> its label and metric rows.

    ``@STEP`` shifts the run's steps by ``STEP``: a run started from another run's policy drawn from
    where that run stopped (``lavida demo``: ``lavida_r1@300`` after a 300-step SFT start).
    """
    from agents.metrics_log import read_metrics

    head, at, shift = spec.rpartition("@")
    offset = int(shift) if at and shift.isdigit() else 0
    spec = head if at and shift.isdigit() else spec
    raw, sep, label = spec.partition("=")
    path = Path(raw)
    log = path if path.is_file() else path / "metrics.jsonl"
    if not log.is_file():
        raise FileNotFoundError(f"{spec}: no {log} (pass a folder written by lavida train, or its metrics.jsonl)")
    rows = read_metrics(str(log))
    if not rows:
        raise ValueError(f"{log}: no metrics rows yet (is the run still starting?)")
    name = label if sep and label else (log.parent.name or str(log.parent))
    return {"label": name, "path": log, "rows": [{**r, "step": r["step"] + offset} for r in rows]}


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [s for s, _ in points], [float(v) for _, v in points]


def curves(runs: Sequence[Run]) -> list[list[tuple[str, list[int], list[float], str]]]:
    """Per panel of :data:`PANELS`: ``(label, steps, values, line style)`` of every run that logged its metric."""
    out = []
    for _, key, dashed in PANELS:
        lines = []
        for run in runs:
            for metric, style in ((key, "-"), (dashed, "--")):
                steps, values = _series(run["rows"], metric) if metric else ([], [])
                if steps:
                    lines.append((run["label"], steps, values, style))
        out.append(lines)
    return out


def plot_runs(runs: Sequence[Run], out: Path, title: str = "training curves") -> Path:
    """Write the four-panel figure of ``runs`` to ``out`` (PNG); a panel no run has data for says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11.0, 7.5), dpi=110)
    colors = plt.get_cmap("tab10")
    index = {run["label"]: i for i, run in enumerate(runs)}  # one colour per run on every panel
    for ax, (panel, key, _), lines in zip(axes.flat, PANELS, curves(runs)):
        for label, steps, values, style in lines:
            marker = "o" if key == "eval/reward" else None
            ax.plot(steps, values, color=colors(index[label] % 10), ls=style, lw=1.4 if style == "-" else 1.0,
                    marker=marker, markersize=3, label=label if style == "-" else None)  # fmt: skip
        if not lines:
            ax.text(0.5, 0.5, f"no run logged {key}", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def bar_chart(path: Path, labels: Sequence[str], means: Sequence[float | None], halves: Sequence[float | None],
              ylabel: str, title: str) -> Path:  # fmt: skip
    """Horizontal bars ``means`` with ``± halves`` error bars (missing values: no bar, labelled '–')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 0.9 + 0.42 * max(1, len(labels))), dpi=110)
    ys = list(range(len(labels)))[::-1]
    for y, mean, half in zip(ys, means, halves):
        if mean is None or not math.isfinite(mean):
            ax.text(0.01, y, "–", va="center")
            continue
        err = half if half is not None and math.isfinite(half) else 0.0
        ax.barh(y, mean, xerr=err, capsize=4, color="tab:blue", alpha=0.8, error_kw={"ecolor": "black"})
        text = f"{mean:.3f}" + (f" ± {half:.3f}" if err else "")
        ax.annotate(text, (mean + err, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(ylabel)
    ax.set_xlim(0, 1.15)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida plot`` command line; bad values exit 2 with one line naming the flag."""
    p = ArgumentParser(prog="lavida plot", description="Draw training curves of lavida train runs (metrics.jsonl).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", type=nonempty, help="run folders (or metrics.jsonl files); DIR=LABEL names a line, DIR@STEP shifts its steps")
    p.add_argument("--out", default="curves.png", type=nonempty, help="PNG file to write (default curves.png)")
    p.add_argument("--title", default="training curves", type=nonempty, help="figure title")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``lavida plot``; 0 on success, 2 on a missing or unreadable run."""
    args = parse_args(argv)
    try:
        runs = [load_run(spec) for spec in args.runs]
    except (FileNotFoundError, ValueError) as exc:
        print(f"lavida plot: {exc}", file=sys.stderr)
        return 2
    out = plot_runs(runs, Path(args.out), args.title)
    print(f"wrote {out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
