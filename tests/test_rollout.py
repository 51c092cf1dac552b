"""agents.rollout: groups scored by the real envs, answer forcing (trigger, coin, gold-only), row plumbing."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import lavida_envs  # noqa: F401  (registers the ids)
from agents.policy import Rollouts, expand_forced
from agents.rollout import ForcingConfig, Problem, collect_groups, concat_rollouts, sample_problems, select_rows

torch.set_num_threads(1)
WRONG = "<think>I guess.</think><answer>nonsense</answer>"
L, R = 10, 6  # fake rows: L positions, the last R are the response


@pytest.fixture(scope="module")
def envs():
    return {
        "math": gym.make("LaViDa/VisualMath-v0", image_size=32, difficulty=1),
        "edit": gym.make("LaViDa/ImageEdit-v0", image_size=32, difficulty=1),
    }


def gold(envs, index: int) -> str:
    return envs["math"].unwrapped.problem(index).answer


class ScriptedPolicy:
    """A TrainablePolicy double: ``script(obs, forced_suffix, row) -> text``; records what it was asked."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def rollout(self, observations, num_samples=1, forced=None, generator=None):
        suffixes = expand_forced(forced, len(observations), num_samples)
        obs_rows = [obs for obs in observations for _ in range(num_samples)]
        self.calls.append(suffixes)
        texts = [self.script(obs, s, row) for row, (obs, s) in enumerate(zip(obs_rows, suffixes))]
        n = len(texts)
        response = torch.zeros(n, L, dtype=torch.bool)
        response[:, L - R :] = True
        forced_mask = torch.zeros(n, L, dtype=torch.bool)
        for row, s in enumerate(suffixes):
            forced_mask[row, L - 2 :] = s is not None  # the suffix sits in the last positions
        return Rollouts(
            sequences=torch.arange(n * L).view(n, L), response_mask=response,
            prompt_index=torch.arange(n) // num_samples, texts=texts, actions=list(texts),
            attention_mask=torch.ones(n, L, dtype=torch.bool), forced_mask=forced_mask,
            extras={"task": [o["task"] for o in obs_rows], "nfe": 3},
        )  # fmt: skip


def wrong_unless_forced(obs, suffix, row):
    return WRONG if suffix is None else "<think>Count the shapes.</think>" + suffix


def _collect(envs, policy, problems, n=3, seed=0, **forcing):
    config = ForcingConfig(**{"prob": 1.0, **forcing})
    return collect_groups(policy, envs, problems, n, forcing=config, rng=np.random.default_rng(seed))


def test_all_wrong_group_gets_a_forced_gold_sample_and_gains_reward_variance(envs):
    policy = ScriptedPolicy(wrong_unless_forced)
    batch = _collect(envs, policy, [("math", 0), ("math", 1)])
    assert policy.calls == [[None] * 3 + [f"<answer>{gold(envs, 0)}</answer>"] + [None] * 3 + [f"<answer>{gold(envs, 1)}</answer>"]]
    assert batch.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert batch.forced.tolist() == [False, False, False, True] * 2
    assert batch.rewards.tolist() == pytest.approx([0.1, 0.1, 0.1, 1.0] * 2)
    assert batch.correct.tolist() == [False, False, False, True] * 2
    m = batch.metrics
    assert m["frac_reward_zero_std"] == 1.0 and m["frac_reward_zero_std/after_forcing"] == 0.0
    assert m["forcing_trigger_frac"] == 1.0 and m["forced_frac"] == 1.0 and m["forced_reward"] == pytest.approx(1.0)
    assert m["reward"] == pytest.approx(0.1) and m["accuracy/visual_math"] == 0.0  # free rows only
    # forced tokens are left out of the forced row's likelihood; free rows keep their whole response
    assert batch.rollouts.response_mask[3].tolist() == [False] * (L - R) + [True] * (R - 2) + [False] * 2
    assert bool(batch.rollouts.response_mask[0, L - R :].all())
    assert batch.rollouts.prompt_index.tolist() == batch.group_ids.tolist()
    assert batch.problems[1]["answer"] == gold(envs, 1) and batch.infos[3]["reward_components"]["accuracy"] == 1.0


def test_forced_tokens_in_loss_keeps_the_whole_response():
    envs_ = {"math": gym.make("LaViDa/VisualMath-v0", image_size=32, difficulty=1)}
    batch = _collect(envs_, ScriptedPolicy(wrong_unless_forced), [("math", 0)], tokens_in_loss=True)
    assert bool(batch.forced[-1]) and bool(batch.rollouts.response_mask[-1, L - R :].all())


def test_forcing_never_fires_on_a_group_with_a_correct_answer(envs):
    def one_correct(obs, suffix, row):
        return f"<think>ok</think><answer>{gold(envs, 2)}</answer>" if row == 1 else wrong_unless_forced(obs, suffix, row)

    policy = ScriptedPolicy(one_correct)
    batch = _collect(envs, policy, [("math", 2)])
    assert len(batch) == 3 and not bool(batch.forced.any())
    assert batch.rewards.tolist() == pytest.approx([0.1, 1.0, 0.1])
    assert batch.metrics["forcing_trigger_frac"] == 0.0 and batch.metrics["forced_frac"] == 0.0
    assert batch.metrics["forced_sampled_frac"] == 1.0  # the coin came up, so the extra row was sampled, then dropped


def test_forcing_never_fires_on_tasks_without_gold_or_when_off(envs):
    policy = ScriptedPolicy(wrong_unless_forced)
    batch = _collect(envs, policy, [("edit", 0), ("edit", 1)])
    assert policy.calls == [[None] * 6]  # image_edit: never even sampled
    assert batch.rewards.tolist() == pytest.approx([0.1] * 6)  # all below the threshold, still no forcing
    assert batch.metrics["forcing_trigger_frac"] == 0.0 and batch.metrics["frac_reward_zero_std/after_forcing"] == 1.0
    assert batch.tasks == ["image_edit"] * 6
    for forcing, trigger in (({"enabled": False}, 1.0), ({"prob": 0.0}, 1.0), ({"tasks": ("grounding",)}, 0.0)):
        policy = ScriptedPolicy(wrong_unless_forced)
        off = _collect(envs, policy, [("math", 0)], **forcing)
        assert not bool(off.forced.any()) and policy.calls == [[None] * 3]
        assert off.metrics["forcing_trigger_frac"] == trigger  # the condition is still logged with forcing off


def test_forcing_coin_is_seeded_and_drawn_once_per_group(envs):
    problems = [Problem("math", i) for i in range(8)]
    batch = _collect(envs, ScriptedPolicy(wrong_unless_forced), problems, n=2, seed=123, prob=0.5)
    coins = np.random.default_rng(123).random(8) < 0.5
    forced_groups = batch.group_ids[batch.forced].tolist()
    assert forced_groups == [g for g in range(8) if coins[g]]
    assert 0 < len(forced_groups) < 8
    assert batch.metrics["forced_frac"] == pytest.approx(coins.mean())
    again = _collect(envs, ScriptedPolicy(wrong_unless_forced), problems, n=2, seed=123, prob=0.5)
    assert again.forced.tolist() == batch.forced.tolist()


def test_default_forcing_settings_match_the_paper():
    cfg = ForcingConfig()
    assert (cfg.threshold, cfg.prob, cfg.tokens_in_loss) == (0.5, 0.1, False)
    assert "image_edit" not in cfg.tasks and cfg.suffix("visual_math", " 42 ") == "<answer>42</answer>"
    assert cfg.suffix("image_edit", "move it") is None and cfg.suffix("visual_math", "") is None


def test_bad_inputs_raise_clear_errors(envs):
    with pytest.raises(KeyError, match="nowhere"):
        _collect(envs, ScriptedPolicy(wrong_unless_forced), [("nowhere", 0)])

    class Short(ScriptedPolicy):
        def rollout(self, observations, num_samples=1, forced=None, generator=None):
            return select_rows(super().rollout(observations, num_samples, forced, generator), [0])

    with pytest.raises(ValueError, match="returned 1 rows"):
        _collect(envs, Short(wrong_unless_forced), [("math", 0)])


def test_select_and_concat_rows_keep_per_row_fields_together():
    r = ScriptedPolicy(lambda o, s, row: f"t{row}").rollout([{"task": "a"}, {"task": "b"}], 2)
    picked = select_rows(r, [3, 0])
    assert picked.texts == ["t3", "t0"] and picked.extras["task"] == ["b", "a"]
    assert torch.equal(picked.sequences, r.sequences[[3, 0]]) and picked.extras["nfe"] == 3
    both = concat_rollouts([r, picked])
    assert len(both) == 6 and both.texts[-2:] == ["t3", "t0"] and both.extras["nfe"] == 6
    wider = select_rows(r, [0])
    wider.sequences = torch.zeros(1, L + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="sequences shapes differ"):
        concat_rollouts([r, wider])


def test_real_diffusion_policy_forced_tokens_sit_at_the_forced_positions(envs):
    from agents.diffusion.policy import DecodingConfig, DiffusionPolicy

    decoding = DecodingConfig(gen_length=24, steps=8, block_length=8, temperature=1.0)
    policy = DiffusionPolicy.tiny(seed=0, decoding=decoding)
    batch = collect_groups(policy, envs, [("math", 1)], 3, forcing=ForcingConfig(prob=1.0),
                           rng=np.random.default_rng(0), generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert batch.forced.tolist() == [False, False, False, True]
    suffix_ids = policy.tokenizer(f"<answer>{gold(envs, 1)}</answer>", add_special_tokens=False)["input_ids"]
    r = batch.rollouts
    row = r.sequences[3]
    forced_positions = r.forced_mask[3].nonzero().flatten()
    assert row[forced_positions].tolist() == suffix_ids
    assert forced_positions.tolist() == list(range(r.sequences.shape[1] - len(suffix_ids), r.sequences.shape[1]))
    assert bool((r.unmask_step[3, forced_positions] == 0).all())
    assert not bool(r.response_mask[3, forced_positions].any()) and int(r.response_mask[3].sum()) == 24 - len(suffix_ids)
    assert not bool(r.forced_mask[:3].any())
    assert r.texts[3].endswith(f"<answer>{gold(envs, 1)}</answer>")
    assert batch.rewards[:3].max() < 0.5 and batch.correct[3] and batch.rewards[3] >= 0.9  # the group gained variance
    assert batch.metrics["frac_reward_zero_std/after_forcing"] == 0.0


def test_forcing_with_a_coin_needs_a_kept_rng(envs):
    with pytest.raises(ValueError, match="rng"):
        collect_groups(ScriptedPolicy(wrong_unless_forced), envs, [("math", 0)], 2, forcing=ForcingConfig(prob=0.1))


def test_sample_problems_follows_the_weights_and_dataset_sizes():
    class Sized:
        def num_problems(self):
            return 3

    weights = {"math": 3.0, "grounding": 1.0, "edit": 0.0}
    problems = sample_problems(weights, 2000, np.random.default_rng(5), envs={"grounding": Sized()})
    names = [p.env for p in problems]
    assert "edit" not in names and abs(names.count("math") / 2000 - 0.75) < 0.04
    assert {p.index for p in problems if p.env == "grounding"} == {0, 1, 2}
    assert len({p.index for p in problems if p.env == "math"}) > 1400  # procedural: a huge index space
    assert sample_problems(weights, 50, np.random.default_rng(5)) == sample_problems(weights, 50, np.random.default_rng(5))
    with pytest.raises(ValueError, match="weights"):
        sample_problems({"math": 0.0}, 1, np.random.default_rng(0))


def test_sample_problems_pool_bounds_the_indices_and_keeps_the_draws_otherwise():
    import numpy as np

    from agents.rollout import sample_problems

    pooled = sample_problems({"visual_math": 1.0}, 50, np.random.default_rng(0), pool=7)
    assert {p.index for p in pooled} <= set(range(7)) and len({p.index for p in pooled}) > 3
    free = sample_problems({"visual_math": 1.0}, 50, np.random.default_rng(0))
    assert max(p.index for p in free) > 7
