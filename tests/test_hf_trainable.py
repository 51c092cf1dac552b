"""Trainable HF masked-diffusion backbones (agents.hf): A2D from a causal LM, native Dream, LLaDA/Dream-style remote code."""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import pytest
import torch

from agents import check_policy
from agents.diffusion.policy import DecodingConfig
from agents.hf.policy import HFDiffusionPolicy
from agents.losses import sft_loss
from agents.sft import reference_action
from tiny_dllm import save_dream, save_dream_like, save_llada_like, save_qwen2
from tiny_hf import save_tiny_causal_lm

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")
TRUST = {"trust_remote_code": True}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_trainable")
    return {"a2d": save_qwen2(root / "qwen2"), "llada": save_llada_like(root / "llada"), "dream": save_dream(root / "dream"),
            "dream_remote": save_dream_like(root / "dream_remote")}  # fmt: skip


def test_a2d_runs_the_causal_lm_bidirectionally_and_passes_check_policy(folders):
    policy = HFDiffusionPolicy.from_hf(folders["a2d"], "a2d")
    x = torch.tensor([[5, 6, 7, 8]])
    y = x.clone()
    y[0, 3] = 9
    assert not torch.allclose(policy.model(x).logits[0, 0], policy.model(y).logits[0, 0])  # a later token changes position 0
    assert check_policy(policy, env_ids=["LaViDa/VisualMath-v0", "LaViDa/ImageEdit-v0"]) == []


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_remote_code_backbones_pass_check_policy(folders, kind):
    folder = folders["dream_remote" if kind == "dream" else kind]  # a shifted remote-code model: hf-dream: names the shift
    policy = HFDiffusionPolicy.from_hf(folder, kind, trust_remote_code=True)
    assert policy.model.kind == kind and policy.model.logits_shift == (kind == "dream") and policy.remote_code
    assert check_policy(policy, load_kwargs=TRUST) == []


def test_native_dream_passes_check_policy_without_remote_code(folders):
    policy = HFDiffusionPolicy.from_hf(folders["dream"])  # kind "auto": Dream's model_type selects native Dream
    assert policy.model.kind == "dream" and policy.model.logits_shift and not policy.remote_code
    assert check_policy(policy) == []


def test_dream_logits_are_shifted_back_so_position_i_predicts_token_i(folders):
    dream = HFDiffusionPolicy.from_hf(folders["dream_remote"], "dream", trust_remote_code=True)
    unshifted = HFDiffusionPolicy.from_hf(folders["dream_remote"], "llada", trust_remote_code=True)
    x = torch.tensor([[5, 6, 7, 8, 9]])
    assert torch.allclose(dream.model(x).logits[:, 1:], unshifted.model(x).logits[:, :-1])


def test_bad_folders_get_errors_naming_what_is_missing(folders, tmp_path):
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        HFDiffusionPolicy.from_hf(folders["llada"])  # remote code is opt-in
    causal = save_tiny_causal_lm(tmp_path / "causal")
    with pytest.raises(ValueError, match=r"no auto_map\['AutoModel'\].*use hf-a2d:"):
        HFDiffusionPolicy.from_hf(causal, trust_remote_code=True)
    with pytest.raises(ValueError, match="not a causal LM"):
        HFDiffusionPolicy.from_hf(folders["llada"], "a2d")
    with pytest.raises(ValueError, match="no config.json"):
        HFDiffusionPolicy.from_hf(tmp_path)


def test_two_rl_steps_through_lavida_train_then_the_checkpoint_loads_for_eval(folders, tmp_path):
    from agents.trainer import main
    from baselines.specs import resolve_policy

    out = tmp_path / "run"
    assert main(["--config", TINY, "--policy", f"hf-a2d:{folders['a2d']}", "--output_dir", str(out), "--max_steps", "2"]) == 0
    from agents.metrics_log import MetricsLog

    rows = MetricsLog.read(str(out / "metrics.jsonl"))
    rl = [r for r in rows if "reward" in r]
    assert len(rl) == 2 and all(r["skipped"] == 0.0 and torch.isfinite(torch.tensor(r["loss"])) for r in rl)
    policy = resolve_policy(str(out))
    assert isinstance(policy, HFDiffusionPolicy) and policy.model.kind == "a2d"
    import gymnasium as gym

    obs, _ = gym.make("LaViDa/VisualMath-v0", split="test", difficulty=1).reset(options={"index": 0})
    (actions,) = policy.act([obs])
    assert isinstance(actions[0], str)


LETTERS = "ABDEFGHJ"  # capitals appear in no reference solution, so the prompt's letter is the only cue


def _named_problems(n: int = 8) -> tuple[list[dict], list[str]]:
    """The first ``n`` VisualMath train problems and their reference solutions, each prompt naming its problem.

    Every difficulty-1 VisualMath prompt is the same sentence (the expression is in the image), and
    these backbones see no image, so with the env's prompts no model could tell the problems apart.
    """
    env = gym.make("LaViDa/VisualMath-v0", split="train", difficulty=1)
    observations, targets = [], []
    for i in range(n):
        obs, info = env.reset(options={"index": i})
        observations.append(dict(obs, prompt=f"Problem {LETTERS[i]}."))
        targets.append(reference_action(env, info))
    return observations, targets


def _sft_until_recall(policy: HFDiffusionPolicy, observations: list[dict], targets: list[str], max_steps: int,
                      lr: float, every: int = 50) -> tuple[int, int, list[float]]:  # fmt: skip
    """SFT (the trainer's loss, complementary ELBO) until greedy decoding recalls every target: (steps, recalled, losses)."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=0.0)
    batch = policy.sft_rollouts(observations, targets)
    losses, recalled, step = [], 0, 0
    while step < max_steps and recalled < len(targets):
        step += 1
        policy.model.train()
        estimate = policy.log_likelihood_terms(batch, "complementary", mask_seed=step)
        loss = sft_loss(estimate.loglik, policy.scored_mask(batch).sum(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % every == 0:
            recalled = sum(actions[0] == t for actions, t in zip(policy.act(observations), targets))
    return step, recalled, losses


@pytest.mark.parametrize("kind,max_steps", [("a2d", 600), ("llada", 300), ("dream", 300)])
def test_sft_on_8_reference_solutions_reaches_exact_recall(folders, kind, max_steps):
    torch.set_num_threads(1)
    observations, targets = _named_problems()
    decoding = DecodingConfig(gen_length=32, steps=32, block_length=32)  # one token per step, greedy
    policy = HFDiffusionPolicy.from_hf(folders[kind], kind, decoding=decoding, trust_remote_code=kind == "llada")
    steps, recalled, losses = _sft_until_recall(policy, observations, targets, max_steps, lr=3e-3)
    assert recalled == len(targets), f"{kind}: recalled {recalled}/8 after {steps} SFT steps (loss {losses[-1]:.3f})"
    assert sum(losses[-10:]) / 10 < 0.1 * sum(losses[:10]) / 10


def test_text_only_sft_warns_when_equal_prompts_get_different_solutions(folders):
    env = gym.make("LaViDa/VisualMath-v0", split="train", difficulty=1)
    pairs = [env.reset(options={"index": i}) for i in range(2)]
    observations, targets = [o for o, _ in pairs], [reference_action(env, info) for _, info in pairs]
    assert observations[0]["prompt"] == observations[1]["prompt"] and targets[0] != targets[1]
    policy = HFDiffusionPolicy.from_hf(folders["a2d"], "a2d")
    with pytest.warns(UserWarning, match="sees no image.*hf-vlm-dllm"):
        policy.sft_rollouts(observations, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.sft_rollouts(observations, targets)  # once per policy
        HFDiffusionPolicy.from_hf(folders["a2d"], "a2d").sft_rollouts(*_named_problems(2))  # distinct prompts: silent


def test_eval_specs_build_untrained_trainable_backbones(tmp_path):
    from baselines.specs import resolve_policy
    from tiny_dllm import save_qwen2

    from agents.hf.policy import HFDiffusionPolicy

    folder = save_qwen2(tmp_path / "qwen2", hidden=32, layers=1)
    policy = resolve_policy(f"hf-a2d:{folder}")
    assert isinstance(policy, HFDiffusionPolicy)
    obs = {"image": __import__("numpy").zeros((64, 64, 3), dtype="uint8"), "prompt": "What is 2 + 3?"}
    assert len(policy.act([obs], 1)[0]) == 1


@pytest.mark.parametrize("kind", ["a2d", "llada", "dream"])
def test_a_killed_hf_run_resumes_bit_exactly(folders, tmp_path, kind):
    # As tests/test_resume.py for ours: 1 SFT + 3 RL steps, each RL batch serving 2 updates, so the
    # checkpoint at step 2 falls inside a batch; the resumed trainer starts from other weights (seed 1),
    # which the checkpoint must overwrite. llada: remote code, so resuming must pass trust_remote_code on.
    from agents.checkpoint import checkpoint_dir
    from agents.config import load_config
    from agents.metrics_log import MetricsLog
    from agents.trainer import Trainer

    spec = {"a2d": "hf-a2d:", "llada": "hf-dllm:", "dream": "hf-dllm:"}[kind] + str(folders[kind])
    settings = dict(policy=spec, trust_remote_code=kind == "llada", sft_steps=1, max_steps=3, updates_per_batch=2,
                    forcing_prob=0.5, save_every=2, lr_scheduler_type="linear", prompts_per_step=1, sft_per_step=1)  # fmt: skip
    whole = Trainer(load_config(TINY, output_dir=str(tmp_path / "whole"), **settings))
    whole.train()
    Trainer(load_config(TINY, output_dir=str(tmp_path / "broken"), **settings)).train(stop_at=3)
    other = {"a2d": save_qwen2, "llada": save_llada_like, "dream": save_dream}[kind](tmp_path / "other", seed=1)
    start = HFDiffusionPolicy.from_hf(other, kind, trust_remote_code=kind == "llada")
    resume = checkpoint_dir(str(tmp_path / "broken"), 2)
    resumed = Trainer(load_config(TINY, output_dir=str(tmp_path / "broken"), resume_from=resume, **settings), policy=start)
    assert resumed.step == 2
    resumed.train()
    wall = {"time", "tokens_per_s", "cpu_time"}  # wall-clock and process-CPU fields differ between runs
    rows = {name: [{k: v for k, v in r.items() if k not in wall} for r in MetricsLog.read(str(tmp_path / name / "metrics.jsonl"))]
            for name in ("whole", "broken")}  # fmt: skip
    assert [r["step"] for r in rows["broken"]] == [1, 2, 3, 4] and rows["broken"] == rows["whole"]
    a, b = (dict(t.accelerator.unwrap_model(t.model).state_dict()) for t in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
