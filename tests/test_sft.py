"""SFT: reference targets, batch layout, loss decreases on a tiny run, `lavida train --phase sft`."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import lavida_envs  # noqa: F401
from agents.diffusion.codec import PaletteCodec
from agents.diffusion.policy import DecodingConfig, DiffusionPolicy
from agents.config import parse_config
from agents.losses import sft_loss
from agents.metrics_log import MetricsLog
from agents.sft import build_sft_batch, reference_action, sft_examples
from agents.trainer import Trainer
from agents.trainer import main as train_main


_TINY = DiffusionPolicy.tiny  # bound before any test patches it


def tiny_policy() -> DiffusionPolicy:
    decoding = DecodingConfig(gen_length=32, steps=8, block_length=8, task_gen_length={"image_edit": 8})
    return _TINY(
        seed=0, codec=PaletteCodec(grid=4, image_size=32), decoding=decoding,
        hidden_size=32, num_layers=1, num_heads=2, image_size=32, patch_size=16,
    )  # fmt: skip


def test_reference_action_of_image_edit_carries_the_target_image():
    env = gym.make("LaViDa/ImageEdit-v0", difficulty=1)
    _, info = env.reset(options={"index": 0})
    target = reference_action(env, info)
    assert target["text"] == info["solution"] and target["image"].shape == (128, 128, 3)
    math_env = gym.make("LaViDa/VisualMath-v0", difficulty=1)
    _, info = math_env.reset(options={"index": 0})
    assert reference_action(math_env, info) == info["solution"]


def test_sft_batch_holds_targets_with_eos_padding_and_image_codes():
    policy = tiny_policy()
    math_obs, math_target, _ = next(sft_examples("LaViDa/VisualMath-v0", difficulty=1))
    edit_obs, edit_target, _ = next(sft_examples("LaViDa/ImageEdit-v0", difficulty=1))
    batch = build_sft_batch(policy, [math_obs, edit_obs], [math_target, edit_target])
    ids = policy.ids
    math_resp = batch.sequences[0][batch.response_mask[0]].tolist()
    assert len(math_resp) == 32 and math_resp[-1] == ids.eos
    assert policy.tokenizer.decode(math_resp, skip_special_tokens=True) == math_target
    edit_resp = batch.sequences[1][batch.response_mask[1]].tolist()
    assert edit_resp[8] == ids.boi and edit_resp[-1] == ids.eoi and len(edit_resp) == 8 + 16 + 2
    codes = np.array(edit_resp[9:-1]).reshape(4, 4) - ids.code_start
    assert np.array_equal(codes, policy.codec.encode(edit_target["image"]))
    assert batch.extras["truncated"] == 1  # the edit solution does not fit 8 text positions
    assert batch.unmask_step is None and batch.texts[0] == math_target


def test_quick_sft_through_the_trainer_lowers_the_held_out_loss(tmp_path):
    policy = tiny_policy()
    stream = sft_examples("LaViDa/VisualMath-v0", difficulty=1, start=10_000, image_size=32)
    fixed = [next(stream) for _ in range(16)]
    batch = build_sft_batch(policy, [e[0] for e in fixed], [e[1] for e in fixed])

    def held_out_loss() -> float:
        with torch.no_grad():
            losses = []
            for seed in range(4):
                estimate = policy.log_likelihood_terms(batch.to(policy.device), "complementary", seed, 1)
                losses.append(sft_loss(estimate.loglik, batch.response_mask.sum(1)).item())
            return float(np.mean(losses))

    before = held_out_loss()
    config = parse_config(["--env", "LaViDa/VisualMath-v0", "--max_steps", "40", "--batch-size", "8", "--lr", "3e-3",
                           "--warmup_steps", "3", "--image_size", "32", "--output-dir", str(tmp_path)])  # fmt: skip
    Trainer(config, policy=policy).train()
    after = held_out_loss()
    rows = MetricsLog.read(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(1, 41)) and all(np.isfinite(r["loss"]) for r in rows)
    assert after < 0.6 * before, (before, after)


def test_lavida_train_quick_sft_writes_checkpoint_logs_and_eval(tmp_path, monkeypatch):
    monkeypatch.setattr(DiffusionPolicy, "tiny", classmethod(lambda cls, seed=0: tiny_policy()))
    out = tmp_path / "run"
    code = train_main(["--phase", "sft", "--env", "LaViDa/VisualMath-v0", "--difficulty", "1", "--max_steps", "2",
                       "--batch-size", "4", "--image_size", "32", "--output-dir", str(out), "--eval-episodes", "2"])  # fmt: skip
    assert code == 0
    rows = MetricsLog.read(str(out / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [0, 1, 2]  # held-out eval before, then one row per step
    assert {"eval/accuracy/visual_math", "eval/reward/visual_math"} <= set(rows[0]) <= set(rows[-1])
    assert rows[1]["loss"] == rows[1]["loss/sft"] and rows[1]["learning_rate"] == pytest.approx(1e-3 / 50)
    assert "reward" not in rows[1]  # SFT steps sample nothing
    assert (out / "checkpoint-2").is_dir() and DiffusionPolicy.from_pretrained(out).decoding.gen_length == 64


def test_quick_sft_stops_at_its_time_budget_and_saves(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(DiffusionPolicy, "tiny", classmethod(lambda cls, seed=0: tiny_policy()))
    out = tmp_path / "run"
    assert train_main(["--env", "LaViDa/VisualMath-v0", "--max_steps", "1000", "--batch-size", "2", "--image_size", "32",
                       "--max_cpu_minutes", "0.0001", "--output_dir", str(out)]) == 0  # fmt: skip
    rows = MetricsLog.read(str(out / "metrics.jsonl"))
    assert len(rows) == 1 and rows[0]["step"] == 1 and (out / "checkpoint-1").is_dir()
    assert DiffusionPolicy.from_pretrained(out) is not None
    assert train_main(["--env", "LaViDa/VisualMath-v0", "--steps", "5", "--output-dir", str(out)]) == 2
    assert "--max_steps" in capsys.readouterr().err  # --steps is denoising steps in every mode


def test_quick_sft_of_the_ar_policy_needs_no_rl_only_flags(tmp_path):
    # the README's AR quick-SFT line (one step, batch 2): phase sft never checks answer forcing or tree search
    out = tmp_path / "ar_sft"
    assert train_main(["--env", "LaViDa/VisualMath-v0", "--difficulty", "1", "--policy", "ar", "--max_steps", "1",
                       "--batch-size", "2", "--output-dir", str(out)]) == 0  # fmt: skip
    assert [r["step"] for r in MetricsLog.read(str(out / "metrics.jsonl"))] == [1]
    assert json.loads((out / "policy_config.json").read_text())  # a saved ARPolicy folder


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], r"ARPolicy cannot force answer suffixes.*\['visual_math'\].*--answer_forcing false"),
        (["--answer_forcing", "false", "--tasks", "image_edit:1"], r"ARPolicy cannot continue rollouts.*--tree_search '\[\]'"),
    ],
)
def test_rl_with_the_ar_policy_keeps_the_capability_errors(tmp_path, flags, message):
    config = parse_config(["--phase", "rl", "--policy", "ar", "--tasks", "visual_math:1", *flags,
                           "--output_dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(ValueError, match=message):
        Trainer(config)
    sft = parse_config(["--phase", "sft", "--policy", "ar", "--tasks", "visual_math:1,image_edit:1"])
    assert (sft.forcing_tasks_used, sft.tree_tasks_used) == ([], [])  # what the sft run uses: neither
