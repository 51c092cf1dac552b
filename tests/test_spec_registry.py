"""One spec registry: every hf-* prefix means the same class in lavida train, lavida eval and lavida check-policy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from agents.specs import TRAINABLE_HF_PREFIXES, trainable_policy
from baselines.specs import resolve_policy
from tiny_dgemma import save_tiny_dgemma
from tiny_dllm import save_dream, save_qwen2
from tiny_hf import save_tiny_masked_lm, save_tiny_vlm

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    a2d, dream = save_qwen2(root / "qwen2", hidden=32, layers=1), save_dream(root / "dream", layers=1)
    return {"hf-a2d": f"hf-a2d:{a2d}", "hf-dllm": f"hf-dllm:{dream}", "hf-dream": f"hf-dream:{dream}",
            "hf-dllm-mlm": f"hf-dllm:{save_tiny_masked_lm(root / 'mlm')}",
            "hf-vlm-dllm": f"hf-vlm-dllm:{save_tiny_vlm(root / 'vlm')}",
            "hf-dgemma": f"hf-dgemma:{save_tiny_dgemma(root / 'dgemma')}"}  # fmt: skip


def _same(a, b) -> None:
    assert type(a) is type(b)
    assert a.decoding == b.decoding and a.model.config == b.model.config
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_hf_prefix_is_in_the_registry(specs):
    assert set(TRAINABLE_HF_PREFIXES) == {"hf-a2d", "hf-dllm", "hf-dream", "hf-vlm-dllm", "hf-dgemma"}
    assert {s.partition(":")[0] for s in specs.values()} == set(TRAINABLE_HF_PREFIXES)


@pytest.mark.parametrize("name", ["hf-a2d", "hf-dllm", "hf-dream", "hf-dllm-mlm", "hf-vlm-dllm", "hf-dgemma"])
def test_train_eval_and_check_policy_build_the_same_policy(specs, name, monkeypatch):
    from agents import policy_check
    from agents.train_setup import build_policy

    spec = specs[name]
    trained = build_policy(SimpleNamespace(init_from=None, policy=spec, seed=0, trust_remote_code=False))
    evaluated = resolve_policy(spec)
    _same(trained, evaluated)
    checked = []
    monkeypatch.setattr(policy_check, "check_policy", lambda policy, **kw: checked.append(policy) or [])
    assert policy_check.main([spec]) == 0
    _same(trained, checked[0])


def test_eval_options_are_decoding_fields_and_from_hf_keywords(specs):
    policy = resolve_policy(specs["hf-dllm"], temperature=0.5, gen_length=16, steps=8, block_length=8, cache="dual")
    same = trainable_policy(specs["hf-dllm"], temperature=0.5, gen_length=16, steps=8, block_length=8, cache="dual")
    assert policy.decoding == same.decoding and (policy.decoding.temperature, policy.decoding.cache) == (0.5, "dual")
    assert resolve_policy(specs["hf-a2d"], mask_token_id=3).model.config.mask_token_id == 3
    with pytest.raises(ValueError, match=r"bad decoding options .*'remasking': 'sideways'"):
        resolve_policy(specs["hf-a2d"], remasking="sideways")
    with pytest.raises(ValueError, match=r"does not accept the options \['top_k'\]"):
        resolve_policy(specs["hf-a2d"], top_k=3)
    with pytest.raises(ValueError, match="needs a directory after 'hf-dllm:'"):
        resolve_policy("hf-dllm:")


def test_deprecated_and_eval_only_modules_are_gone():
    import pkgutil

    import baselines

    names = {m.name for m in pkgutil.iter_modules(baselines.__path__)}
    assert "specs" in names and not names & {"hf_dllm", "autoregressive", "ar_model"}
    assert "HFDiffusionLMPolicy" not in baselines.__all__
