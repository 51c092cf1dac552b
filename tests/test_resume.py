"""Resume: a run killed after N steps and resumed from its checkpoint equals an uninterrupted run at N + k."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from agents.checkpoint import checkpoint_dir
from agents.config import load_config
from agents.metrics_log import MetricsLog
from agents.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
from trainer_tiny import tiny_policy  # noqa: E402

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")
WALL_CLOCK = {"time", "tokens_per_s", "cpu_time"}


def state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    # 1 SFT step + 3 RL steps; every RL batch serves 2 updates, so the checkpoint at step 2
    # falls inside a batch (the cached rollouts must come back too); forcing coins and tree
    # search use their own RNG streams.
    settings = dict(sft_steps=1, max_steps=3, updates_per_batch=2, forcing_prob=0.5, save_every=2,
                    lr_scheduler_type="linear", prompts_per_step=1, sft_per_step=1)  # fmt: skip
    whole = load_config(TINY, output_dir=str(tmp_path / "whole"), **settings)
    whole_trainer = Trainer(whole, policy=tiny_policy())
    whole_trainer.train()

    broken = load_config(TINY, output_dir=str(tmp_path / "broken"), **settings)
    killed = Trainer(broken, policy=tiny_policy())
    killed.train(stop_at=3)  # writes checkpoint-2, then "dies" after step 3 (its row must be dropped)
    assert len(MetricsLog.read(str(tmp_path / "broken" / "metrics.jsonl"))) == 3

    at_2 = checkpoint_dir(str(tmp_path / "broken"), 2)
    resumed_config = load_config(TINY, output_dir=str(tmp_path / "broken"), resume_from=at_2, **settings)
    resumed = Trainer(resumed_config, policy=tiny_policy(seed=1))  # other init: the checkpoint must overwrite it
    assert resumed.step == 2
    resumed.train()

    expected = MetricsLog.read(str(tmp_path / "whole" / "metrics.jsonl"))
    got = MetricsLog.read(str(tmp_path / "broken" / "metrics.jsonl"))
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    assert comparable(got) == comparable(expected)
    a, b = state(whole_trainer), state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_a_missing_checkpoint_names_the_file(tmp_path):
    config = load_config(TINY, output_dir=str(tmp_path / "run"), resume_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="trainer_state.pt not found"):
        Trainer(config, policy=tiny_policy())
