"""DiffusionPolicy: valid env actions for every env, forcing, unmask record, likelihood, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import lavida_envs  # noqa: F401  (registers the env ids)
from agents import DiffusionPolicy, Policy, Rollouts, TrainablePolicy, as_policy
from agents.diffusion.codec import PaletteCodec
from agents.diffusion.layout import task_of
from agents.diffusion.policy import DecodingConfig
from agents.policy import expand_forced
from task_envs import ENVS


def tiny_policy(seed: int = 0, **decoding) -> DiffusionPolicy:
    settings = dict(gen_length=16, steps=8, block_length=8, task_gen_length={"grounding": 16, "image_edit": 8})
    settings.update(decoding)
    return DiffusionPolicy.tiny(
        seed=seed, codec=PaletteCodec(grid=4, image_size=32), decoding=DecodingConfig(**settings),
        hidden_size=32, num_layers=1, num_heads=2, image_size=32, patch_size=16,
    )  # fmt: skip


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def test_implements_the_protocols(policy):
    assert isinstance(policy, Policy) and isinstance(policy, TrainablePolicy)
    assert isinstance(as_policy(lambda obs: "x"), Policy)
    assert as_policy(lambda obs: "x").act([{}], 2) == [["x", "x"]]


def test_tasks_are_routed_from_the_prompt(observations):
    assert [task_of(o) for o in observations] == ["text", "grounding", "image_edit"]
    assert task_of({"prompt": "anything", "task": "image_edit"}) == "image_edit"


@pytest.mark.parametrize("env_index", range(3))
def test_act_returns_valid_env_actions(policy, observations, env_index):
    env = gym.make(ENVS[env_index], difficulty=1, split="test")
    env.reset(options={"index": 0})
    actions = policy.act([observations[env_index]], num_samples=2)
    assert len(actions) == 1 and len(actions[0]) == 2
    for action in actions[0]:
        if ENVS[env_index].endswith("ImageEdit-v0"):
            assert isinstance(action, dict) and action["image"].shape == observations[env_index]["image"].shape
            assert action["image"].dtype == np.uint8
        else:
            assert isinstance(action, str)
        assert env.action_space.contains(action)
        _, reward, terminated, _, info = env.step(action)
        assert terminated and 0.0 <= reward <= 1.0


def test_rollout_record_masks_and_forcing(policy, observations):
    forced = [None, "<answer>[1, 2, 3, 4]</answer>", "<answer>x</answer>"]
    out = policy.rollout(observations, num_samples=2, forced=forced, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, Rollouts) and len(out) == 6
    assert out.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.extras["task"] == ["text", "text", "grounding", "grounding", "image_edit", "image_edit"]
    mask_id = policy.ids.mask
    assert not bool((out.sequences[out.response_mask] == mask_id).any())
    assert bool((out.unmask_step[~out.response_mask] == -1).all())
    assert bool((out.unmask_step[out.forced_mask] == 0).all())
    free = out.response_mask & ~out.forced_mask
    assert bool((out.unmask_step[free] >= 1).all())
    for row in (2, 3):
        assert out.texts[row].endswith("<answer>[1, 2, 3, 4]</answer>")
    edit = out.sequences[4][out.response_mask[4]].tolist()
    assert edit[8] == policy.ids.boi and edit[-1] == policy.ids.eoi
    codes = torch.tensor(edit[9:-1])
    assert bool(((codes >= policy.ids.code_start) & (codes < policy.ids.code_end)).all())
    assert out.pixel_values.shape == (6, 3, 32, 32)


def test_greedy_act_is_deterministic_and_batch_independent(policy, observations):
    together = policy.act(observations[:2])
    alone = [policy.act([o])[0] for o in observations[:2]]
    assert together == alone == policy.act(observations[:2])


def test_log_likelihood_estimators_have_gradients_and_fixed_masks(policy, observations):
    out = policy.rollout(observations, num_samples=1)
    for estimator in ("mean_field", "random_mask", "complementary"):
        ll = policy.log_likelihood(out, estimator, mask_seed=3)
        assert ll.shape == (3,) and bool(torch.isfinite(ll).all()) and bool((ll < 0).all())
        assert torch.equal(ll.detach(), policy.log_likelihood(out, estimator, mask_seed=3).detach())
        policy.model.zero_grad()
        ll.sum().backward()
        assert policy.model.lm_head.weight.grad is not None
    with pytest.raises(ValueError, match="unknown estimator"):
        policy.log_likelihood(out, "exact", 0)


def test_save_load_round_trip_gives_identical_policy(policy, observations, tmp_path):
    policy.save_pretrained(tmp_path)
    loaded = DiffusionPolicy.from_pretrained(tmp_path)
    assert loaded.decoding == policy.decoding and loaded.codec.to_dict() == policy.codec.to_dict()
    a, b = policy.rollout(observations), loaded.rollout(observations)
    assert torch.equal(a.sequences, b.sequences) and a.texts == b.texts
    assert torch.equal(policy.log_likelihood(a, "complementary", 1), loaded.log_likelihood(b, "complementary", 1))
    with pytest.raises(FileNotFoundError, match="policy_config.json"):
        DiffusionPolicy.from_pretrained(tmp_path / "missing")


def test_bad_arguments_raise_clear_errors(policy, observations):
    with pytest.raises(ValueError, match="one entry per observation"):
        expand_forced(["a", "b"], 3, 2)
    with pytest.raises(ValueError, match="does not fit"):
        policy.rollout(observations[:1], forced=["<answer>" + "9" * 40 + "</answer>"])
    with pytest.raises(ValueError, match="uint8"):
        policy.act([{"image": np.zeros((8, 8)), "prompt": "hi"}])
    with pytest.raises(ValueError, match="remasking"):
        DecodingConfig(remasking="greedy").validate()


def test_rollout_from_resumes_greedy_parents_exactly_with_fewer_model_calls(policy, observations):
    parents = policy.rollout(observations, num_samples=1, forced=[None, "<answer>[1, 2, 3, 4]</answer>", None])
    children = policy.rollout_from(observations, parents, step=5, num_samples=2)
    assert len(children) == 6 and children.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]
    for row in range(6):
        parent = row // 2
        assert torch.equal(children.sequences[row], parents.sequences[parent])
        kept = (parents.unmask_step[parent] <= 5) & parents.response_mask[parent]
        assert torch.equal(children.unmask_step[row][kept], parents.unmask_step[parent][kept])
    assert children.texts[2].endswith("<answer>[1, 2, 3, 4]</answer>")
    assert children.extras["nfe"] < parents.extras["nfe"]


def test_left_padded_rollouts_keep_their_likelihood(policy, observations):
    out = policy.rollout(observations[:1])
    wider = out.left_padded(out.sequences.shape[1] + 7, pad_id=policy.ids.pad)
    assert wider.sequences.shape[1] == out.sequences.shape[1] + 7
    assert bool((wider.unmask_step[:, :7] == -1).all()) and not bool(wider.attention_mask[:, :7].any())
    with torch.no_grad():
        a = policy.log_likelihood(out, "mean_field", 0)
        b = policy.log_likelihood(wider, "mean_field", 0)
    assert torch.allclose(a, b, atol=1e-4)


def test_from_pretrained_applies_decoding_overrides_and_rejects_unknown(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    loaded = DiffusionPolicy.from_pretrained(tmp_path, temperature=0.0, steps=policy.decoding.steps)
    assert loaded.decoding.temperature == 0.0
    with pytest.raises(ValueError, match="bogus"):
        DiffusionPolicy.from_pretrained(tmp_path, bogus=1)


def test_mean_field_prompt_masking_spares_images_and_the_response(policy, observations, monkeypatch):
    import agents.diffusion.likelihood as likelihood

    out = policy.rollout(observations, num_samples=1)
    seen = {}
    real = likelihood.estimate_log_likelihood

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(likelihood, "estimate_log_likelihood", spy)
    plain = policy.log_likelihood_terms(out, "mean_field", 5).loglik.detach()
    masked = policy.log_likelihood_terms(out, "mean_field", 5, prompt_mask_prob=0.5).loglik.detach()
    assert not torch.equal(plain, masked)
    keep = seen["prompt_mask_exclude"][:, 1:].cpu()  # drop the tag column
    assert bool(keep[out.sequences == policy.ids.image].all())
    assert bool(keep[out.response_mask].all())
    with pytest.raises(ValueError, match="mean_field"):
        policy.log_likelihood_terms(out, "complementary", 5, prompt_mask_prob=0.5)
