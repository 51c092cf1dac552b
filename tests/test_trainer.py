"""The LaViDa-R1 trainer loop (agents.trainer): metrics, regularizer arms, NaN guard, dispatch, schedule."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

from agents.config import load_config, parse_config
from agents.diffusion.policy import DiffusionPolicy
from agents.metrics_log import CollapseAlarm, MetricsLog
from agents.train_setup import lr_factor
from agents.trainer import Trainer, main

sys.path.insert(0, os.path.dirname(__file__))
from trainer_tiny import tiny_policy  # noqa: E402

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")


def tiny_config(tmp_path, **overrides):
    return load_config(TINY, output_dir=str(tmp_path / "run"), **overrides)


def params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_rl_run_logs_trl_named_metrics_evaluates_and_saves(tmp_path):
    config = tiny_config(tmp_path, max_steps=1, eval_every=1, eval_episodes=2)
    Trainer(config).train()
    out = tmp_path / "run"
    rows = MetricsLog.read(str(out / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"step", "eval/reward", "eval/reward/visual_math", "eval/accuracy/visual_math",
                            "eval/reward/image_edit", "eval/accuracy/image_edit"}  # fmt: skip
    sft, rl = rows[1], rows[2]
    assert sft["learning_rate"] == pytest.approx(config.sft_learning_rate) and "reward" not in sft
    assert rl["learning_rate"] == pytest.approx(config.learning_rate)
    trl_names = {"reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "entropy", "clip_ratio"}
    ours = {"step", "reward/visual_math", "accuracy/image_edit", "frac_reward_zero_std/after_forcing", "forced_frac",
            "forcing_trigger_frac", "loss/pg", "loss/sft", "loss/kl", "nll/text", "nll/image", "grad_norm",
            "tokens_per_s", "time", "cpu_time", "tree_nfe", "eval/reward/image_edit"}  # fmt: skip
    assert trl_names | ours <= set(rl), sorted(trl_names | ours - set(rl))
    assert rl["cpu_time"] > sft["cpu_time"] > 0  # process CPU seconds of the loop so far
    assert rl["loss"] == pytest.approx(rl["loss/pg"] + rl["loss/sft"] + rl["loss/kl"], rel=1e-5)
    assert rl["loss/kl"] == 0.0 and "kl" not in rl  # no reference model without regularizer kl
    assert 0 < rl["nll/text"] < 20 and 0 < rl["nll/image"] < 20  # fixed <boi>/<eoi> are not scored
    assert rl["tree_nfe"] > 0 and rl["skipped"] == 0.0
    assert (out / "checkpoint-2" / "trainer_state.pt").is_file() and (out / "checkpoint-2" / "rank_state_0.pt").is_file()
    loaded = DiffusionPolicy.from_pretrained(str(out))
    assert loaded.decoding.task_gen_length["image_edit"] == 8 and loaded.decoding.steps == 4


def test_kl_arm_has_a_frozen_reference_and_reused_batches_have_ratio_one_first(tmp_path):
    config = tiny_config(tmp_path, tasks={"visual_math": 1}, sft_steps=0, max_steps=2, regularizer="kl", beta=0.5,
                         updates_per_batch=2, forcing_prob=0.0)  # fmt: skip
    trainer = Trainer(config, policy=tiny_policy())
    assert trainer.reference is not None and not any(p.requires_grad for p in trainer.reference.model.parameters())
    trainer.train()
    first, second = MetricsLog.read(str(tmp_path / "run" / "metrics.jsonl"))
    assert first["kl"] == 0.0 and first["loss/kl"] == 0.0  # policy == reference, same mask seeds
    assert first["clip_ratio"] == 0.0  # old == current policy on the first update: ratio exactly 1
    assert second["reward"] == first["reward"]  # the rollout batch is reused (updates_per_batch 2)
    assert second["kl"] > 0.0 and second["loss/kl"] == pytest.approx(0.5 * second["kl"], rel=1e-5)
    assert second["loss/sft"] == 0.0
    assert Trainer(tiny_config(tmp_path), policy=tiny_policy()).reference is None


def test_nonfinite_loss_or_gradient_skips_the_step_with_a_warning(tmp_path):
    config = tiny_config(tmp_path, phase="sft", tasks={"visual_math": 1}, max_steps=4)
    policy = tiny_policy()
    trainer = Trainer(config, policy=policy)
    honest = policy.log_likelihood_terms
    poison = {"step": None}

    def log_likelihood_terms(*args, **kwargs):
        estimate = honest(*args, **kwargs)
        if poison["step"] == "loss":
            estimate.loglik = estimate.loglik * float("nan")
        return estimate

    policy.log_likelihood_terms = log_likelihood_terms
    first = next(trainer.accelerator.unwrap_model(trainer.model).parameters())
    first.register_hook(lambda grad: grad * float("inf") if poison["step"] == "grad" else grad)
    trainer.train(stop_at=1)
    for kind, step in (("loss", 2), ("grad", 3)):
        before = params(trainer)
        poison["step"] = kind
        trainer.train(stop_at=step)
        assert same(before, params(trainer)), kind
    poison["step"] = None
    before = params(trainer)
    trainer.train()
    assert not same(before, params(trainer))
    rows = MetricsLog.read(str(tmp_path / "run" / "metrics.jsonl"))
    assert [r["skipped"] for r in rows] == [0.0, 1.0, 1.0, 0.0]
    assert "non-finite loss" in rows[1]["warning"] and rows[1]["loss"] is None
    assert "non-finite gradient" in rows[2]["warning"] and rows[2]["grad_norm"] is None
    assert all(bool(torch.isfinite(p).all()) for p in params(trainer))


def test_collapse_alarm_needs_reward_and_entropy_falling_together():
    alarm = CollapseAlarm(window=6)
    falling = [(0.5 - 0.05 * i, 3.0 - 0.3 * i) for i in range(12)]
    fired = [s for s, (r, e) in enumerate(falling, 1) if alarm.update(s, r, e)]
    assert fired == [6, 12]  # fires, then stays quiet for a window
    only_reward = CollapseAlarm(window=6)
    assert not any(only_reward.update(s, 0.5 - 0.05 * s, 3.0) for s in range(1, 13))
    only_entropy = CollapseAlarm(window=6)
    assert not any(only_entropy.update(s, 0.5, 3.0 - 0.3 * s) for s in range(1, 13))
    restored = CollapseAlarm(window=6)
    restored.load_state_dict(alarm.state_dict())
    assert restored.history == alarm.history and restored.quiet_until == alarm.quiet_until
    assert CollapseAlarm(window=0).update(1, math.nan, 1.0) is None


def test_learning_rate_schedule_sft_warm_start_then_warmup_and_cosine(tmp_path):
    config = tiny_config(tmp_path, sft_steps=2, max_steps=10, warmup_steps=2, lr_scheduler_type="cosine",
                         learning_rate=1e-4, sft_learning_rate=1e-3)  # fmt: skip
    factors = [lr_factor(config, s) for s in range(12)]
    assert factors[:2] == [pytest.approx(10.0)] * 2
    assert factors[2:4] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    sft_phase = tiny_config(tmp_path, phase="sft", sft_steps=5, max_steps=3)
    assert lr_factor(sft_phase, 0) == 1.0  # phase sft ignores sft_steps


def test_lavida_train_has_one_parser_for_quick_sft_and_configs(tmp_path, capsys):
    quick = parse_config(["--phase", "sft", "--env", "LaViDa/VisualMath-v0", "--max_steps", "7", "--output-dir", "x"])
    assert quick == parse_config(["--env=LaViDa/VisualMath-v0", "--max-steps", "7", "--output_dir=x"])  # both spellings
    assert (quick.phase, dict(quick.tasks), quick.max_steps, quick.output_dir) == ("sft", {"visual_math": 1.0}, 7, "x")
    assert (quick.learning_rate, quick.sft_per_step, quick.likelihood, quick.steps) == (1e-3, 32, "random_mask", 64)
    mix = parse_config(["--env", "LaViDa/Grounding-v0", "--env", "LaViDa/ImageEdit-v0", "--gen-length", "80", "--lr", "0.01"])
    assert dict(mix.tasks) == {"grounding": 1.0, "image_edit": 1.0} and mix.learning_rate == 0.01
    assert mix.decoding_for("grounding")["gen_length"] == mix.decoding_for("image_edit")["gen_length"] == 80
    configured = parse_config(["--config", TINY, "--env", "LaViDa/Grounding-v0", "--steps", "8"])
    assert configured.phase == "rl" and dict(configured.tasks) == {"grounding": 1.0} and configured.steps == 8
    assert main(["--env", "LaViDa/Nope-v0"]) == 2 and "not a LaViDa env id" in capsys.readouterr().err
    assert main(["--config", TINY, "--gamma", "2.0"]) == 2
    assert "TrainConfig.gamma=2.0" in capsys.readouterr().err


def test_sft_rows_come_from_sft_difficulty_and_rl_prompts_from_difficulty(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, difficulty="2", sft_difficulty="1", max_steps=1))
    assert {env.unwrapped.difficulty for env in trainer.sft_envs.values()} == {1}
    assert {env.unwrapped.difficulty for env in trainer.envs.values()} == {2}
    same_level = Trainer(tiny_config(tmp_path / "b", difficulty="2", max_steps=1))
    assert same_level.sft_envs is same_level.envs


def test_sft_pool_limits_reference_rows_to_the_first_problems(tmp_path, monkeypatch):
    import agents.trainer as trainer_module

    drawn = []
    real = trainer_module.sample_problems

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        drawn.extend(out)
        return out

    monkeypatch.setattr(trainer_module, "sample_problems", recording)
    trainer = Trainer(tiny_config(tmp_path, sft_pool=3, max_steps=1))
    trainer._sft_rows(24)
    assert len(drawn) == 24 and {p.index for p in drawn} <= {0, 1, 2}


def test_a_missing_init_from_folder_is_a_one_line_usage_error(tmp_path, capsys):
    assert main(["--config", TINY, "--init_from", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--init_from" in err and "is not a directory" in err


def test_a_single_process_accelerate_launch_asked_for_several_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with caplog.at_level("WARNING", logger="agents.trainer"):
        Trainer(tiny_config(tmp_path, max_steps=1))
    assert any("--multi_gpu" in r.getMessage() for r in caplog.records)
