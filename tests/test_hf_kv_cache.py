"""KV-cached rollouts for HF backbones (agents.hf): A2D exact where it must be, forcing, tree continuation, fallback."""

from __future__ import annotations

import warnings

import pytest
import torch

from agents.diffusion import sampler
from agents.diffusion.policy import DecodingConfig
from agents.diffusion.rows import tagged_model_fn
from agents.hf.policy import HFDiffusionPolicy
from task_envs import assert_left_padding_changes_nothing
from tiny_dllm import save_llada_like, save_qwen2

torch.set_num_threads(1)

TASK_LENGTHS = {"grounding": 32, "image_edit": 16}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_kv")
    return {"a2d1": save_qwen2(root / "q1", hidden=32, layers=1), "a2d2": save_qwen2(root / "q2", hidden=32, layers=2),
            "llada": save_llada_like(root / "llada")}  # fmt: skip


def _policy(folder, cache: str, kind: str = "a2d", temperature: float = 0.0, threshold: float | None = None):
    decoding = DecodingConfig(gen_length=16, steps=8, block_length=8, temperature=temperature, threshold=threshold,
                              cache=cache, task_gen_length=dict(TASK_LENGTHS))  # fmt: skip
    return HFDiffusionPolicy.from_hf(folder, kind, decoding=decoding, trust_remote_code=kind != "a2d")


def _rollout(policy, observations, n: int = 2, forced=None):
    return policy.rollout(observations, n, forced=forced, generator=torch.Generator().manual_seed(3))


def test_window_logits_equal_the_full_forward_when_no_token_changed(folders):
    # The contract of encode_with_cache / forward_window at any depth: with the tokens the cache was
    # built from, a window (prefix-only or prefix+suffix in the cache) gives the full forward's logits,
    # padding rows included.
    model = HFDiffusionPolicy.from_hf(folders["a2d2"], "a2d").model.eval()
    x = torch.randint(5, 290, (3, 20), generator=torch.Generator().manual_seed(0))
    keys = torch.ones_like(x, dtype=torch.bool)
    keys[0, :4] = keys[1, :2] = False
    full = model(x, attention_mask=keys).logits
    logits, cache = model.encode_with_cache(x, attention_mask=keys)
    assert torch.equal(logits, full) and cache.shape[:3] == (3, 2, 2) and cache.shape[-2] == 20
    for start, end in ((10, 14), (14, 20), (5, 8)):
        assert torch.allclose(model.forward_window(x, keys, start, end, cache), full[:, start:end], atol=1e-5)
    changed = x.clone()
    changed[:, 16] = 7  # a suffix token the cache does not know about: the window's logits differ (a deep model)
    assert not torch.allclose(model.forward_window(changed, keys, 10, 14, cache), model(changed, attention_mask=keys).logits[:, 10:14])


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("temperature,threshold", [(0.0, None), (0.0, 0.4)])
def test_a2d_cache_is_exact_when_keys_do_not_depend_on_other_positions(folders, observations, cache, temperature, threshold):
    # One layer: every cached key/value is a function of its own token and position only, so a cache
    # refreshed once per block loses nothing and the cached sampler must equal the reference.
    reference = _rollout(_policy(folders["a2d1"], "none", temperature=temperature, threshold=threshold), observations)
    cached = _rollout(_policy(folders["a2d1"], cache, temperature=temperature, threshold=threshold), observations)
    assert torch.equal(cached.sequences, reference.sequences)
    assert torch.equal(cached.unmask_step, reference.unmask_step)
    assert cached.extras["nfe"] == reference.extras["nfe"]


@pytest.mark.parametrize("cache", sampler.CACHE_MODES)
def test_left_padded_rows_give_the_same_results_batched_or_alone(folders, observations, cache):
    # Two layers; prompts of three lengths share one layout, so one sampler call left-pads them:
    # the padding must change nothing, in the full forward and in the cached window's 4-D mask.
    policy = _policy(folders["a2d2"], cache)
    assert_left_padding_changes_nothing(policy, observations[0], dict(observations[1], task="grounding"))


@pytest.mark.parametrize("cache", sampler.CACHE_MODES)
def test_forced_suffix_is_never_changed_under_any_cache(folders, observations, cache):
    policy = _policy(folders["a2d2"], cache, temperature=1.0)
    suffix = "<answer>7</answer>"
    out = _rollout(policy, observations, forced=[suffix] * len(observations))
    ids = torch.tensor(policy.suffix_ids(suffix))
    for row in range(len(out)):
        forced = out.forced_mask[row]
        assert forced.sum() == len(ids) and (out.unmask_step[row][forced] == 0).all()
        assert torch.equal(out.sequences[row][forced], ids)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_tree_continuation_from_a_cached_rollout_makes_only_the_remaining_calls(folders, observations, cache):
    policy = _policy(folders["a2d2"], cache, temperature=1.0)
    parents = _rollout(policy, observations[:1], n=1)
    record = parents.unmask_step[0]
    child = policy.rollout_from(observations[:1], parents, step=5, num_samples=2, generator=torch.Generator().manual_seed(1))
    assert child.extras["nfe"] == policy.decoding.plan(int(parents.response_mask[0].sum()))[0] - 5
    kept = parents.response_mask[0] & (record >= 0) & (record <= 5)  # revealed by step 5 (or forced): unchanged
    assert all(torch.equal(row[kept], parents.sequences[0][kept]) for row in child.sequences)


def test_supports_cache_is_per_kind(folders):
    a2d, llada = _policy(folders["a2d1"], "dual").model, _policy(folders["llada"], "dual", kind="llada").model
    masks = (torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    ids = _policy(folders["a2d1"], "dual").ids
    assert tagged_model_fn(a2d, None, *masks, ids).supports_cache
    assert not tagged_model_fn(llada, None, *masks, ids).supports_cache
    assert not hasattr(llada, "encode_with_cache") and not hasattr(llada, "forward_window")


def test_remote_code_backbone_falls_back_to_no_cache_with_one_warning(folders, observations, monkeypatch):
    monkeypatch.setattr(sampler, "_WARNED", set())  # the warning is once per process; start afresh
    reference = _rollout(_policy(folders["llada"], "none", kind="llada"), observations)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _rollout(_policy(folders["llada"], "dual", kind="llada"), observations)
        _rollout(_policy(folders["llada"], "prefix", kind="llada"), observations)
    messages = [str(w.message) for w in caught if "KV cache" in str(w.message)]
    assert len(messages) == 1 and "cache='none'" in messages[0]
    assert torch.equal(out.sequences, reference.sequences) and out.extras["nfe"] == reference.extras["nfe"]


def test_a2d_cache_works_through_a_lora_wrapped_backbone(folders, observations):
    pytest.importorskip("peft")
    from agents.hf.lora import LoraSettings, apply_lora

    out = {}
    for cache in ("none", "dual"):
        policy = _policy(folders["a2d1"], cache)
        apply_lora(policy, LoraSettings(2, 4.0))  # a fresh adapter is the identity: same tokens as without it
        out[cache] = _rollout(policy, observations)
    assert torch.equal(out["dual"].sequences, out["none"].sequences)
