"""lavida bench likelihood: estimator variance table on the walk model and on a policy checkpoint."""

from __future__ import annotations

import os
import re
import sys

import pytest

from evaluation import bench_likelihood

sys.path.insert(0, os.path.dirname(__file__))
from trainer_tiny import tiny_policy  # noqa: E402


def _rows(text: str) -> dict[str, list[float]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"(mean_field|random_mask|complementary)\s+(\d+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+([\d.]+)", line)
        if m:
            rows[f"{m[1]}@{m[2]}"] = [float(m[3]), float(m[4]), float(m[5])]
    return rows


def test_bench_likelihood_on_a_policy_checkpoint(tmp_path, capsys):
    tiny_policy().save_pretrained(tmp_path / "p")
    argv = ["--policy", str(tmp_path / "p"), "--env", "LaViDa/VisualMath-v0", "--image-size", "32", "--sequences", "3",
            "--seeds", "4", "--passes", "2", "--grad-seeds", "2", "--threads", "1"]  # fmt: skip
    assert bench_likelihood.main(argv) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {"mean_field@1", "random_mask@2", "complementary@2"}, out
    assert rows["mean_field@1"][2] == 0.0  # one fully masked pass: no mask randomness
    assert rows["random_mask@2"][2] > 0 and rows["complementary@2"][2] > 0
    assert "gradient variance at 2 passes" in out and "VisualMath" in out


def test_bench_likelihood_on_the_walk_model(capsys):
    argv = ["--train-steps", "0", "--cache", "", "--sequences", "2", "--seeds", "3", "--passes", "2",
            "--fixed-t", "0.5", "--grad-seeds", "2", "--threads", "1"]  # fmt: skip
    assert bench_likelihood.main(argv) == 0
    out = capsys.readouterr().out
    assert set(_rows(out)) == {"mean_field@1", "random_mask@2", "complementary@2"} and "complementary t=0.5" in out


def test_bench_likelihood_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_likelihood.main(["--policy", str(tmp_path / "nope"), "--seeds", "2"])
    assert exit_info.value.code == 2 and "is not a DiffusionPolicy checkpoint" in capsys.readouterr().err
