"""``lavida leaderboard DIR... --out board.md``: one table of policies x envs from ``lavida eval`` results.

Inputs: result directories (each with ``results.json``), or folders searched recursively for
them. Outputs: ``board.md`` (a Markdown table: one row per policy, one column per env, each
cell ``mean [95% CI low, high]`` of ``--metric``; then what was compared), ``board.csv``
beside it (one line per policy x env: mean, stderr, CI, n, split, env version, dir) and
``board.png`` (grouped bars with 95% CI error bars; matplotlib, Agg backend).

Results on one env are compared only when they were measured on the same problems: the
same env version (and sub-task versions), split, env kwargs (difficulty, image size,
reward weights, ...) and episode indices. Otherwise the command refuses, naming the dirs
and the differing fields, unless ``--allow-mismatch`` (the mismatch is then noted in the
Markdown). Two results with the same policy name on one env are refused too (give them
distinct names with ``lavida eval --name``).

``--metric``: ``reward`` (default), ``correct``, ``components.<name>``,
``task_metrics.<name>`` (e.g. ``task_metrics.acc@0.5``, ``task_metrics.grounding/giou``
for MultiTask) or ``pass@<k>``; a result without it shows ``-``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from agents.cli_args import ArgumentParser, nonempty
from evaluation.results import RESULTS_FILE, get_metric, read_results

__all__ = ["COMPARED_FIELDS", "Entry", "build_parser", "find_mismatches", "load_entries", "main", "render_markdown"]

#: results fields that must agree for two results on one env to be compared
COMPARED_FIELDS: tuple[str, ...] = ("env.version", "env.sub_versions", "env.split", "env.kwargs", "episodes.indices")

Entry = dict[str, Any]  # {"dir": str, "results": dict}


def _field(results: Mapping[str, Any], dotted: str) -> Any:
    node: Any = results
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def load_entries(paths: Sequence[str]) -> list[Entry]:
    """Results of each path: a results dir, a results.json, or a folder searched recursively.

    Other files (``runs/*`` also matches the board's own ``.md``/``.csv``/``.png``) and folders
    without results are skipped with a note on stderr; a path that does not exist, or no
    results at all, is an error.
    """
    entries: list[Entry] = []
    skipped: list[str] = []
    for raw in paths:
        path = Path(raw)
        if (path.is_file() and (path.name == RESULTS_FILE or path.suffix == ".json")) or (path / RESULTS_FILE).is_file():
            files = [path if path.is_file() else path / RESULTS_FILE]
        elif path.is_dir():
            files = sorted(path.rglob(RESULTS_FILE))
            if not files:
                skipped.append(f"{path} (no {RESULTS_FILE} in it or below)")
        elif path.is_file():
            files = []
            skipped.append(f"{path} (not a results file)")
        else:
            raise ValueError(f"{path}: no such file or directory")
        entries += [{"dir": str(f.parent), "results": read_results(f)} for f in files]
    for note in skipped:
        print(f"lavida leaderboard: skipped {note}", file=sys.stderr)
    if not entries:
        raise ValueError(f"no {RESULTS_FILE} in {', '.join(paths)}; run 'lavida eval --out DIR' first")
    return entries


def find_mismatches(entries: Sequence[Entry]) -> list[str]:
    """One message per env whose results differ in a :data:`COMPARED_FIELDS` field, and per duplicate."""
    by_env: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_env[entry["results"]["env"]["id"]].append(entry)
    problems = []
    for env_id, group in sorted(by_env.items()):
        for field in COMPARED_FIELDS:
            values: dict[str, list[str]] = defaultdict(list)
            for entry in group:
                values[repr(_field(entry["results"], field))].append(entry["dir"])
            if len(values) > 1:
                listed = "; ".join(f"{value} in {', '.join(dirs)}" for value, dirs in values.items())
                problems.append(f"{env_id}: {field} differs: {listed}")
        names: dict[str, list[str]] = defaultdict(list)
        for entry in group:
            names[entry["results"]["policy"]["name"]].append(entry["dir"])
        problems += [
            f"{env_id}: policy name {name!r} appears in {len(dirs)} results ({', '.join(dirs)}); "
            "rename with 'lavida eval --name'"
            for name, dirs in names.items() if len(dirs) > 1
        ]
    return problems


def _table(entries: Sequence[Entry], metric: str) -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    """(policies sorted by mean over envs, env ids, {(policy, env): (summary or None, entry)})."""
    cells: dict[tuple[str, str], Any] = {}
    for entry in entries:
        r = entry["results"]
        cells.setdefault((r["policy"]["name"], r["env"]["id"]), (get_metric(r, metric), entry))
    envs = sorted({env for _, env in cells})
    policies = sorted({p for p, _ in cells})

    def score(policy: str) -> float:
        means = [cells[(policy, e)][0]["mean"] for e in envs if (policy, e) in cells and cells[(policy, e)][0]]
        return sum(means) / len(means) if means else float("-inf")

    return sorted(policies, key=lambda p: (-score(p), p)), envs, cells


def _fmt(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "-"
    lo, hi = summary["ci95"]
    return f"{summary['mean']:.3f}" if lo is None else f"{summary['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def render_markdown(entries: Sequence[Entry], metric: str, mismatches: Sequence[str] = ()) -> str:
    """The Markdown leaderboard: table, then what each column was measured on."""
    policies, envs, cells = _table(entries, metric)
    header = ["Policy"]
    for env in envs:
        ns = {cells[(p, env)][1]["results"]["n"] for p in policies if (p, env) in cells}
        header.append(f"{env} (n={ns.pop()})" if len(ns) == 1 else env)
    lines = [
        f"# Leaderboard: {metric}",
        "",
        (f"Mean {metric} per problem (unbiased estimator over the K samples; no interval) on each env's problems "
         "(split, version, episodes: see Setup)." if metric.startswith("pass@") else
         f"Mean {metric} per episode [95% bootstrap CI] on each env's problems (split, version, episodes: see Setup)."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(envs)) + "|",
    ]
    for policy in policies:
        row = [policy] + [_fmt(cells[(policy, e)][0]) if (policy, e) in cells else "" for e in envs]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Setup", ""]
    for env in envs:
        r = next(cells[(p, env)][1]["results"] for p in policies if (p, env) in cells)
        lines.append(
            f"- **{env}**: split `{r['env']['split']}`, env version `{r['env']['version']}`, kwargs "
            f"`{r['env']['kwargs']}`, episodes {r['episodes'].get('indices')}"
        )
    for policy in policies:
        runs = [cells[(policy, e)][1] for e in envs if (policy, e) in cells]
        r = runs[0]["results"]
        sha = (r.get("provenance") or {}).get("git_sha")
        lines.append(f"- `{policy}`: spec `{r['policy']['spec']}`, K={r.get('samples_per_episode')}, "
                     f"git {sha[:10] if sha else 'n/a'}; dirs: {', '.join(x['dir'] for x in runs)}")
    if mismatches:
        lines += ["", "## Warning: compared despite mismatches (--allow-mismatch)", ""]
        lines += [f"- {m}" for m in mismatches]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, entries: Sequence[Entry], metric: str) -> None:
    """One line per policy x env with the metric's mean, stderr, CI and the run's setup."""
    policies, envs, cells = _table(entries, metric)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["policy", "env", "metric", "mean", "stderr", "ci95_lo", "ci95_hi", "n", "split", "env_version", "dir"]
        )
        for policy in policies:
            for env in envs:
                if (policy, env) not in cells:
                    continue
                summary, entry = cells[(policy, env)]
                s = summary or {"mean": None, "stderr": None, "ci95": [None, None], "n": None}
                r = entry["results"]
                writer.writerow([policy, env, metric, s["mean"], s["stderr"], s["ci95"][0], s["ci95"][1], r["n"],
                                 r["env"]["split"], r["env"]["version"], entry["dir"]])


def write_png(path: Path, entries: Sequence[Entry], metric: str) -> None:
    """Grouped bar chart (envs on x, one bar per policy) with 95% CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    policies, envs, cells = _table(entries, metric)
    width = 0.8 / max(1, len(policies))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + len(envs) * (0.6 + 0.45 * len(policies))), 4.8), dpi=120)
    colors = plt.get_cmap("tab10")
    for j, policy in enumerate(policies):
        xs, means, err, tops = [], [], [[], []], []
        for i, env in enumerate(envs):
            summary = cells.get((policy, env), (None,))[0]
            if not summary:
                continue
            mean, (lo, hi) = summary["mean"], summary["ci95"]
            xs.append(i - 0.4 + width * (j + 0.5))
            means.append(mean)
            err[0].append(0.0 if lo is None else max(0.0, mean - lo))
            err[1].append(0.0 if hi is None else max(0.0, hi - mean))
            tops.append(mean if hi is None else max(mean, hi))
        color = colors(sorted(policies).index(policy) % 10)  # by name: the same colour on every chart
        ax.bar(xs, means, width * 0.92, yerr=np.array(err), capsize=4, label=policy, color=color,
               error_kw={"elinewidth": 1.2, "ecolor": "black"})
        for x, m, t in zip(xs, means, tops):  # value above the CI's upper end, clear of the error bar
            ax.annotate(f"{m:.2f}", (x, t), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(envs)))
    ax.set_xticklabels([e.split("/")[-1] for e in envs], fontsize=9)
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    top = max([1.0] + [c[0]["ci95"][1] or c[0]["mean"] for c in cells.values() if c[0]])
    ax.set_ylim(0, top * 1.12)
    ax.set_title(f"LaViDa-R1 Gym leaderboard: {metric}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The ``lavida leaderboard`` argument parser."""
    p = ArgumentParser(
        prog="lavida leaderboard",
        description="Merge 'lavida eval' results into a Markdown table, a CSV and a PNG bar chart.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", type=nonempty, help="result dirs (or folders holding them)")
    p.add_argument("--out", required=True, type=nonempty, help="Markdown file to write; .csv and .png go beside it")
    p.add_argument("--metric", default="reward", type=nonempty,
                   help="reward (default) | correct | components.NAME | task_metrics.NAME | pass@K")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare results on different env versions/splits/kwargs/episodes anyway (noted in the table)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida leaderboard`` command line; bad values exit 2 with one line naming the flag."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run ``lavida leaderboard``; 0 on success, 2 on bad input or refused comparisons."""
    args = parse_args(argv)
    try:
        entries = load_entries(args.dirs)
    except ValueError as exc:
        print(f"lavida leaderboard: {exc}", file=sys.stderr)
        return 2
    mismatches = find_mismatches(entries)
    if mismatches and not args.allow_mismatch:
        print("lavida leaderboard: refusing to compare results measured on different problems:", file=sys.stderr)
        for message in mismatches:
            print(f"  - {message}", file=sys.stderr)
        print("Re-evaluate with matching settings, or pass --allow-mismatch to compare anyway.", file=sys.stderr)
        return 2
    out = Path(args.out)
    out = out if out.suffix == ".md" else out.with_name(out.name + ".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_markdown(entries, args.metric, mismatches)
    out.write_text(text, encoding="utf-8")
    write_csv(out.with_suffix(".csv"), entries, args.metric)
    write_png(out.with_suffix(".png"), entries, args.metric)
    print(text)
    print(f"wrote {out}, {out.with_suffix('.csv')}, {out.with_suffix('.png')}")
    return 0
