"""Every baseline kind runs ``lavida eval`` on every env id and writes results (issue 8).

The simple policies are covered in ``test_evaluate.py``; here: our two checkpoint formats
(DiffusionPolicy, ARPolicy) and the three Hugging Face adapters, on tiny random models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lavida_envs
from evaluation.evaluate import main
from evaluation.results import read_results, read_rows
from tiny_hf import save_tiny_causal_lm, save_tiny_masked_lm, save_tiny_vlm


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, str]:
    from agents.diffusion.policy import DiffusionPolicy
    from agents.autoregressive import ARPolicy

    root = tmp_path_factory.mktemp("baselines")
    for name, policy in (("diffusion", DiffusionPolicy.tiny(seed=0)), ("ar", ARPolicy.tiny(seed=0))):
        policy.decoding.steps, policy.decoding.gen_length = 4, 16  # short text responses: speed only
        policy.decoding.task_gen_length = {"grounding": 16, "image_edit": 16}
        policy.save_pretrained(root / name)
    return {
        "diffusion": str(root / "diffusion"),
        "ar": str(root / "ar"),
        "hf": f"hf:{save_tiny_causal_lm(root / 'causal')}",
        "hf-vlm": f"hf-vlm:{save_tiny_vlm(root / 'vlm')}",
        "hf-dllm": f"hf-dllm:{save_tiny_masked_lm(root / 'dllm')}",
    }


@pytest.mark.parametrize("env_id", lavida_envs.ENV_IDS)
@pytest.mark.parametrize("kind", ["diffusion", "ar", "hf", "hf-vlm", "hf-dllm"])
def test_every_baseline_kind_runs_lavida_eval_on_every_env(specs, tmp_path: Path, kind: str, env_id: str):
    out = tmp_path / "eval"
    policy_kwargs = {"hf": "max_new_tokens=8", "hf-vlm": "max_new_tokens=8", "hf-dllm": "gen_length=8,steps=2,block_length=8"}
    argv = ["--policy", specs[kind], "--env", env_id, "--env-kwargs", "image_size=32", "--episodes", "2",
            "--batch-size", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    if kind in policy_kwargs:
        argv += ["--policy-kwargs", policy_kwargs[kind]]
    assert main(argv) == 0
    results = read_results(out)
    assert results["n"] == 2 and len(read_rows(out / "samples.jsonl")) == 2
    assert 0.0 <= results["metrics"]["reward"]["mean"] <= 1.0
