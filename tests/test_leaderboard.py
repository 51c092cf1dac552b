"""lavida leaderboard: Markdown/CSV/PNG outputs and refusal to compare mismatched results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from evaluation.evaluate import main as evaluate
from evaluation.leaderboard import main
from evaluation.results import read_results, write_json


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Oracle/random/constant on Grounding and VisualMath (4 episodes each)."""
    root = tmp_path_factory.mktemp("runs")
    for env in ("Grounding", "VisualMath"):
        for policy in ("oracle", "random", "constant"):
            out = root / env / policy
            assert evaluate(["--policy", policy, "--env", f"LaViDa/{env}-v0", "--episodes", "4", "--out", str(out),
                             "--no-progress"]) == 0
    return root


def _variant(runs: Path, tmp_path: Path, name: str, **changes) -> Path:
    """A copy of the Grounding random run with some results fields changed (e.g. env version)."""
    out = tmp_path / name
    out.mkdir()
    results = read_results(runs / "Grounding/random")
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        results[section][key] = value
    results["policy"]["name"] = name
    write_json(out / "results.json", results)
    return out


def test_board_markdown_csv_and_png(runs, tmp_path):
    board = tmp_path / "board.md"
    assert main([str(runs), "--out", str(board)]) == 0
    text = board.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0] == "| Policy | LaViDa/Grounding-v0 (n=4) | LaViDa/VisualMath-v0 (n=4) |"
    assert lines[1].startswith("| oracle | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000]")
    assert {line.split(" | ")[0] for line in lines[2:]} == {"| random", "| constant"}
    with open(tmp_path / "board.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["policy"] for r in rows} == {"oracle", "random", "constant"}
    oracle = next(r for r in rows if r["policy"] == "oracle" and r["env"] == "LaViDa/Grounding-v0")
    assert (float(oracle["mean"]), oracle["n"], oracle["split"]) == (1.0, "4", "test")
    png = matplotlib.image.imread(tmp_path / "board.png")
    assert png.ndim == 3 and png.shape[0] >= 400 and png.shape[1] >= 600
    assert png[..., :3].std() > 0.05  # not a blank canvas


def test_other_metric_and_missing_cells(runs, tmp_path):
    assert main([str(runs), "--out", str(tmp_path / "acc"), "--metric", "task_metrics.acc@0.5"]) == 0
    text = (tmp_path / "acc.md").read_text()
    assert "| oracle | 1.000 [1.000, 1.000] | - |" in text  # VisualMath has no box metric


def test_refuses_mismatched_env_versions_naming_dirs_and_field(runs, tmp_path, capsys):
    other = _variant(runs, tmp_path, "random-v1", env__version="1")
    code = main([str(runs / "Grounding"), str(other), "--out", str(tmp_path / "b.md")])
    assert code == 2 and not (tmp_path / "b.md").exists()
    err = capsys.readouterr().err
    assert "env.version differs" in err and str(other) in err and str(runs / "Grounding/random") in err
    assert "--allow-mismatch" in err
    assert main([str(runs / "Grounding"), str(other), "--out", str(tmp_path / "b.md"), "--allow-mismatch"]) == 0
    assert "env.version differs" in (tmp_path / "b.md").read_text()
    assert (tmp_path / "b.png").is_file() and (tmp_path / "b.csv").is_file()


@pytest.mark.parametrize(
    "change, field",
    [({"env__split": "train"}, "env.split"), ({"env__kwargs": {"difficulty": 3}}, "env.kwargs"),
     ({"episodes__indices": [4, 7]}, "episodes.indices")],
)
def test_refuses_other_splits_kwargs_and_problem_sets(runs, tmp_path, capsys, change, field):
    other = _variant(runs, tmp_path, "variant", **change)
    assert main([str(runs / "Grounding"), str(other), "--out", str(tmp_path / "b.md")]) == 2
    assert f"{field} differs" in capsys.readouterr().err


def test_refuses_duplicate_policy_names_and_bad_dirs(runs, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_text((runs / "Grounding/random/results.json").read_text())
    assert main([str(runs / "Grounding"), str(copy), "--out", str(tmp_path / "b.md")]) == 2
    assert "policy name 'random' appears in 2 results" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "b.md")]) == 2
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/results.json").write_text(json.dumps({"schema_version": 1}))
    assert main([str(tmp_path / "broken"), "--out", str(tmp_path / "b.md")]) == 2
    assert "missing field" in capsys.readouterr().err


def test_a_glob_over_runs_skips_the_boards_own_files_with_a_note(runs, tmp_path, capsys):
    first = tmp_path / "board.md"
    assert main([str(runs / "Grounding" / p) for p in ("oracle", "random")] + ["--out", str(first)]) == 0
    again = [str(runs / "Grounding" / p) for p in ("oracle", "random")] + [str(first), str(first.with_suffix(".csv"))]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*again, str(empty), "--out", str(tmp_path / "again.md")]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "board.csv (not a results file)" in err and "empty (no results.json" in err
    assert main([str(first), "--out", str(tmp_path / "none.md")]) == 2  # nothing left to rank


def test_a_pass_at_k_board_does_not_promise_an_interval(tmp_path):
    out = tmp_path / "k"
    assert evaluate(["--policy", "random", "--env", "LaViDa/VisualMath-v0", "--episodes", "3", "--samples", "2",
                     "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert main([str(out), "--out", str(tmp_path / "p.md"), "--metric", "pass@2"]) == 0
    text = (tmp_path / "p.md").read_text()
    assert "no interval" in text and "bootstrap CI" not in text
    assert main([str(out), "--out", str(tmp_path / "r.md")]) == 0 and "bootstrap CI" in (tmp_path / "r.md").read_text()
