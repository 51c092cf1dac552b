"""Native Dream (agents.hf.dream): equal to the published code's logits, saved in Dream's layout, KV-cached exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from agents.hf.policy import HFDiffusionPolicy
from agents.diffusion.policy import DecodingConfig
from tiny_dllm import DREAM_FIXTURE, save_dream
from tiny_hf import build_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The published-code fixture (config + weights, scripts/make_native_fixtures.py) plus the test tokenizer."""
    folder = tmp_path_factory.mktemp("dream") / "published"
    shutil.copytree(DREAM_FIXTURE, folder)
    build_tokenizer(chat_template=True).save_pretrained(folder)
    return folder


def _non_pad(keys):
    return keys.bool()[..., None]


def test_native_dream_logits_equal_the_published_code(published):
    # hf-dllm: on a Dream folder needs no trust flag and runs no remote code
    policy = HFDiffusionPolicy.from_hf(published)
    model = policy.model.eval()
    assert model.kind == "dream" and model.published_config is not None and not policy.remote_code
    assert model.backbone.config._attn_implementation in ("sdpa", "eager")
    expected = load_file(str(published / "expected.safetensors"))
    ids, keys, want = expected["input_ids"], expected["attention_mask"], expected["logits"]
    assert (ids == 4).sum() >= 8  # masked spans in both rows
    with torch.no_grad():
        got = model(ids, attention_mask=keys).logits[..., : want.shape[-1]]
    # the denoiser's position i holds the published logits of i - 1 (Dream predicts the next token); 0 keeps its own
    shifted = torch.cat([want[:, :1], want[:, :-1]], 1)
    real = _non_pad(keys) & _non_pad(torch.cat([keys[:, :1], keys[:, :-1]], 1))
    diff = (got - shifted).abs().masked_fill(~real, 0)
    assert diff.max() < 1e-5, diff.max()
    assert want.abs().max() > 1.0  # the fixture's logits are not trivially small


def test_native_dream_saves_in_the_published_layout(published, tmp_path):
    policy = HFDiffusionPolicy.from_hf(published)
    policy.save_pretrained(str(tmp_path / "ckpt"))
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    original = json.loads((published / "config.json").read_text())
    assert saved["model_type"] == "Dream" and saved["auto_map"] == original["auto_map"]
    assert set(saved) == set(original) and saved["vocab_size"] == original["vocab_size"]
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f, \
         safe_open(str(published / "model.safetensors"), "pt") as g:  # fmt: skip
        assert set(f.keys()) == set(g.keys())
    ids = load_file(str(published / "expected.safetensors"))["input_ids"]
    again = HFDiffusionPolicy.from_pretrained(str(tmp_path / "ckpt"))
    assert again.model.kind == "dream" and again.model.published_config is not None
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, policy.model(ids).logits)


def test_dream_weights_with_wrong_names_are_refused(published, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "renamed"
    shutil.copytree(published, folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["model.embed.weight"] = weights.pop("model.embed_tokens.weight")
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="do not match Dream's layout.*embed"):
        HFDiffusionPolicy.from_hf(folder)


@pytest.mark.parametrize("layers", [1, 2])
def test_dream_window_logits_equal_the_full_forward(tmp_path, layers):
    model = HFDiffusionPolicy.from_hf(save_dream(tmp_path / "d", layers=layers)).model.eval()
    x = torch.randint(5, 290, (2, 20), generator=torch.Generator().manual_seed(0))
    keys = torch.ones_like(x, dtype=torch.bool)
    keys[0, :3] = False
    full = model(x, attention_mask=keys).logits
    logits, cache = model.encode_with_cache(x, attention_mask=keys)
    assert torch.allclose(logits, full, atol=1e-6)
    for start, end in ((0, 6), (10, 14), (14, 20)):
        assert torch.allclose(model.forward_window(x, keys, start, end, cache), full[:, start:end], atol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_dream_cache_equals_no_cache_on_one_layer(tmp_path, observations, cache):
    folder = save_dream(tmp_path / "d1", layers=1)

    def rollout(mode):
        decoding = DecodingConfig(gen_length=16, steps=8, block_length=8, cache=mode,
                                  task_gen_length={"grounding": 32, "image_edit": 16})  # fmt: skip
        policy = HFDiffusionPolicy.from_hf(folder, decoding=decoding)
        return policy.rollout(observations, 2, generator=torch.Generator().manual_seed(3))

    reference, cached = rollout("none"), rollout(cache)
    assert torch.equal(cached.sequences, reference.sequences)
    assert torch.equal(cached.unmask_step, reference.unmask_step)


def test_native_dream_passes_check_policy(published):
    from agents.policy_check import check_policy

    decoding = DecodingConfig(gen_length=16, steps=8, block_length=8, cache="dual", task_gen_length={"grounding": 16, "image_edit": 16})
    assert check_policy(HFDiffusionPolicy.from_hf(published, decoding=decoding)) == []
