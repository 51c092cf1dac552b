"""Random, constant and oracle policies: oracle ceilings of 1.0, random floors that always parse."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import lavida_envs  # noqa: F401  (registers the ids)
from baselines.simple import ConstantPolicy, OraclePolicy, RandomPolicy, detect_task, observation_key

ENVS = {
    "LaViDa/VisualMath-v0": "visual_math",
    "LaViDa/Grounding-v0": "grounding",
    "LaViDa/ImageEdit-v0": "image_edit",
}
INDICES = range(12)


def _episodes(env_id: str, policy, indices=INDICES, num_samples: int = 1, **kwargs):
    """(obs, [(reward, step info) per sample]) for each index, the policy acting on one batch."""
    env = gym.make(env_id, split="test", **kwargs).unwrapped
    observations = [env.reset(options={"index": i})[0] for i in indices]
    actions = policy.act(observations, num_samples=num_samples)
    out = []
    for i, obs, row in zip(indices, observations, actions):
        results = []
        for action in row:
            env.reset(options={"index": i})
            _, reward, terminated, _, info = env.step(action)
            assert terminated
            results.append((reward, info))
        out.append((obs, results))
    return out


@pytest.mark.parametrize("env_id", sorted(ENVS) + ["LaViDa/MultiTask-v0"])
def test_oracle_scores_one_on_every_env(env_id):
    env = gym.make(env_id, split="test")
    oracle = OraclePolicy(env, INDICES)
    assert len(oracle) >= 1
    for _, results in _episodes(env_id, oracle, num_samples=2):
        for reward, info in results:
            assert reward == pytest.approx(1.0), info
            assert info["correct"] and info["error"] is None


def test_oracle_without_prepare_names_the_fix():
    env = gym.make("LaViDa/VisualMath-v0", split="test").unwrapped
    obs, _ = env.reset(options={"index": 0})
    with pytest.raises(KeyError, match=r"prepare\(env, indices\)"):
        OraclePolicy().act([obs])


def test_oracle_refuses_vector_envs_and_missing_indices():
    with pytest.raises(ValueError, match="indices"):
        OraclePolicy(gym.make("LaViDa/VisualMath-v0"))
    vec = gym.make_vec("LaViDa/VisualMath-v0", 2, vectorization_mode="sync")
    with pytest.raises(TypeError, match="non-vector"):
        OraclePolicy().prepare(vec, [0])


def test_oracle_edit_action_is_text_and_exact_target():
    env = gym.make("LaViDa/ImageEdit-v0", split="test")
    oracle = OraclePolicy(env, [3])
    obs, info = env.unwrapped.reset(options={"index": 3})
    action = oracle.act([obs])[0][0]
    assert action["text"] == info["solution"]
    assert np.array_equal(action["image"], env.unwrapped.problem(3).meta["target_image"])


@pytest.mark.parametrize("box_format", ["pixel", "norm1000", "norm1"])
def test_random_boxes_always_parse_and_score_low(box_format):
    episodes = _episodes("LaViDa/Grounding-v0", RandomPolicy(seed=1), range(30), box_format=box_format)
    rewards = []
    for _, results in episodes:
        reward, info = results[0]
        assert info["error"] is None, info["error"]
        assert info["parsed"] is not None and info["reward_components"]["format"] == 1.0
        rewards.append(info["metrics"]["iou"])
    assert np.mean(rewards) < 0.3
    assert len(set(map(str, rewards))) > 1  # not a constant box


def test_random_math_answers_are_well_formed_and_mostly_wrong():
    episodes = _episodes("LaViDa/VisualMath-v0", RandomPolicy(seed=0), range(40), difficulty=5)
    accuracy = []
    for obs, results in episodes:
        _, info = results[0]
        assert info["reward_components"]["format"] == 1.0
        assert info["parsed"] is not None
        if "Choose one option" in obs["prompt"]:
            assert info["parsed"] in "ABCD"
        else:
            assert info["parsed"].isdigit()
        accuracy.append(info["reward_components"]["accuracy"])
    assert any("Choose one option" in obs["prompt"] for obs, _ in episodes)  # MC prompts covered
    assert np.mean(accuracy) < 0.5


def test_random_edits_have_an_image_of_the_right_shape():
    for obs, results in _episodes("LaViDa/ImageEdit-v0", RandomPolicy(seed=0), range(6)):
        _, info = results[0]
        assert info["error"] is None
        assert info["parsed"]["image_shape"] == list(obs["image"].shape)
        assert info["reward_components"]["edit"] < 0.9 and info["reward_components"]["format"] == 1.0


def test_random_actions_parse_on_every_multitask_subtask():
    episodes = _episodes("LaViDa/MultiTask-v0", RandomPolicy(seed=0), range(24), grounding={"box_format": "norm1000"})
    tasks = set()
    for _, results in episodes:
        _, info = results[0]
        tasks.add(info["task"])
        assert info["error"] is None and info["reward_components"]["format"] == 1.0, info
    assert tasks == set(ENVS.values())


def test_random_is_deterministic_per_observation_not_per_batch():
    env = gym.make("LaViDa/VisualMath-v0", split="test").unwrapped
    observations = [env.reset(options={"index": i})[0] for i in range(8)]
    policy = RandomPolicy(seed=3)
    together = policy.act(observations, num_samples=4)
    alone = [policy.act([obs], num_samples=4)[0] for obs in reversed(observations)][::-1]
    assert together == alone
    assert together == RandomPolicy(seed=3).act(observations, num_samples=4)
    assert together != RandomPolicy(seed=4).act(observations, num_samples=4)
    assert any(len(set(row)) > 1 for row in together)  # samples of one observation differ


def test_random_edit_images_are_deterministic():
    env = gym.make("LaViDa/ImageEdit-v0", split="test").unwrapped
    obs = env.reset(options={"index": 0})[0]
    a, b = RandomPolicy(seed=2).act([obs])[0][0], RandomPolicy(seed=2).act([dict(obs)])[0][0]
    assert np.array_equal(a["image"], b["image"]) and a["text"] == b["text"]


def test_constant_is_constant_and_echoes_the_source_for_edits():
    policy = ConstantPolicy()
    for env_id in ("LaViDa/VisualMath-v0", "LaViDa/Grounding-v0"):
        for _, results in _episodes(env_id, policy, range(4), num_samples=2):
            assert all(info["parsed"] is not None or info["error"] for _, info in results)
    math = gym.make("LaViDa/VisualMath-v0").unwrapped
    obs = [math.reset(options={"index": i})[0] for i in range(5)]
    assert policy.act(obs, num_samples=3) == [["<think></think><answer>0</answer>"] * 3] * 5
    edit = gym.make("LaViDa/ImageEdit-v0").unwrapped
    source = edit.reset(options={"index": 0})[0]
    action = policy.act([source])[0][0]
    assert action["text"] == policy.text and np.array_equal(action["image"], source["image"])
    assert ConstantPolicy("x", echo_image=False).act([source]) == [["x"]]


def test_detect_task_agrees_with_every_env_prompt():
    for env_id, task in ENVS.items():
        env = gym.make(env_id).unwrapped
        for i in range(5):
            assert detect_task(env.reset(options={"index": i})[0]) == task
    assert detect_task({"prompt": "anything", "task": "grounding"}) == "grounding"
    assert detect_task({"prompt": "Edit the image as instructed: x"}, task="visual_math") == "visual_math"
    with pytest.raises(ValueError, match="unknown task"):
        detect_task({"prompt": ""}, task="chess")


def test_observation_key_depends_on_prompt_and_pixels():
    image = np.zeros((8, 8, 3), np.uint8)
    base = observation_key({"prompt": "p", "image": image})
    other = image.copy()
    other[0, 0, 0] = 1
    assert base == observation_key({"prompt": "p", "image": image.copy()})
    assert base != observation_key({"prompt": "q", "image": image})
    assert base != observation_key({"prompt": "p", "image": other})


def test_bad_num_samples_is_rejected():
    for policy in (RandomPolicy(), ConstantPolicy(), OraclePolicy()):
        with pytest.raises(ValueError, match="num_samples"):
            policy.act([{"prompt": "", "image": np.zeros((4, 4, 3), np.uint8)}], num_samples=0)
