"""ARPolicy: valid env actions, exact log-likelihood, KV-cache decoding, save/load, size, SFT."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import lavida_envs  # noqa: F401  (registers the env ids)
from agents import DiffusionPolicy, Policy, TrainablePolicy
from agents.diffusion.codec import PaletteCodec
from agents.diffusion.layout import task_of
from agents.diffusion.policy import DecodingConfig
from agents.diffusion.rows import NEG_LOGIT
from agents.sft import build_sft_batch, sft_examples
from agents.autoregressive import ARPolicy
from agents.autoregressive.model import positions
from task_envs import ENVS


def tiny_policy(seed: int = 0, **decoding) -> ARPolicy:
    settings = dict(gen_length=16, task_gen_length={"grounding": 16, "image_edit": 8})
    settings.update(decoding)
    return ARPolicy.tiny(
        seed=seed, codec=PaletteCodec(grid=4, image_size=32), decoding=DecodingConfig(**settings),
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
    )  # fmt: skip


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def greedy_without_cache(policy: ARPolicy, obs: dict) -> list[int]:
    """The greedy response of one unpadded row, re-running the whole sequence at every step (no KV cache)."""
    layout = policy.layout(task_of(obs))
    ids = policy.prompt_ids(obs)
    pixels = policy.pixel_values([obs])
    response: list[int] = []

    def step(kind: str) -> int:
        seq = torch.tensor([ids + response])
        with torch.no_grad():
            logits = policy.model(seq, pixel_values=pixels, use_cache=False).logits[0, -1]
        return int(logits.masked_fill(~policy.allowed[kind], NEG_LOGIT).argmax())

    while len(response) < layout.text_length and (not response or response[-1] != policy.ids.eos):
        response.append(step("text"))
    response += [policy.ids.eos] * (layout.text_length - len(response))
    if layout.grid:
        response.append(policy.ids.boi)
        for _ in range(layout.grid**2):
            response.append(step("code"))
        response.append(policy.ids.eoi)
    return response


def test_implements_the_protocols(policy):
    assert isinstance(policy, Policy) and isinstance(policy, TrainablePolicy)


@pytest.mark.parametrize("env_index", range(3))
def test_act_returns_valid_env_actions(policy, observations, env_index):
    env = gym.make(ENVS[env_index], difficulty=1, split="test")
    actions = policy.act([observations[env_index]], num_samples=2)
    assert len(actions) == 1 and len(actions[0]) == 2
    for action in actions[0]:
        if ENVS[env_index].endswith("ImageEdit-v0"):
            assert isinstance(action, dict) and action["image"].shape == observations[env_index]["image"].shape
            assert action["image"].dtype == np.uint8
        else:
            assert isinstance(action, str)
        env.reset(options={"index": 0})
        assert env.action_space.contains(action)
        _, reward, terminated, _, _ = env.step(action)
        assert terminated and 0.0 <= reward <= 1.0


def test_kv_cache_generate_equals_no_cache_greedy_loop(policy, observations):
    rollouts = policy.rollout(observations)  # one batch: rows of different prompt lengths are left-padded
    for row, obs in enumerate(observations):
        layout = policy.layout(task_of(obs))
        assert rollouts.sequences[row, -layout.length :].tolist() == greedy_without_cache(policy, obs)


def test_rollout_record_masks_and_batch_independence(policy, observations):
    rollouts = policy.rollout(observations, num_samples=2)
    assert rollouts.unmask_step is None and rollouts.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert rollouts.response_mask.shape == rollouts.sequences.shape == rollouts.attention_mask.shape
    for row in range(len(rollouts)):
        scored = rollouts.sequences[row][rollouts.response_mask[row]].tolist()
        code = rollouts.extras["code_mask"][row][rollouts.response_mask[row]]
        text = [t for t, c in zip(scored, code.tolist()) if not c]
        assert policy.ids.eos not in text[:-1]  # text is scored up to the first <eos> inclusive
        assert int(code.sum()) == (16 if row >= 4 else 0)  # grid 4: the image codes are scored
        assert all(policy.ids.code_start <= t < policy.ids.code_end for t, c in zip(scored, code.tolist()) if c)
    alone = policy.rollout([observations[0]])
    width = alone.sequences.shape[1]
    assert torch.equal(alone.sequences[0], rollouts.sequences[0, -width:])


def test_log_likelihood_is_the_exact_sum_of_response_token_log_probs(policy, observations):
    policy.decoding.temperature = 1.0
    try:
        rollouts = policy.rollout(observations, 2, generator=torch.Generator().manual_seed(3))
        ll = policy.log_likelihood(rollouts, "complementary", mask_seed=7)
        assert torch.equal(ll, policy.log_likelihood(rollouts, "mean_field", mask_seed=1))  # exact: no estimator
        terms = policy.log_likelihood_terms(rollouts)
        assert torch.equal(terms.loglik, ll) and terms.token_logp.shape == rollouts.sequences.shape
        assert torch.equal(terms.scored_count.bool(), rollouts.response_mask)
        for row in range(len(rollouts)):
            keep = rollouts.attention_mask[row]
            seq = rollouts.sequences[row][keep]  # the row alone, no padding
            scored = rollouts.response_mask[row][keep]
            code = rollouts.extras["code_mask"][row][keep]
            with torch.no_grad():
                logits = policy.model(seq[None], pixel_values=rollouts.pixel_values[row : row + 1]).logits[0]
            manual = 0.0
            for t in torch.nonzero(scored).flatten().tolist():
                allowed = policy.allowed["code" if code[t] else "text"]
                logp = torch.log_softmax(logits[t - 1].masked_fill(~allowed, NEG_LOGIT), -1)
                manual += float(logp[seq[t]])
            assert ll[row].item() == pytest.approx(manual, abs=1e-3)
    finally:
        policy.decoding.temperature = 0.0


def test_seeded_sampling_is_reproducible_and_token_log_probs_feed_the_trl_loss(policy, observations):
    policy.decoding.temperature = 1.0
    try:
        a = policy.rollout(observations[:2], 3, generator=torch.Generator().manual_seed(5))
        b = policy.rollout(observations[:2], 3, generator=torch.Generator().manual_seed(5))
    finally:
        policy.decoding.temperature = 0.0
    assert torch.equal(a.sequences, b.sequences) and len({tuple(s.tolist()) for s in a.sequences}) > 2
    logps = policy.token_log_probs(a)  # (B, L)
    assert logps.shape == a.sequences.shape and bool((logps[~a.response_mask] == 0).all())
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.2, -0.2])
    (-(logps * advantages[:, None])[a.response_mask].mean()).backward()  # a per-token policy-gradient loss
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    policy.model.zero_grad(set_to_none=True)


def test_sft_batches_score_only_real_tokens(policy, observations):
    env = gym.make(ENVS[2], difficulty=1, split="test")
    _, info = env.reset(options={"index": 0})
    from agents.sft import reference_action

    targets = ["<answer>12</answer>", "<answer>[1, 2, 3, 4]</answer>", reference_action(env, info)]
    batch = build_sft_batch(policy, observations, targets)
    scored = policy.scored_mask(batch)
    n_text = [len(policy.tokenizer(t if isinstance(t, str) else t["text"])["input_ids"]) for t in targets]
    expected = [min(n, 16) + (n < 16) for n in n_text[:2]] + [min(n_text[2], 8) + (n_text[2] < 8) + 16]
    assert scored.sum(1).tolist() == expected
    manual = -policy.token_log_probs(batch).sum() / scored.sum()
    assert policy.sft_loss(observations, targets).item() == pytest.approx(manual.item(), rel=1e-5)


def test_forced_suffixes_raise_a_clear_error(policy, observations):
    with pytest.raises(ValueError, match="bidirectional"):
        policy.rollout(observations[:1], 2, forced=["<answer>3</answer>"])
    assert len(policy.rollout(observations[:1], 2, forced=[None])) == 2


def test_save_load_round_trip_gives_identical_outputs(policy, observations, tmp_path):
    policy.save_pretrained(str(tmp_path))
    loaded = ARPolicy.from_pretrained(str(tmp_path))
    assert loaded.decoding == policy.decoding and loaded.codec.to_dict() == policy.codec.to_dict()
    a, b = policy.rollout(observations), loaded.rollout(observations)
    assert torch.equal(a.sequences, b.sequences) and a.texts == b.texts
    assert torch.equal(policy.log_likelihood(a).detach(), loaded.log_likelihood(a).detach())
    from baselines.specs import resolve_policy

    assert isinstance(resolve_policy(str(tmp_path)), ARPolicy)
    with pytest.raises(FileNotFoundError, match="policy_config.json"):
        ARPolicy.from_pretrained(str(tmp_path / "missing"))


def test_parameter_count_matches_the_diffusion_policy():
    ar = sum(p.numel() for p in ARPolicy.tiny().model.parameters())
    diffusion = sum(p.numel() for p in DiffusionPolicy.tiny().model.parameters())
    assert abs(ar - diffusion) / diffusion < 0.25


def test_positions_count_attended_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_tiny_sft_run_lowers_the_loss():
    policy = tiny_policy(seed=1)
    stream = sft_examples(ENVS[0], "train", 1)
    rows = [next(stream) for _ in range(8)]
    observations, targets = [r[0] for r in rows], [r[1] for r in rows]
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=3e-3)
    policy.model.train()
    losses = []
    for _ in range(25):
        loss = policy.sft_loss(observations, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
