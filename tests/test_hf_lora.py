"""LoRA (peft) and gradient checkpointing of HF backbones in the trainer (agents.hf.lora): a tiny A2D Qwen2."""

from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("peft")

from agents.config import load_config
from agents.hf.lora import ADAPTER_DIR, LoraSettings, apply_lora, base_state_dict, check_adapter, has_adapter, is_checkpointing
from agents.hf.lora.__main__ import main as lora_main
from agents.hf.policy import HFDiffusionPolicy
from agents.metrics_log import MetricsLog
from agents.trainer import Trainer
from tiny_dllm import save_qwen2

TINY = os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml")
LORA = {"lora_r": 4, "lora_alpha": 8.0}


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return save_qwen2(tmp_path_factory.mktemp("lora") / "qwen2")


def config(tmp_path, folder, **overrides):
    """The tiny trainer recipe on one task with an hf-a2d: policy."""
    base = dict(policy=f"hf-a2d:{folder}", output_dir=str(tmp_path / "run"), tasks={"visual_math": 1}, forcing_prob=0.0)
    return load_config(TINY, **{**base, **overrides})


def weights(policy: HFDiffusionPolicy) -> dict[str, torch.Tensor]:
    """The backbone's base weights by their plain transformers names (adapter tensors dropped)."""
    backbone = policy.model.backbone
    state = base_state_dict(backbone) if has_adapter(backbone) else backbone.state_dict()
    return {k: v.detach().clone() for k, v in state.items()}


def logits(policy: HFDiffusionPolicy) -> torch.Tensor:
    """The denoiser's logits on a fixed sequence with masked positions (eval mode)."""
    x = torch.tensor([[5, 6, 7, policy.ids.mask, policy.ids.mask, 9]])
    policy.model.eval()
    with torch.no_grad():
        return policy.model(x).logits


def test_lora_sft_trains_only_the_adapter_and_the_checkpoint_loads_back(qwen2, tmp_path):
    trainer = Trainer(config(tmp_path, qwen2, phase="sft", max_steps=3, learning_rate=5e-2, **LORA))
    original = weights(trainer.policy)
    initial = logits(trainer.policy)
    backbone = trainer.policy.model.backbone
    assert has_adapter(backbone) and is_checkpointing(backbone)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    assert any("trainable_tokens" in n for n in trainable)  # a2d: the mask token's embedding row trains too
    before = {n: p.detach().clone() for n, p in backbone.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(backbone.named_parameters())
    assert all(not torch.equal(before[n], after[n].detach()) for n in before if "lora_B" in n)  # every adapter moved
    trained = weights(trainer.policy)
    assert trained.keys() == original.keys() and all(torch.equal(trained[k], original[k]) for k in original)  # base frozen

    out = tmp_path / "run"
    meta = json.loads((out / "policy_config.json").read_text())
    assert meta["lora"]["r"] == 4 and (out / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    loaded = HFDiffusionPolicy.from_pretrained(str(out))  # lavida eval's loader
    assert has_adapter(loaded.model.backbone)
    assert all(torch.equal(v, original[k]) for k, v in weights(loaded).items())  # top level: the untouched base
    assert torch.allclose(logits(loaded), logits(trainer.policy), atol=1e-5)
    assert not torch.allclose(logits(loaded), initial, atol=1e-3)  # the trained adapter is in the checkpoint

    merged_dir = tmp_path / "merged"
    assert lora_main(["merge", str(out), str(merged_dir)]) == 0
    merged = HFDiffusionPolicy.from_pretrained(str(merged_dir))
    assert not has_adapter(merged.model.backbone) and "lora" not in json.dumps(
        json.loads((merged_dir / "policy_config.json").read_text())["lora"] or {}
    )
    assert torch.allclose(logits(merged), logits(loaded), atol=1e-4)


def test_kl_reference_of_a_fresh_adapter_is_the_model_with_the_adapter_off(qwen2, tmp_path):
    c = config(tmp_path, qwen2, sft_steps=1, max_steps=1, regularizer="kl", beta=0.5, sft_learning_rate=5e-2,
               gradient_checkpointing=False, **LORA)  # fmt: skip
    trainer = Trainer(c)
    assert not is_checkpointing(trainer.policy.model.backbone)
    assert trainer.reference.model._denoiser is trainer.accelerator.unwrap_model(trainer.model)  # no second copy
    x = torch.tensor([[5, 6, 7, trainer.policy.ids.mask, 9]])

    def ref_logits() -> torch.Tensor:
        return trainer.reference.model(x).logits

    start = ref_logits()
    with torch.no_grad():
        assert torch.allclose(start, trainer.policy.model(x).logits)  # lora_B starts at zero: adapter off == on
    trainer.train()  # one SFT warm-start step moves the adapter, then one RL step scores the KL
    assert torch.equal(ref_logits(), start)  # the reference stays the initial policy
    with torch.no_grad():
        assert not torch.allclose(trainer.policy.model(x).logits, start, atol=1e-4)
    rl = [r for r in MetricsLog.read(str(tmp_path / "run" / "metrics.jsonl")) if "reward" in r]
    assert len(rl) == 1 and rl[0]["kl"] > 0.0 and rl[0]["loss/kl"] == pytest.approx(0.5 * rl[0]["kl"], rel=1e-5)


def test_lora_settings_are_checked_with_a_fix(qwen2, tmp_path):
    with pytest.raises(ValueError, match="LoRA needs a Hugging Face backbone.*lora_r: 0"):
        Trainer(load_config(TINY, output_dir=str(tmp_path / "a"), lora_r=4))  # the tiny DiffusionPolicy
    with pytest.raises(ValueError, match="lora_target_modules.*its linear layers are named.*q_proj"):
        Trainer(config(tmp_path, qwen2, lora_target_modules="no_such_proj", **{"lora_r": 2}))
    with pytest.raises(ValueError, match="lora_alpha"):
        config(tmp_path, qwen2, lora_r=2, lora_alpha=0.0)
    saved = lora_checkpoint(qwen2, tmp_path / "lora_ckpt", LoraSettings(2, 4.0, target_modules=("q_proj", "v_proj")))
    same = dict(init_from=str(saved), lora_r=2, lora_alpha=4.0, lora_target_modules="q_proj,v_proj")
    with pytest.raises(ValueError, match=r"LoRA adapter \(r=2\) but lora_r is 0; set lora_r: 2"):
        Trainer(config(tmp_path, qwen2, init_from=str(saved)))
    with pytest.raises(ValueError, match=r"adapter has r=2 but lora_r is 4; set lora_r: 2"):
        Trainer(config(tmp_path, qwen2, **{**same, "lora_r": 4}))
    loaded = HFDiffusionPolicy.from_pretrained(str(saved)).model.backbone
    with pytest.raises(ValueError, match=r"adapter has alpha=4.0 but lora_alpha is 8.0; set lora_alpha: 4.0"):
        check_adapter(loaded, LoraSettings(2, 8.0, target_modules=("q_proj", "v_proj")))
    for other in ("all-linear", ("q_proj", "k_proj", "v_proj"), ("q_proj",)):
        with pytest.raises(ValueError, match=r"wraps 4 modules named \['q_proj', 'v_proj'\].*set lora_target_modules: q_proj,v_proj"):
            check_adapter(loaded, LoraSettings(2, 4.0, target_modules=other))
    check_adapter(loaded, LoraSettings(2, 4.0, target_modules=("v_proj", "q_proj")))  # the same modules: fine
    linear = HFDiffusionPolicy.from_pretrained(str(lora_checkpoint(qwen2, tmp_path / "linear", LoraSettings(2, 4.0))))
    check_adapter(linear.model.backbone, LoraSettings(2, 4.0))  # all-linear as peft resolved it
    with pytest.raises(ValueError, match=r"wraps 14 modules named .* but lora_target_modules: q_proj,v_proj names 4"):
        check_adapter(linear.model.backbone, LoraSettings(2, 4.0, target_modules=("q_proj", "v_proj")))


def lora_checkpoint(folder, out, settings: LoraSettings, seed: int = 0):
    """A checkpoint of ``folder`` with an adapter of ``settings`` moved off its zero start (lora_B random)."""
    policy = HFDiffusionPolicy.from_hf(folder, "a2d")
    apply_lora(policy, settings)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.model.backbone.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
    policy.save_pretrained(str(out))
    return out


def test_kl_reference_after_init_from_a_lora_checkpoint_is_the_base_with_the_adapter_off(qwen2, tmp_path):
    saved = lora_checkpoint(qwen2, tmp_path / "lora_ckpt", LoraSettings(4, 8.0))
    trainer = Trainer(config(tmp_path, qwen2, init_from=str(saved), regularizer="kl", beta=0.5, max_steps=1,
                             gradient_checkpointing=False, **LORA))  # fmt: skip
    assert trainer.reference.model._denoiser is trainer.accelerator.unwrap_model(trainer.model)  # no deep copy
    x = torch.tensor([[5, 6, 7, trainer.policy.ids.mask, 9]])
    base = HFDiffusionPolicy.from_hf(saved, "a2d").model.eval()  # the checkpoint's top level: its base weights
    with torch.no_grad():
        assert torch.allclose(trainer.reference.model(x).logits, base(x).logits, atol=1e-5)  # the base under the adapter
        assert not torch.allclose(trainer.policy.model(x).logits, base(x).logits, atol=1e-3)  # the policy: adapter on


def test_a_lora_run_resumes_exactly(qwen2, tmp_path):
    kw = dict(phase="sft", max_steps=2, learning_rate=5e-2, save_every=1, **LORA)
    straight = Trainer(config(tmp_path / "a", qwen2, **kw))
    straight.train()
    resumed = Trainer(config(tmp_path / "b", qwen2, resume_from=str(tmp_path / "a" / "run" / "checkpoint-1"), **kw))
    resumed.train()
    a = dict(straight.accelerator.unwrap_model(straight.model).named_parameters())
    b = dict(resumed.accelerator.unwrap_model(resumed.model).named_parameters())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # adapter, mask row and frozen base alike
