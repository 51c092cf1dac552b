"""agents.diffusion.tree: N*k leaves, branching from the best leaf's rebuilt state, model-call savings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_denoiser import MASK_ID, CallCounter, TinyDenoiser

from agents.diffusion.sampler import rebuild_state, sample
from agents.diffusion.tree import best_leaves, check_branch_steps, tree_rollout, tree_search
from agents.losses import grpo_advantages
from agents.policy import Rollouts

torch.set_num_threads(1)
MODEL = TinyDenoiser(seed=0).eval()
P, G, STEPS, N = 5, 12, 12, 3
SETTINGS = dict(gen_length=G, steps=STEPS, block_length=4, temperature=1.0, mask_id=MASK_ID)


def _prompts(batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 20, (batch, P), generator=torch.Generator().manual_seed(0))


def token_mean(sequences: torch.Tensor, prompt_index: torch.Tensor) -> torch.Tensor:
    """Synthetic real-valued reward: mean response token id / 24, plus a small prompt-dependent offset."""
    return sequences[:, P:].float().mean(1) / 24 + 0.01 * prompt_index.float()


def _tree(branch_steps=(0, 4, 8), batch=2, seed=0, model=MODEL, **kw):
    with torch.no_grad():
        return tree_search(model, _prompts(batch), None, score_fn=token_mean, num_generations=N,
                           branch_steps=branch_steps, generator=torch.Generator().manual_seed(seed), **SETTINGS, **kw)  # fmt: skip


def test_k_rounds_give_n_times_k_leaves_per_prompt_in_groups():
    out = _tree()
    assert out.sequences.shape == (2 * N * 3, P + G)
    assert out.group_ids.tolist() == [0] * 9 + [1] * 9
    assert out.round.tolist() == ([0] * N + [1] * N + [2] * N) * 2
    assert not bool((out.sequences[:, P:] == MASK_ID).any())
    assert torch.equal(out.rewards, token_mean(out.sequences, out.group_ids))
    adv = grpo_advantages(out.rewards, out.group_ids)
    for g in (0, 1):
        assert abs(float(adv[out.group_ids == g].sum())) < 1e-4  # plain group normalisation over all N*k leaves


def test_tree_makes_fewer_model_calls_than_independent_chains_and_skips_the_shared_prefix():
    out = _tree()
    assert out.nfe_per_round == [STEPS, STEPS - 4, STEPS - 8]  # a branch only runs the remaining steps
    assert out.row_evals_per_round == [2 * N * STEPS, 2 * N * (STEPS - 4), 2 * N * (STEPS - 8)]
    counter = CallCounter(MODEL)
    with torch.no_grad():  # the same number of leaves as independent chains
        sample(counter, _prompts().repeat_interleave(3 * N, 0), None, generator=torch.Generator().manual_seed(0), **SETTINGS)
    assert counter.rows == 2 * 3 * N * STEPS
    assert out.row_evals < counter.rows
    assert out.row_evals == 2 * N * (3 * STEPS - 12)
    assert out.nfe == 3 * STEPS - 12 < 3 * STEPS  # also fewer calls than k rounds of N fresh chains


def test_branches_start_from_the_best_leaf_so_far_and_keep_its_prefix():
    out = _tree()
    assert set(out.parent[out.round > 0].tolist()) != {0, 9}  # the best leaf is not simply the first one
    for row in range(len(out.round)):
        j, g = int(out.round[row]), int(out.group_ids[row])
        if j == 0:
            assert int(out.parent[row]) == -1
            continue
        earlier = ((out.group_ids == g) & (out.round < j)).nonzero().flatten()
        best = int(earlier[torch.argmax(out.rewards[earlier])])
        assert int(out.parent[row]) == best
        step = (0, 4, 8)[j]
        kept = out.unmask_step[best] <= step
        assert torch.equal(out.sequences[row, P:][kept], out.sequences[best, P:][kept])
        assert torch.equal(out.unmask_step[row][kept], out.unmask_step[best][kept])
        assert bool((out.unmask_step[row][~kept] > step).all())  # everything else was redone after the branch


def test_rebuilt_branch_state_equals_the_samplers_own_state_at_that_step():
    out = _tree(branch_steps=(0, 5), batch=2, seed=3)
    states = []
    with torch.no_grad():  # replay round 0: same prompts, same generator seed
        sample(MODEL, _prompts(2).repeat_interleave(N, 0), None, generator=torch.Generator().manual_seed(3), on_step=states.append, **SETTINGS)
    best = best_leaves(out.rewards[out.round == 0], out.group_ids[out.round == 0], 2)  # rows of round 0 (prompt-major)
    own = states[5]
    branch = out.branch_states[0]
    assert branch.step == own.step == 5
    assert torch.equal(branch.sequences, own.sequences[best])
    assert torch.equal(branch.unmask_step, own.unmask_step[best])
    again = rebuild_state(out.sequences[out.round == 0][best], out.unmask_step[out.round == 0][best], 5, P, MASK_ID)
    assert again.equals(branch)


def test_forced_positions_survive_branching():
    forced_mask = torch.zeros(2, G, dtype=torch.bool)
    forced_mask[:, -2:] = True
    forced_ids = torch.full((2, G), 7)
    out = _tree(forced_ids=forced_ids, forced_mask=forced_mask)
    assert bool((out.sequences[:, -2:] == 7).all()) and bool((out.unmask_step[:, -2:] == 0).all())


def test_one_round_is_plain_sampling_and_bad_schedules_are_rejected():
    out = _tree(branch_steps=[0])
    assert out.sequences.shape[0] == 2 * N and out.nfe == STEPS and out.branch_states == []
    for bad in ([], [4, 8], [0, 8, 8], [0, 12]):
        with pytest.raises(ValueError, match="branch_steps"):
            check_branch_steps(bad, STEPS)


class SamplerPolicy:
    """A minimal policy over the real sampler + TinyDenoiser with the ``rollout_from`` branching hook."""

    def _prompt(self, observations):
        return torch.tensor([[ord(c) % 20 for c in obs["prompt"][:P]] for obs in observations])

    def _pack(self, out, n_rows):
        response = out.sequences[:, P:]
        texts = ["".join(chr(97 + int(t) % 26) for t in row) for row in response]
        response_mask = torch.zeros(n_rows, P + G, dtype=torch.bool)
        response_mask[:, P:] = True
        unmask = torch.cat([torch.full((n_rows, P), -1), out.unmask_step], 1)
        return Rollouts(sequences=out.sequences, response_mask=response_mask, prompt_index=torch.arange(n_rows), texts=texts,
                        actions=list(texts), attention_mask=torch.ones(n_rows, P + G, dtype=torch.bool), unmask_step=unmask,
                        forced_mask=torch.zeros(n_rows, P + G, dtype=torch.bool), extras={"nfe": out.nfe})  # fmt: skip

    def rollout(self, observations, num_samples=1, forced=None, generator=None):
        prompts = self._prompt(observations).repeat_interleave(num_samples, 0)
        with torch.no_grad():
            out = sample(MODEL, prompts, None, generator=generator, **SETTINGS)
        return self._pack(out, prompts.shape[0])

    def rollout_from(self, observations, parents, step, num_samples=1, generator=None):
        prompts = self._prompt(observations).repeat_interleave(num_samples, 0)
        state = rebuild_state(parents.sequences, parents.unmask_step[:, P:], step, P, MASK_ID).repeat(num_samples)
        with torch.no_grad():
            out = sample(MODEL, prompts, None, generator=generator, state=state, **SETTINGS)
        return self._pack(out, prompts.shape[0])


class LetterEnv:
    """Fake single-step env: reward = share of the letter 'f' in the action text."""

    def reset(self, options=None):
        self.index = options["index"]
        return {"prompt": f"abcde{self.index}", "image": np.zeros((4, 4, 3), np.uint8)}, {"task": "letters", "answer": None}

    def step(self, action):
        reward = action.count("f") / max(len(action), 1)
        return None, reward, True, False, {"correct": reward > 0.5, "reward_components": {"f": reward}}


def test_tree_rollout_scores_all_leaves_with_the_env_and_groups_them():
    batch = tree_rollout(SamplerPolicy(), {"letters": LetterEnv()}, [("letters", 1), ("letters", 2)], N,
                         branch_steps=[0, 4, 8], generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(batch) == 2 * N * 3
    assert batch.group_ids.tolist() == [0] * 9 + [1] * 9
    assert batch.rewards.tolist() == pytest.approx([t.count("f") / G for t in batch.rollouts.texts])
    assert batch.metrics["tree_nfe"] == STEPS + (STEPS - 4) + (STEPS - 8)
    assert batch.tasks == ["letters"] * 18 and not bool(batch.forced.any())


def test_tree_rollout_names_the_missing_branching_hook():
    class NoHook:
        rollout = SamplerPolicy.rollout

    with pytest.raises(TypeError, match="rollout_from"):
        tree_rollout(NoHook(), {"letters": LetterEnv()}, [("letters", 1)], N, branch_steps=[0, 4])


def test_tree_rollout_with_the_real_diffusion_policy_on_image_edit():
    import gymnasium as gym

    import lavida_envs  # noqa: F401
    from agents.diffusion.policy import DecodingConfig, DiffusionPolicy

    decoding = DecodingConfig(gen_length=8, steps=8, block_length=8, temperature=1.0, task_gen_length={"image_edit": 8})
    policy = DiffusionPolicy.tiny(seed=0, decoding=decoding)
    env = gym.make("LaViDa/ImageEdit-v0", image_size=32, difficulty=1)
    batch = tree_rollout(policy, {"edit": env}, [("edit", 0), ("edit", 3)], 2, branch_steps=[0, 4],
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(batch) == 2 * 2 * 2 and batch.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert batch.tasks == ["image_edit"] * 8
    assert all(isinstance(a, dict) and a["image"].shape == (32, 32, 3) for a in batch.rollouts.actions)
    assert all("edit" in info["reward_components"] for info in batch.infos)
    assert batch.metrics["tree_nfe"] == 8 + (8 - 4)  # the branch round skips the 4 shared steps
    r = batch.rollouts
    for g in (0, 1):
        leaves = [4 * g + i for i in range(4)]
        best = leaves[int(torch.argmax(batch.rewards[leaves[:2]]))]
        for child in leaves[2:]:
            kept = (r.unmask_step[best] >= 0) & (r.unmask_step[best] <= 4)
            assert torch.equal(r.sequences[child][kept], r.sequences[best][kept])
            assert bool((r.unmask_step[child][r.unmask_step[best] > 4] > 4).all())
