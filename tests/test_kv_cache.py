"""KV-cached rollouts (prefix / dual): exactness where it must hold, forcing, tree continuation, fallback, blocks."""

from __future__ import annotations

import warnings

import pytest
import torch
from task_envs import assert_left_padding_changes_nothing
from tiny_denoiser import MASK_ID, TinyDenoiser

from agents.diffusion.policy import DecodingConfig, DiffusionPolicy
from agents.diffusion.sampler import CACHE_MODES, sample, split_steps

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


class _Sentinels:
    """A :class:`CachingModelFn` whose logits say which call made them: a full forward, ``encode`` or ``window``."""

    FULL, ENCODE, WINDOW = 3, 4, 5

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _logits(self, batch: int, length: int, token: int) -> torch.Tensor:
        logits = torch.zeros(batch, length, MASK_ID + 1)
        logits[..., token] = 10.0
        return logits

    def __call__(self, input_ids, attention_mask):
        self.calls.append(("full",))
        return self._logits(*input_ids.shape, self.FULL)

    def encode(self, input_ids, attention_mask):
        self.calls.append(("encode",))
        return self._logits(*input_ids.shape, self.ENCODE), torch.zeros(input_ids.shape[0], 1)

    def window(self, input_ids, attention_mask, start, end, cache):
        assert cache.shape == (input_ids.shape[0], 1)  # the store hands back the rows' own cache
        self.calls.append(("window", start, end))
        return self._logits(input_ids.shape[0], end - start, self.WINDOW)


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_cache_is_refreshed_at_each_block_start_and_windows_decode_the_other_steps(cache):
    # 2 blocks of 8 positions, 4 steps each: steps 1 and 5 run a full forward that refreshes the
    # cache (encode), steps 2-4 and 6-8 a window over the block (dual) or the block to the end
    # (prefix); every unmasked token is the one its call voted for. cache='none': full forwards only.
    model, prompt = _Sentinels(), torch.zeros(2, 5, dtype=torch.long)
    out = sample(model, prompt, None, gen_length=16, steps=8, block_length=8, mask_id=MASK_ID, cache=cache)
    first_steps = (out.unmask_step == 1) | (out.unmask_step == 5)
    if cache == "none":
        assert model.calls == [("full",)] * 8 and (out.sequences[:, 5:] == model.FULL).all()
        return
    ends = (13, 21) if cache == "dual" else (21, 21)
    assert model.calls == [("encode",), *[("window", 5, ends[0])] * 3, ("encode",), *[("window", 13, ends[1])] * 3]
    assert out.nfe == 8 and first_steps.sum() == 2 * 2 * 2  # 2 rows x 2 blocks x 2 tokens per step
    assert (out.sequences[:, 5:][first_steps] == model.ENCODE).all()
    assert (out.sequences[:, 5:][~first_steps] == model.WINDOW).all()


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


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_left_padded_rows_of_one_layout_give_the_same_results_batched_or_alone(observations, cache):
    # Prompts of three lengths share one layout, so one sampler call left-pads them; the padding must
    # change nothing (positions, attention and the cached window's mask), with or without a cache.
    policy = _policy(cache, layers=2)
    assert_left_padding_changes_nothing(policy, observations[0], dict(observations[1], task="grounding"))
