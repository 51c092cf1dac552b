"""The CPU testbed levels of Grounding and ImageEdit (docs/testbed.md) and TrainConfig.env_kwargs."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import lavida_envs  # noqa: F401
from agents.config import TrainConfig
from agents.train_batch import make_envs

GROUNDING = {"grid": 2, "min_shapes": 2, "max_shapes": 2, "expression": "color"}
EDIT = {"ops": ["recolor"], "grid": 2, "min_shapes": 2, "max_shapes": 2, "expression": "color"}
CELL = re.compile(r"Step 1: The (\w+) shape is in row (\d), column (\d)\.")


def test_grounding_testbed_level_two_shapes_colour_only_cell_then_box():
    env = gym.make("LaViDa/Grounding-v0", split="train", difficulty=1, image_size=64, **GROUNDING)
    again = gym.make("LaViDa/Grounding-v0", split="train", difficulty=1, image_size=64, **GROUNDING)
    for index in range(25):
        obs, info = env.reset(options={"index": index})
        problem = env.unwrapped.problem(index)
        assert len(problem.meta["scene"]) == 2
        colour, row, col = CELL.search(info["solution"]).groups()
        assert f"Locate the {colour} shape." in obs["prompt"]
        x1, y1, x2, y2 = problem.meta["box"]  # the box lies in the named cell of the 2 x 2 grid (32 px cells)
        assert (int(row), int(col)) == ((y1 + y2) // 64 + 1, (x1 + x2) // 64 + 1)
        assert np.array_equal(obs["image"], again.reset(options={"index": index})[0]["image"])  # deterministic
        _, reward, *_ = env.step(info["solution"])
        assert reward == pytest.approx(1.0)
        other = [64 - x2, 64 - y2, 64 - x1, 64 - y1]  # the opposite cell: IoU 0
        env.reset(options={"index": index})
        _, wrong, *_ = env.step(f"<think>x</think><answer>{other}</answer>")
        assert wrong == pytest.approx(0.1)  # format only
    with pytest.raises(ValueError, match="grid must be an int in \\[2, 4\\]"):
        gym.make("LaViDa/Grounding-v0", grid=7)
    with pytest.raises(ValueError, match="expression must be one of \\['any', 'color'\\]"):
        gym.make("LaViDa/Grounding-v0", expression="size")


def test_image_edit_testbed_level_recolours_one_of_two_shapes_named_by_colour():
    env = gym.make("LaViDa/ImageEdit-v0", split="train", difficulty=1, image_size=32, **EDIT)
    for index in range(12):
        obs, info = env.reset(options={"index": index})
        problem = env.unwrapped.problem(index)
        assert problem.meta["op"] == "recolor" and len(problem.meta["scene"]) == 2
        assert re.search(r"Recolor the \w+ shape to \w+\.", obs["prompt"]), obs["prompt"]
        _, reward, *_ = env.step(info["reference_action"])
        assert reward == pytest.approx(1.0)
        env.reset(options={"index": index})
        _, unchanged, *_ = env.step({"text": info["solution"], "image": obs["image"]})
        assert unchanged < 0.9  # the source image back is not the edit
    with pytest.raises(ValueError, match="need 2 <= min_shapes <= max_shapes <= 4"):
        gym.make("LaViDa/ImageEdit-v0", grid=2, min_shapes=2, max_shapes=5)


def test_env_kwargs_reach_train_and_test_envs_and_bad_ones_are_named():
    config = TrainConfig(tasks={"grounding": 1.0, "image_edit": 1.0}, difficulty="1", image_size=32,
                         env_kwargs={"grounding": GROUNDING, "image_edit": EDIT}).validate()  # fmt: skip
    for split in ("train", "test"):
        envs = make_envs(config, split)
        assert envs["grounding"].unwrapped.grid == 2 and envs["image_edit"].unwrapped.ops == ("recolor",)
        assert envs["grounding"].unwrapped.split == split and envs["image_edit"].unwrapped.expression == "color"
    assert config.to_dict()["env_kwargs"]["grounding"] == GROUNDING
    with pytest.raises(ValueError, match="TrainConfig.env_kwargs=.*unknown task 'maths'"):
        TrainConfig(env_kwargs={"maths": {}}).validate()
    with pytest.raises(ValueError, match="TrainConfig.env_kwargs.grounding=.*\\['difficulty'\\] are set by the trainer"):
        TrainConfig(env_kwargs={"grounding": {"difficulty": 2}}).validate()
    bad = TrainConfig(tasks={"grounding": 1.0}, env_kwargs={"grounding": {"grid": 9}}).validate()
    with pytest.raises(ValueError, match="TrainConfig.env_kwargs.grounding=\\{'grid': 9\\}: grid must be"):
        make_envs(bad, "train")
