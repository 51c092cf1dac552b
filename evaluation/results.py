"""Results files of ``lavida eval``: the per-episode ``samples.jsonl`` rows and the ``results.json`` summary.

``samples.jsonl`` -- one JSON object per episode (appended and flushed as episodes finish)::

    {"index": int, "task": str, "difficulty": int, "prompt": str,
     "reward": mean over samples, "correct": share of correct samples, "num_correct": int,
     "samples": [{"action": {"text": str | None, "image": {"blake2b", "shape", "dtype"} | None},
                  "parsed": ..., "reward": float, "reward_components": {name: float},
                  "correct": bool, "metrics": {name: float}, "error": str | None,
                  "box": {"pred": [x1, y1, x2, y2] | None, "gold": [...]}  # grounding only
                 }, ...]}

Images are stored as a hash and a shape, never as pixels. A truncated last line (a killed
run) is ignored by :func:`read_rows`; a bad line elsewhere is an error naming file and line.

``results.json`` (:func:`summarize_rows` + the run's metadata) holds ``env`` (id, kwargs,
version, split), ``episodes``, ``policy`` (spec, name, class, kwargs, decoding settings),
``samples_per_episode``, ``seed``, ``n``, ``metrics`` (``reward``, ``correct``,
``components.<name>``, ``task_metrics.<name>``, named ``<task>/<name>`` for a mixture env:
each ``{"mean", "stderr", "ci95", "n"}`` from :mod:`evaluation.metrics`), ``pass_at_k``
(K > 1), ``breakdowns`` (per difficulty and per task), ``errors``, ``provenance`` (package versions, git sha) and ``run`` (wall
time, argv, batch size, processes: the only part allowed to differ between two runs of
the same evaluation, see :func:`comparable`).

Per-episode values are means over the episode's K samples. Task metrics are the numeric
``info["metrics"]`` keys (a sample of a task that lacks a key its task reports elsewhere
counts 0: the scorer stopped before computing it); grounding adds ``acc@0.5``,
``acc@0.75``, ``giou`` and ``ciou`` from :func:`lavida_envs.rewards.grounding.grounding_metrics`
(``ciou`` is a ratio of sums: its CI is a seeded bootstrap over episodes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from dataclasses import asdict, is_dataclass
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from evaluation.metrics import breakdown, pass_at_k_table, summarize

__all__ = [
    "RESULTS_FILE",
    "SAMPLES_FILE",
    "SCHEMA_VERSION",
    "VOLATILE_KEYS",
    "append_row",
    "comparable",
    "decoding_settings",
    "describe_action",
    "env_metadata",
    "get_metric",
    "git_sha",
    "jsonable",
    "merge_rows",
    "package_versions",
    "read_results",
    "read_rows",
    "summarize_rows",
    "summary_line",
    "write_json",
    "write_rows",
]

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
#: results.json sections that may differ between two runs of the same evaluation
VOLATILE_KEYS: tuple[str, ...] = ("run",)
PACKAGES = ("lavida-r1-gym", "torch", "transformers", "gymnasium", "math-verify", "numpy", "accelerate", "pycocotools")
_REQUIRED = ("schema_version", "env", "policy", "n", "metrics")


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and sets turned into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)[:500]


def _image_digest(image: Any) -> dict[str, Any]:
    arr = np.ascontiguousarray(np.asarray(image))
    return {
        "blake2b": hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest(),
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
    }


def describe_action(action: Any) -> dict[str, Any]:
    """An action as JSON: its text, and for an image a hash and shape (never the pixels)."""
    if isinstance(action, Mapping):
        text = action.get("text")
        image = action.get("image")
        return {
            "text": text if isinstance(text, str) or text is None else repr(text)[:500],
            "image": None if image is None else _image_digest(image),
        }
    if isinstance(action, str):
        return {"text": action, "image": None}
    if isinstance(action, np.ndarray):
        return {"text": None, "image": _image_digest(action)}
    return {"text": None, "image": None, "repr": repr(action)[:500]}


# ----- samples.jsonl -------------------------------------------------------------------
def append_row(handle: Any, row: Mapping[str, Any]) -> None:
    """Write one episode row as a JSON line and flush it to disk."""
    handle.write(json.dumps(row, sort_keys=True) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Episode rows of a samples file; a truncated last line (killed run) is dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no newline after it: the write was cut off
                break
            raise ValueError(
                f"{path}: line {number} is not valid JSON ({exc}); delete that line (lavida eval --resume then "
                "redoes its episode) or rerun lavida eval with --overwrite to start over"
            )
        if not isinstance(row, dict) or not isinstance(row.get("index"), int):
            raise ValueError(f"{path}: line {number} has no integer field 'index'; not a lavida samples file")
        rows.append(row)
    return rows


def write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` as a samples file atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, path)


def merge_rows(*groups: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several samples files, one per episode index (first seen wins), sorted by index."""
    merged: dict[int, dict[str, Any]] = {}
    for rows in groups:
        for row in rows:
            merged.setdefault(int(row["index"]), dict(row))
    return [merged[i] for i in sorted(merged)]


# ----- summaries -----------------------------------------------------------------------
def _episode_mean(row: Mapping[str, Any], getter) -> float | None:
    values = [getter(s) for s in row["samples"]]
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _numeric(d: Any) -> dict[str, float]:
    if not isinstance(d, Mapping):
        return {}
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _keyed_summaries(rows: Sequence[Mapping[str, Any]], field: str, seed: int, prefix_task: bool) -> dict[str, Any]:
    """Per-name summaries of a per-sample dict field; names missing in a sample of the same task count 0."""
    names_by_task: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        for s in row["samples"]:
            names_by_task[row["task"]].update(_numeric(s.get(field)))
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for name in sorted(names_by_task[row["task"]]):
            key = f"{row['task']}/{name}" if prefix_task else name
            values[key].append(_episode_mean(row, lambda s: _numeric(s.get(field)).get(name, 0.0)))
    return {key: summarize(vals, seed=seed) for key, vals in sorted(values.items())}


def _ratio_summary(num: np.ndarray, den: np.ndarray, point: float, seed: int, n_boot: int = 2000) -> dict[str, Any]:
    """Summary of a ratio of sums (e.g. cIoU) with a seeded bootstrap over episodes."""
    n = int(num.size)
    if n < 2:
        return {"mean": point, "stderr": 0.0, "ci95": [point, point], "n": n}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    dens = den[idx].sum(axis=1)
    ratios = np.where(dens > 0, num[idx].sum(axis=1) / np.where(dens > 0, dens, 1.0), 0.0)
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return {"mean": point, "stderr": float(ratios.std(ddof=1)), "ci95": [float(lo), float(hi)], "n": n}


def _grounding_summaries(rows: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """acc@0.5, acc@0.75, gIoU (per-episode means) and cIoU (ratio of sums) of the grounding rows."""
    from lavida_envs.rewards.grounding import box_iou, grounding_metrics, intersection_union

    rows = [r for r in rows if any(isinstance(s.get("box"), Mapping) for s in r["samples"])]
    if not rows:
        return {}
    preds, golds, per_episode, inters, unions = [], [], defaultdict(list), [], []
    for row in rows:
        ious, inter, union = [], 0.0, 0.0
        for s in row["samples"]:
            pred, gold = s["box"]["pred"], s["box"]["gold"]
            preds.append(pred)
            golds.append(gold)
            ious.append(0.0 if pred is None else box_iou(pred, gold))
            i, u = intersection_union(pred, gold)
            inter, union = inter + i, union + u
        per_episode["acc@0.5"].append(float(np.mean([v >= 0.5 for v in ious])))
        per_episode["acc@0.75"].append(float(np.mean([v >= 0.75 for v in ious])))
        per_episode["giou"].append(float(np.mean(ious)))
        inters.append(inter)
        unions.append(union)
    point = grounding_metrics(preds, golds)
    out = {name: summarize(vals, seed=seed) for name, vals in per_episode.items()}
    out["ciou"] = _ratio_summary(np.asarray(inters), np.asarray(unions), float(point["ciou"]), seed)
    return out


def summarize_rows(
    rows: Sequence[Mapping[str, Any]], samples_per_episode: int, seed: int = 0, prefix_task: bool = False
) -> dict[str, Any]:
    """``n``, ``metrics``, ``pass_at_k``, ``breakdowns`` and ``errors`` of episode rows (sorted by index).

    ``prefix_task`` (mixture envs): component and task-metric names become ``<task>/<name>``.
    """
    rows = sorted(rows, key=lambda r: int(r["index"]))
    grounding = {(f"grounding/{k}" if prefix_task else k): v for k, v in _grounding_summaries(rows, seed).items()}
    flat = [{k: r[k] for k in ("reward", "correct", "difficulty", "task")} for r in rows]
    metrics = {
        "reward": summarize([r["reward"] for r in rows], seed=seed),
        "correct": summarize([r["correct"] for r in rows], seed=seed),
        "components": _keyed_summaries(rows, "reward_components", seed, prefix_task),
        "task_metrics": {**_keyed_summaries(rows, "metrics", seed, prefix_task), **grounding},
    }
    k = int(samples_per_episode)
    pass_k = pass_at_k_table([int(r["num_correct"]) for r in rows], k) if k > 1 and rows else None
    errors = Counter(str(s["error"])[:160] for r in rows for s in r["samples"] if s.get("error"))
    return {
        "n": len(rows),
        "metrics": metrics,
        "pass_at_k": pass_k,
        "breakdowns": {
            by: {m: breakdown(flat, by, m, seed=seed) for m in ("reward", "correct")} for by in ("difficulty", "task")
        },
        "errors": {
            "samples_with_error": int(sum(errors.values())),
            "most_common": [{"error": e, "count": c} for e, c in errors.most_common(5)],
        },
    }


# ----- provenance -----------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None if missing)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    """The commit of this checkout, or None (not a git checkout, or git unavailable)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def decoding_settings(policy: Any) -> dict[str, Any] | None:
    """``policy.decoding_settings()`` (or its ``decoding`` dataclass) as JSON, or None."""
    settings = getattr(policy, "decoding_settings", None)
    if callable(settings):
        settings = settings()
    if settings is None:
        decoding = getattr(policy, "decoding", None)
        settings = asdict(decoding) if is_dataclass(decoding) and not isinstance(decoding, type) else decoding
    return jsonable(settings) if isinstance(settings, Mapping) else None


def env_metadata(env: Any) -> dict[str, Any]:
    """Env version (and sub-task versions), nondeterminism flag and dataset size."""
    base = env.unwrapped
    subs = getattr(base, "sub_envs", None)
    return {
        "version": str(getattr(base, "env_version", "0")),
        "sub_versions": {k: str(v.env_version) for k, v in subs.items()} if isinstance(subs, Mapping) else None,
        "nondeterministic": bool(getattr(base, "nondeterministic", False)),
        "num_problems": base.num_problems() if hasattr(base, "num_problems") else None,
    }



# ----- results.json ----------------------------------------------------------------------
def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_results(path: str | Path) -> dict[str, Any]:
    """A results.json (or the one in directory ``path``), checked for the fields leaderboards need."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no results file; run 'lavida eval ... --out {path.parent}' first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read results JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; not a lavida results file")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {data['schema_version']!r}, this lavida reads {SCHEMA_VERSION}")
    return data


def comparable(results: Mapping[str, Any]) -> dict[str, Any]:
    """``results`` without the sections that may differ between identical evaluations (run info)."""
    return {k: v for k, v in results.items() if k not in VOLATILE_KEYS}


def get_metric(results: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The summary of metric ``name`` (``reward``, ``correct``, ``components.X``, ``task_metrics.X``, ``pass@k``)."""
    if name.startswith("pass@"):
        value = (results.get("pass_at_k") or {}).get(name)
        return None if value is None else {"mean": value, "stderr": None, "ci95": [None, None], "n": results.get("n")}
    node: Any = results.get("metrics", {})
    head, _, tail = name.partition(".")
    node = node.get(head) if isinstance(node, Mapping) else None
    if tail:
        node = node.get(tail) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping) or "mean" not in node:
        return None
    mean = node["mean"]
    return None if mean is None or (isinstance(mean, float) and math.isnan(mean)) else dict(node)


def summary_line(results: Mapping[str, Any]) -> str:
    """One line: env, policy, n, reward and accuracy with CIs, pass@k."""
    m = results["metrics"]
    parts = [f"{results['env']['id']} | {results['policy']['name']} | n={results['n']}"]
    for name in ("reward", "correct"):
        s = m[name]
        if s["mean"] is not None:
            parts.append(f"{name} {s['mean']:.4f} [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]")
    parts += [f"{k} {v:.4f}" for k, v in (results.get("pass_at_k") or {}).items()]
    return " | ".join(parts)
