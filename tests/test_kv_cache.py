"""KV-cached rollouts (prefix / dual): exactness where it must hold, forcing, tree continuation, fallback, blocks."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_denoiser import MASK_ID, TinyDenoiser

from agents.diffusion.policy import DecodingConfig, DiffusionPolicy
from agents.diffusion.sampler import CACHE_MODES, SamplerState, sample, split_steps

torch.set_num_threads(1)

TASK_LENGTHS = {"grounding": 32, "image_edit": 16}


def _policy(cache: str, *, layers: int = 1, temperature: float = 0.0, threshold: float | None = None) -> DiffusionPolicy:
    decoding = DecodingConfig(
        gen_length=16, steps=8, block_length=8, temperature=temperature, threshold=threshold, cache=cache,
        task_gen_length=dict(TASK_LENGTHS),
    )  # fmt: skip
    return DiffusionPolicy.tiny(seed=0, image_size=64, hidden_size=32, num_heads=2, num_layers=layers, decoding=decoding)


def _rollout(policy: DiffusionPolicy, observations, n: int = 2, forced=None):
    return policy.rollout(observations, n, forced=forced, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("temperature,threshold", [(0.0, None), (1.0, None), (0.0, 0.4)])
def test_cache_is_exact_when_keys_do_not_depend_on_other_positions(observations, cache, temperature, threshold):
    # One layer: every cached key/value is a function of its own token and position only, so
    # refreshing them once per block loses nothing and the cached sampler must equal the reference.
    reference = _rollout(_policy("none", temperature=temperature, threshold=threshold), observations)
    cached = _rollout(_policy(cache, temperature=temperature, threshold=threshold), observations)
    assert torch.equal(cached.sequences, reference.sequences)
    assert torch.equal(cached.unmask_step, reference.unmask_step)
    assert cached.extras["nfe"] == reference.extras["nfe"]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_differs_on_a_deep_model_but_each_block_starts_exact(observations, cache):
    # With 2 layers the cached keys go stale inside a block (approximate by design), but the
    # first step of a block is a full forward, so the state after step 1 is the reference's.
    policy, reference = _policy(cache, layers=2), _policy("none", layers=2)
    obs = [o for o in observations if o.get("task", "") != "image_edit"][:2]
    states: dict[str, list[SamplerState]] = {}
    for name, pol in (("cached", policy), ("none", reference)):
        rows = pol.rollout(obs, 1, generator=torch.Generator().manual_seed(0))
        states[name] = rows.unmask_step
    first = lambda record: (record == 1)  # noqa: E731
    assert torch.equal(first(states["cached"]), first(states["none"]))


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_forced_suffix_is_never_changed_under_any_cache(observations, cache):
    policy = _policy(cache, layers=2, temperature=1.0)
    suffix = "<answer>7</answer>"
    out = _rollout(policy, observations, forced=[suffix] * len(observations))
    ids = torch.tensor(policy.suffix_ids(suffix))
    for row in range(len(out)):
        forced = out.forced_mask[row]
        assert (out.unmask_step[row][forced] == 0).all()
        text_forced = forced & ~out.extras["code_mask"][row]  # the suffix, then an image span's <boi>/<eoi>
        assert torch.equal(out.sequences[row][text_forced][: len(ids)], ids)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_tree_continuation_from_a_cached_rollout_makes_only_the_remaining_calls(observations, cache):
    policy = _policy(cache, layers=2, temperature=1.0)
    obs = observations[:1]
    parents = _rollout(policy, obs, n=1)
    child = policy.rollout_from(obs, parents, step=5, num_samples=2, generator=torch.Generator().manual_seed(1))
    steps = policy.decoding.plan(int(parents.response_mask[0].sum()))[0]
    assert child.extras["nfe"] == steps - 5
    kept = (parents.unmask_step[0] >= 0) & (parents.unmask_step[0] <= 5) & parents.response_mask[0]
    for row in range(2):
        assert torch.equal(child.sequences[row][kept], parents.sequences[0][kept])


def test_a_model_function_without_cache_support_falls_back_to_none_with_one_warning():
    model = TinyDenoiser(seed=0).eval()
    prompts = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    settings = dict(gen_length=8, steps=8, block_length=4, mask_id=MASK_ID)
    reference = sample(model, prompts, None, generator=torch.Generator().manual_seed(0), **settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = sample(model, prompts, None, generator=torch.Generator().manual_seed(0), cache="dual", **settings)
        sample(model, prompts, None, generator=torch.Generator().manual_seed(0), cache="prefix", **settings)
    messages = [str(w.message) for w in caught if "KV cache" in str(w.message)]
    assert len(messages) == 1 and "TinyDenoiser" in messages[0] and "cache='none'" in messages[0]
    assert torch.equal(first.sequences, reference.sequences)


def test_bad_cache_mode_is_named():
    with pytest.raises(ValueError, match="cache must be one of"):
        sample(TinyDenoiser(), torch.zeros(1, 3, dtype=torch.long), None, gen_length=4, steps=4, block_length=4,
               mask_id=MASK_ID, cache="full")  # fmt: skip
    with pytest.raises(ValueError, match="DecodingConfig.cache"):
        DecodingConfig(cache="everything").validate()


def test_explicit_block_sizes_decode_left_to_right_with_proportional_steps():
    assert split_steps(16, (192, 258)) == (7, 9)
    assert split_steps(4, (2, 2)) == (2, 2) and split_steps(3, (1, 5)) == (1, 2)
    prompts = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    out = sample(TinyDenoiser(seed=0).eval(), prompts, None, gen_length=10, steps=5, block_length=[4, 6], mask_id=MASK_ID)
    record = out.unmask_step
    assert int(record[:, :4].max()) <= 2 < int(record[:, 4:].min())  # block 1 takes steps 1-2, block 2 steps 3-5
    assert out.steps_taken == 5 and not (out.sequences == MASK_ID).any()
    with pytest.raises(ValueError, match="sum to gen_length"):
        sample(TinyDenoiser(), prompts, None, gen_length=10, steps=5, block_length=[4, 4], mask_id=MASK_ID)


def test_image_responses_plan_a_text_block_and_an_image_block():
    d = DecodingConfig(steps=16, block_length=16)
    assert d.plan(450, 192) == (16, (192, 258))
    assert d.plan(64) == (16, 16) and d.plan(50) == (16, 50)


def test_rows_of_several_layouts_give_the_same_results_batched_or_alone(observations):
    policy = _policy("dual", layers=2)
    together = policy.rollout(observations, 1, generator=torch.Generator().manual_seed(0))
    for i, obs in enumerate(observations):
        alone = policy.rollout([obs], 1, generator=torch.Generator().manual_seed(0))
        width = alone.sequences.shape[1]
        assert torch.equal(together.sequences[i, -width:], alone.sequences[0])
