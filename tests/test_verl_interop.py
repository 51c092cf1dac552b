"""verl interop: the parquet export and compute_score, called the way verl's reward manager calls it."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lavida_envs.verl import IMAGE_PLACEHOLDER, compute_score, to_verl_parquet

ROOT = Path(__file__).resolve().parents[1]


def _verl_compute_score():
    """Load compute_score by file path, as verl's custom_reward_function.path/name does."""
    import lavida_envs.verl as module

    spec = importlib.util.spec_from_file_location("custom_module", module.__file__)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, "compute_score")


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    import pandas as pd

    path = to_verl_parquet("LaViDa/MultiTask-v0", tmp_path_factory.mktemp("verl") / "train.parquet", "test", 9,
                           image_size=32, difficulty=1)  # fmt: skip
    return pd.read_parquet(path)


def test_parquet_has_verls_rl_dataset_layout(frame):
    from PIL import Image

    assert {"data_source", "prompt", "images", "ability", "reward_model", "extra_info"} <= set(frame.columns)
    row = frame.iloc[0]
    assert row["data_source"] == "LaViDa/MultiTask-v0" and row["reward_model"]["style"] == "rule"
    assert row["prompt"][-1]["role"] == "user" and row["prompt"][-1]["content"].startswith(IMAGE_PLACEHOLDER)
    assert Image.open(io.BytesIO(row["images"][0]["bytes"])).size == (32, 32)
    assert set(frame["ability"]) <= {"visual_math", "grounding", "image_edit"} and len(set(frame["ability"])) > 1


def test_compute_score_called_like_verl_matches_env_step(frame):
    score = _verl_compute_score()
    for _, row in frame.iterrows():
        extra = dict(row["extra_info"])
        kwargs = dict(data_source=row["data_source"], ground_truth=row["reward_model"]["ground_truth"], extra_info=extra)
        best = score(solution_str=extra["solution"], **kwargs)
        worst = score(solution_str="no tags at all", **kwargs)
        assert isinstance(best, float) and worst == 0.0
        # a text response: full reward on text tasks, the format part on edits (no image)
        assert best == (1.0 if row["ability"] != "image_edit" else pytest.approx(0.1)), row["ability"]


def test_compute_score_errors_name_the_problem(frame):
    row = frame.iloc[0]
    extra = dict(row["extra_info"])
    with pytest.raises(ValueError, match="differs from .* gold"):
        compute_score(row["data_source"], extra["solution"], "not the gold", extra)
    with pytest.raises(ValueError, match=r"needs extra_info with \['index'"):
        compute_score(row["data_source"], extra["solution"], row["reward_model"]["ground_truth"], None)
    with pytest.raises(ValueError, match="Nope-v0"):
        compute_score("this:Nope-v0", extra["solution"], None, extra)


def test_readme_trl_and_verl_examples_run_whole(tmp_path):
    # Both python blocks of README "TRL and verl", as a user runs them: the tiny model from the
    # block's own comment, then the whole TRL block (dataset, rewards, 2 GRPOTrainer steps), then
    # the verl block (fewer, smaller problems). One script in a fresh interpreter, no exec here.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## TRL and verl", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2 and "GRPOTrainer" in blocks[0] and "compute_score" in blocks[1]
    assert "custom_reward_function.name=compute_score" in section
    make_model = re.search(r'# python -c "(.*?)"\n', blocks[0]).group(1).replace("'tests'", repr(str(ROOT / "tests")))
    verl = blocks[1].replace("n=256", "n=2").replace("image_size=128", "image_size=32")
    script = "\n".join([make_model, blocks[0], 'print("global_step", trainer.state.global_step)', verl])
    (tmp_path / "readme_example.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "readme_example.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.split("\n")
    assert "[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]" in lines  # the reference solutions' env rewards
    assert "global_step 2" in lines and lines[-2:] == ["1.0", ""]  # GRPO ran max_steps; verl's score
