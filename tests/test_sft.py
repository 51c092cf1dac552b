"""SFT: reference targets, batch layout, loss decreases on a tiny run, `lavida train --phase sft`."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import torch

import lavida_envs  # noqa: F401
from agents.diffusion.codec import PaletteCodec
from agents.diffusion.policy import DecodingConfig, DiffusionPolicy
from agents.sft import SFTConfig, build_sft_batch, example_pool, reference_action, sft_examples, sft_loss, train_sft
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


def test_sft_loss_is_finite_and_a_tiny_run_lowers_it():
    policy = tiny_policy()
    examples = example_pool(sft_examples("LaViDa/VisualMath-v0", difficulty=1), size=16, seed=0)
    fixed = [next(examples) for _ in range(16)]
    batch = build_sft_batch(policy, [e[0] for e in fixed], [e[1] for e in fixed])

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(np.mean([sft_loss(policy, batch, "complementary", seed).item() for seed in range(4)]))

    before = held_out_loss()
    cfg = train_sft(policy, examples, SFTConfig(steps=40, batch_size=8, lr=3e-3, warmup=3, seed=0))
    after = held_out_loss()
    assert len(cfg.history) == 40 and all(np.isfinite(h["loss"]) for h in cfg.history)
    assert after < 0.6 * before, (before, after)


def test_lavida_train_sft_cli_writes_checkpoint_and_logs(tmp_path, monkeypatch):
    monkeypatch.setattr(DiffusionPolicy, "tiny", classmethod(lambda cls, seed=0: tiny_policy()))
    out = tmp_path / "run"
    code = train_main(["--phase", "sft", "--env", "LaViDa/VisualMath-v0", "--difficulty", "1", "--steps", "2",
                       "--batch-size", "4", "--output-dir", str(out), "--eval-episodes", "2"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "sft_summary.json").read_text())
    assert summary["steps_done"] == 2 and summary["eval"][0]["episodes"] == 2
    assert "test_images_equal_to_a_train_image" in summary["eval"][0]
    assert len((out / "sft_log.jsonl").read_text().splitlines()) == 2
    assert DiffusionPolicy.from_pretrained(out).decoding.gen_length == 32
