"""agents.diffusion.tree: N*k leaves, branching from the best leaf's rebuilt state, model-call savings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_denoiser import MASK_ID, TinyDenoiser

from agents.diffusion.sampler import rebuild_state, sample
from agents.diffusion.tree import best_leaves, check_branch_steps, tree_rollout
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


def test_bad_schedules_are_rejected():
    for bad in ([], [4, 8], [0, 8, 8], [0, 12]):
        with pytest.raises(ValueError, match="branch_steps"):
            check_branch_steps(bad, STEPS)
    assert check_branch_steps([0, 4], STEPS) == [0, 4]


def test_best_leaves_takes_the_highest_reward_and_the_earliest_on_ties():
    rewards = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.2, 0.9])
    assert best_leaves(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), 2).tolist() == [1, 3]
    with pytest.raises(ValueError, match="group 2"):
        best_leaves(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), 3)


class SamplerPolicy:
    """A minimal policy over the real sampler + TinyDenoiser with the ``rollout_from`` branching hook."""

    supports_tree_search = True

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


class MeanLetterEnv(LetterEnv):
    """Reward = mean letter position in the alphabet (real-valued, few ties)."""

    def step(self, action):
        reward = sum(ord(c) - 97 for c in action) / (25 * max(len(action), 1))
        return None, reward, True, False, {"correct": False, "reward_components": {"mean": reward}}


def test_tree_rollout_branches_from_the_best_leaf_so_far_and_keeps_its_prefix():
    schedule = (0, 4, 8)
    batch = tree_rollout(SamplerPolicy(), {"letters": MeanLetterEnv()}, [("letters", 1), ("letters", 2)], N,
                         branch_steps=schedule, generator=torch.Generator().manual_seed(0))  # fmt: skip
    seqs, record = batch.rollouts.sequences[:, P:], batch.rollouts.unmask_step[:, P:]
    parents = set()
    for g in (0, 1):
        leaves = [g * N * 3 + i for i in range(N * 3)]  # round 0's N rows, round 1's N rows, round 2's N rows
        for j in (1, 2):
            earlier = leaves[: j * N]
            best = earlier[int(torch.argmax(batch.rewards[earlier]))]
            parents.add(best)
            for row in leaves[j * N : (j + 1) * N]:
                kept = record[best] <= schedule[j]
                assert torch.equal(seqs[row][kept], seqs[best][kept]) and torch.equal(record[row][kept], record[best][kept])
                assert bool((record[row][~kept] > schedule[j]).all())  # everything else was redone after the branch
    assert parents != {0, N * 3}  # the best leaf is not simply the first one


def test_tree_rollout_names_the_missing_branching_hook():
    class NoHook:
        rollout = SamplerPolicy.rollout
        supports_tree_search = False

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
