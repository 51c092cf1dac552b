"""Trainable HF masked-diffusion backbones (agents.hf): A2D from a causal LM, LLaDA-style and Dream-style remote code."""

from __future__ import annotations

import os

import pytest
import torch

from agents import check_policy
from agents.hf.policy import HFDiffusionPolicy
from tiny_dllm import save_dream_like, save_llada_like, save_qwen2
from tiny_hf import save_tiny_causal_lm

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")
TRUST = {"trust_remote_code": True}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_trainable")
    return {"a2d": save_qwen2(root / "qwen2"), "llada": save_llada_like(root / "llada"), "dream": save_dream_like(root / "dream")}


def test_a2d_runs_the_causal_lm_bidirectionally_and_passes_check_policy(folders):
    policy = HFDiffusionPolicy.from_hf(folders["a2d"], "a2d")
    x = torch.tensor([[5, 6, 7, 8]])
    y = x.clone()
    y[0, 3] = 9
    assert not torch.allclose(policy.model(x).logits[0, 0], policy.model(y).logits[0, 0])  # a later token changes position 0
    assert check_policy(policy, env_ids=["LaViDa/VisualMath-v0", "LaViDa/ImageEdit-v0"]) == []


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_remote_code_backbones_pass_check_policy(folders, kind):
    policy = HFDiffusionPolicy.from_hf(folders[kind], trust_remote_code=True)  # kind "auto": Dream's config selects the shift
    assert policy.model.kind == kind and policy.model.logits_shift == (kind == "dream")
    assert check_policy(policy, load_kwargs=TRUST) == []


def test_dream_logits_are_shifted_back_so_position_i_predicts_token_i(folders):
    dream = HFDiffusionPolicy.from_hf(folders["dream"], "dream", trust_remote_code=True)
    unshifted = HFDiffusionPolicy.from_hf(folders["dream"], "llada", trust_remote_code=True)
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
