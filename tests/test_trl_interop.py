"""TRL interop: to_hf_dataset columns, TRL-signature rewards equal env.step, one real GRPOTrainer step."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import lavida_envs  # noqa: F401
from baselines.simple import RandomPolicy
from lavida_envs.hf import to_hf_dataset
from lavida_envs.rewards.trl import (
    completion_action,
    env_reward,
    grounding_reward,
    image_edit_reward,
    make_reward_function,
    visual_math_reward,
)

GOLD_COLUMNS = ("answer", "solution", "task", "index", "difficulty", "source", "env_id", "split", "env_kwargs")


def _columns(ds):
    """What TRL passes to a reward function: every column but prompt/completion."""
    return {k: ds[k] for k in ds.column_names if k not in ("prompt", "completion")}


def _random_actions_and_env_rewards(env_id, n, seed, **kwargs):
    """RandomPolicy actions on problems 0..n-1 and what env.step pays for each."""
    env = gym.make(env_id, split="test", **kwargs).unwrapped
    observations = [env.reset(options={"index": i})[0] for i in range(n)]
    actions = [row[0] for row in RandomPolicy(seed=seed).act(observations)]
    rewards = []
    for i, action in enumerate(actions):
        env.reset(options={"index": i})
        rewards.append(env.step(action)[1])
    return actions, rewards


def test_dataset_rows_match_env_observations_and_info():
    ds = to_hf_dataset("LaViDa/Grounding-v0", "test", 3, start=5, box_format="norm1000", difficulty=2)
    assert len(ds) == 3 and set(GOLD_COLUMNS) | {"prompt", "image"} == set(ds.column_names)
    env = gym.make("LaViDa/Grounding-v0", split="test", box_format="norm1000", difficulty=2).unwrapped
    for row, index in zip(ds, range(5, 8)):
        obs, info = env.reset(options={"index": index})
        assert row["prompt"] == obs["prompt"] and np.array_equal(np.asarray(row["image"]), obs["image"])
        assert (row["answer"], row["solution"], row["task"]) == (info["answer"], info["solution"], "grounding")
        assert (row["index"], row["difficulty"], row["split"]) == (index, 2, "test")
        assert json.loads(row["env_kwargs"]) == {"box_format": "norm1000", "difficulty": 2}


def test_conversational_prompts_and_no_images():
    ds = to_hf_dataset("LaViDa/VisualMath-v0", "train", 2, conversational=True, images=False, system_prompt="Be brief.")
    assert "image" not in ds.column_names
    assert ds[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert ds[0]["prompt"][1]["role"] == "user" and "<answer>" in ds[0]["prompt"][1]["content"]


def test_dataset_argument_errors():
    with pytest.raises(ValueError, match="n >= 1"):
        to_hf_dataset("LaViDa/VisualMath-v0", "train", 0)
    with pytest.raises(ValueError, match="judge=.*not JSON-serializable"):
        to_hf_dataset("LaViDa/ImageEdit-v0", "train", 1, judge=object())


@pytest.mark.parametrize(
    "env_id, fn, kwargs",
    [
        ("LaViDa/VisualMath-v0", visual_math_reward, {"difficulty": 4}),
        ("LaViDa/Grounding-v0", grounding_reward, {"box_format": "norm1"}),
        ("LaViDa/ImageEdit-v0", image_edit_reward, {}),
    ],
)
def test_rewards_equal_env_step(env_id, fn, kwargs):
    ds = to_hf_dataset(env_id, "test", 6, images=False, **kwargs)
    actions, expected = _random_actions_and_env_rewards(env_id, 6, 5, **kwargs)
    assert fn(ds["prompt"], actions, **_columns(ds)) == pytest.approx(expected)
    assert env_reward(ds["prompt"], actions, **_columns(ds)) == pytest.approx(expected)
    if env_id != "LaViDa/ImageEdit-v0":  # text solutions are the full gold action
        assert fn(ds["prompt"], ds["solution"], **_columns(ds)) == pytest.approx([1.0] * 6)


def test_edit_reward_scores_action_dicts_from_custom_rollouts():
    ds = to_hf_dataset("LaViDa/ImageEdit-v0", "test", 2, images=False)
    env = gym.make("LaViDa/ImageEdit-v0", split="test").unwrapped
    actions = [{"text": ds[i]["solution"], "image": env.problem(i).meta["target_image"]} for i in range(2)]
    assert image_edit_reward(None, actions, **_columns(ds)) == pytest.approx([1.0, 1.0])
    text_only = image_edit_reward(None, ds["solution"], **_columns(ds))
    assert text_only == pytest.approx([0.1, 0.1])  # format only: a bare text action has no edit


def test_chat_completions_and_malformed_completions_never_crash():
    ds = to_hf_dataset("LaViDa/VisualMath-v0", "test", 6, images=False, difficulty=1)
    gold = ds["solution"]
    chat = [[{"role": "assistant", "content": g}] for g in gold[:3]]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": g}]}] for g in gold[3:]]
    assert visual_math_reward(None, chat + parts, **_columns(ds)) == pytest.approx([1.0] * 6)
    bad = [None, 12345, [], "<answer>" * 5000, "\x00\udcff<answer>", [{"role": "assistant", "content": None}]]
    assert visual_math_reward(None, bad, **_columns(ds)) == [0.0] * 6
    assert completion_action([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"


def test_rows_of_other_tasks_get_none():
    from datasets import concatenate_datasets

    math = to_hf_dataset("LaViDa/VisualMath-v0", "test", 2, images=False)
    ground = to_hf_dataset("LaViDa/Grounding-v0", "test", 2, images=False)
    mixed = concatenate_datasets([math, ground])
    solutions = mixed["solution"]
    assert visual_math_reward(None, solutions, **_columns(mixed)) == [1.0, 1.0, None, None]
    assert grounding_reward(None, solutions, **_columns(mixed)) == [None, None, 1.0, 1.0]
    assert env_reward(None, solutions, **_columns(mixed)) == [1.0] * 4


def test_multitask_rows_split_across_task_rewards():
    kwargs = {"grounding": {"box_format": "norm1"}}
    ds = to_hf_dataset("LaViDa/MultiTask-v0", "test", 12, images=False, **kwargs)
    actions, expected = _random_actions_and_env_rewards("LaViDa/MultiTask-v0", 12, 1, **kwargs)
    columns = _columns(ds)
    assert len(set(columns["task"])) == 3
    assert env_reward(None, actions, **columns) == pytest.approx(expected)
    by_task = {"visual_math": visual_math_reward, "grounding": grounding_reward, "image_edit": image_edit_reward}
    for task, fn in by_task.items():
        got = fn(None, actions, **columns)
        assert [g is None for g in got] == [t != task for t in columns["task"]]
        assert [g for g in got if g is not None] == pytest.approx(
            [e for e, t in zip(expected, columns["task"]) if t == task]
        )


def test_single_component_and_name():
    ds = to_hf_dataset("LaViDa/VisualMath-v0", "test", 2, images=False)
    fmt = make_reward_function("visual_math", component="format")
    assert fmt.__name__ == "visual_math_format"
    assert fmt(None, ["<answer>nope</answer>", "no tags"], **_columns(ds)) == [0.5, 0.0]
    assert make_reward_function(component="iou_bonus")(None, ["x", "y"], **_columns(ds)) == [None, None]


def test_stale_or_incomplete_columns_are_errors():
    ds = to_hf_dataset("LaViDa/VisualMath-v0", "test", 2, images=False)
    columns = _columns(ds)
    with pytest.raises(ValueError, match="differs from .* rebuild it"):
        visual_math_reward(None, ["a", "b"], **{**columns, "answer": ["999999", "999999"]})
    with pytest.raises(ValueError, match=r"missing \['index'\]"):
        visual_math_reward(None, ["a", "b"], **{k: v for k, v in columns.items() if k != "index"})


@pytest.mark.parametrize("env_id", ["this:Nope-v0", "lavida_probe_module_xyz:Nope-v0", "CartPole-v1"])
def test_env_id_column_accepts_only_lavida_ids_and_imports_nothing(env_id, tmp_path, monkeypatch):
    """Issue 17 item 5: gym.make("module:Id") imports the module, so the id is checked first."""
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "lavida_probe_module_xyz.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "this", raising=False)
    columns = {"env_id": [env_id], "split": ["test"], "index": [0], "env_kwargs": ["{}"]}
    with pytest.raises(ValueError, match="not a LaViDa env id.*LaViDa/VisualMath-v0"):
        env_reward(None, ["<answer>1</answer>"], **columns)
    assert "this" not in sys.modules and not marker.exists()
    prefixed = {**columns, "env_id": ["lavida_envs:LaViDa/VisualMath-v0"]}
    assert env_reward(None, ["<answer>1</answer>"], **prefixed)[0] >= 0.0


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers v6 renames inside TRL
def test_grpo_trainer_step_with_our_reward(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from tiny_hf import save_tiny_causal_lm

    model_dir = save_tiny_causal_lm(tmp_path / "model", chat_template=False)
    ds = to_hf_dataset("LaViDa/VisualMath-v0", "train", 2, images=False, difficulty=1)
    calls = []

    def visual_math(prompts, completions, **columns):
        rewards = visual_math_reward(prompts, completions, **columns)
        calls.append((list(completions), {k: columns[k] for k in ("index", "answer", "task")}, rewards))
        return rewards

    args = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2,
        max_completion_length=8, max_steps=1, learning_rate=1e-3, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, seed=0, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[visual_math], args=args, train_dataset=ds)
    trainer.train()
    assert trainer.state.global_step == 1
    (completions, columns, rewards), = calls
    assert len(completions) == 2 and all(isinstance(c, str) for c in completions)
    assert columns["task"] == ["visual_math"] * 2 and columns["index"][0] == columns["index"][1]
    env = gym.make("LaViDa/VisualMath-v0", split="train", difficulty=1).unwrapped
    for completion, index, reward in zip(completions, columns["index"], rewards):
        env.reset(options={"index": index})
        assert reward == env.step(completion)[1]
    logged = trainer.state.log_history[0]
    assert logged["rewards/visual_math/mean"] == pytest.approx(float(np.mean(rewards)))
    assert np.isfinite(logged["loss"])
