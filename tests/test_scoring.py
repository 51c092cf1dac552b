"""lavida_envs.scoring.score_actions: one reset per group gives exactly what reset + step per action gives."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import lavida_envs
from lavida_envs.scoring import score_actions


def _same(a, b) -> bool:
    """Deep equality that also compares numpy arrays (and NaN to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _actions(env: gym.Env, index: int, info: dict) -> list:
    """The reference action, near misses and junk for problem ``index``."""
    solution = info["solution"]
    target = env.unwrapped.problem(index).meta.get("target_image")
    reference = solution if target is None else {"text": solution, "image": np.asarray(target, np.uint8)}
    wrong_image = np.zeros((env.unwrapped.image_size,) * 2 + (3,), np.uint8)
    return [
        reference,
        "<think>no idea</think><answer>0</answer>",
        {"text": solution, "image": wrong_image},
        "\\frac{" * 50,
        12345,
        reference,  # the same action again, after others on the same reset
    ]


@pytest.mark.parametrize("env_id", lavida_envs.ENV_IDS)
def test_one_reset_scores_like_a_fresh_reset_per_action(env_id):
    scored_env = gym.make(env_id, split="test", difficulty=1, image_size=32)
    fresh_env = gym.make(env_id, split="test", difficulty=1, image_size=32)
    rewards = set()
    for index in (0, 3, 7):
        obs, info = fresh_env.reset(options={"index": index})
        actions = _actions(fresh_env, index, info)
        episode = score_actions(scored_env, index, actions)
        assert episode.index == index and _same(episode.observation, obs) and _same(episode.reset_info, info)
        assert len(episode.steps) == len(actions)
        for action, got in zip(actions, episode.steps):
            fresh_env.reset(options={"index": index})
            _, reward, terminated, _, expected = fresh_env.step(action)
            assert terminated and got.reward == reward and got.correct == bool(expected["correct"])
            assert _same(got.info, expected) and got.components == expected["reward_components"]
            rewards.add(round(reward, 6))
    assert len(rewards) > 1  # the actions really score differently, so equality means something


class CountingEnv:
    """Not a TaskEnv: scored with a fresh reset before every action."""

    def __init__(self) -> None:
        self.resets = 0

    def reset(self, options=None):
        self.resets += 1
        self.stepped = False
        return {"prompt": "p"}, {"index": options["index"]}

    def step(self, action):
        assert not self.stepped, "stepped twice on one reset"
        self.stepped = True
        return None, float(action), True, False, {"correct": action > 0.5, "reward_components": {"x": float(action)}}


def test_an_env_that_is_not_a_task_env_is_reset_before_every_action():
    env = CountingEnv()
    episode = score_actions(env, 4, [0.2, 0.9, 0.4])
    assert env.resets == 3 and [s.reward for s in episode.steps] == [0.2, 0.9, 0.4]
    assert [s.correct for s in episode.steps] == [False, True, False] and episode.reset_info == {"index": 4}
