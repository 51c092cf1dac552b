"""LaViDa/ImageEdit-v0: hand-checked edits per level and op, oracle/baseline rewards, API, splits, data."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lavida_envs  # noqa: F401  (registers the ids)
from lavida_envs.base import split_of_key
from lavida_envs.datasets.common import DatasetError
from lavida_envs.render import BACKGROUND, PALETTE
from lavida_envs.scene import Scene, Shape, can_place, render_scene, sample_scene, shape_mask
from lavida_envs.tasks.edit_ops import region_mask, sample_edit
from lavida_envs.tasks.image_edit import ImageEditEnv
from tiny_clip import build_tiny_clip

ENV_ID = "LaViDa/ImageEdit-v0"
FIXTURES = "tests/fixtures/magicbrush"
S = 100  # hand-checked scene size: 1% of the side is exactly one pixel

#: 0 red circle (small, top-left), 1 blue star (large), 2 small green triangle (top-right),
#: 3 large green triangle (left), 4 yellow square (centre), 5 purple pentagon (bottom-right).
HAND = Scene(
    (
        Shape("circle", "red", 0.06, 0.15, 0.15),
        Shape("star", "blue", 0.11, 0.5, 0.2),
        Shape("triangle", "green", 0.06, 0.85, 0.15),
        Shape("triangle", "green", 0.11, 0.2, 0.6),
        Shape("square", "yellow", 0.085, 0.55, 0.6),
        Shape("pentagon", "purple", 0.085, 0.85, 0.85),
    )
)

# (level, op, seed, instruction, target index) -- each referent checked by hand:
# L1 the only pentagon; L2 of the two green shapes only the top-right triangle lies right of
# the star; L3 triangles by size: 0.11 (#3) then 0.06 (#2); L4 two triangles -> 2 + 2 = 4
# sides -> the square, colour of the pentagon = purple; L5 the largest green triangle is #3,
# the only triangle above it is #2, the fourth shape from the left (x .15 .2 .5 .55) is the
# yellow square; L2 remove: the shape nearest the pentagon is the square.
HAND_CASES = [
    (1, "recolor", 1, "Recolor the pentagon to red.", 5),
    (2, "move", 1, "Move the green shape to the right of the blue star down by 15% of the image height.", 2),
    (3, "resize", 1, "Scale the second-largest triangle by a factor of 1.5 about its centre.", 2),
    (4, "add", 0, "Add a copy of the shape with 2 more sides than there are triangles in the color of the "
     "purple pentagon, 20% of the image height below it.", 4),
    (5, "recolor", 1, "Recolor the triangle above the largest green triangle to the color of the fourth shape "
     "from the left.", 2),
    (2, "remove", 0, "Remove the shape closest to the purple shape.", 4),
]


def test_hand_scene_is_valid():
    for i, shape in enumerate(HAND):
        assert can_place([s for j, s in enumerate(HAND) if j != i], shape)


def _expected_target(op: str, t: int, source: np.ndarray) -> np.ndarray:
    """The edited image built from pixel operations on the source (not by re-rendering)."""
    old = shape_mask(HAND[t], S)
    out = source.copy()
    if op == "recolor":  # cases: pentagon -> red (L1), small triangle -> yellow (L5)
        out[old] = PALETTE["red"] if t == 5 else PALETTE["yellow"]
    elif op == "remove":
        out[old] = BACKGROUND
    elif op == "move":  # down by 15 px
        out[old] = BACKGROUND
        out[np.roll(old, 15, axis=0)] = PALETTE[HAND[t].color]
    elif op == "add":  # a purple copy 20 px below
        out[np.roll(old, 20, axis=0)] = PALETTE["purple"]
    return out


@pytest.mark.parametrize("level, op, seed, instruction, target", HAND_CASES)
def test_hand_checked_edit_per_level(level, op, seed, instruction, target):
    spec = sample_edit(random.Random(seed), HAND, level, ops=(op,))
    assert spec is not None and spec.instruction == instruction and spec.target == target
    assert spec.ref.evaluate(HAND) == [target]
    source, edited = render_scene(HAND, S), render_scene(spec.edited, S)
    changed = np.any(source != edited, axis=2)
    assert not (changed & ~region_mask(spec, S)).any()  # nothing changes outside the region
    if op == "resize":  # 1.5x about the centre: same centre, ~1.5x the width
        old, new = shape_mask(HAND[target], S), shape_mask(spec.edited[target], S)
        assert spec.edited[target].size == pytest.approx(0.09)
        for mask_axis in (0, 1):
            o, n = np.flatnonzero(old.any(axis=mask_axis)), np.flatnonzero(new.any(axis=mask_axis))
            assert abs((o[0] + o[-1]) - (n[0] + n[-1])) <= 2
            assert abs((n[-1] - n[0] + 1) - 1.5 * (o[-1] - o[0] + 1)) <= 2
        assert (edited[new] == PALETTE["green"]).all()
    else:
        assert np.array_equal(edited, _expected_target(op, target, source))
    answer = spec.answer(S)
    assert HAND[target].describe() in answer and spec.solution(S).endswith(f"<answer>{answer}</answer>")


def test_every_op_and_level_generates_with_proven_unique_target():
    for level in range(1, 6):
        for op in ("recolor", "remove", "move", "resize", "add"):
            rng = random.Random(level * 10 + len(op))
            spec = None
            while spec is None:
                spec = sample_edit(rng, sample_scene(rng), level, ops=(op,))
            assert spec.op == op
            assert spec.ref.evaluate(spec.scene) == [spec.target]
            if spec.value_ref is not None:
                assert spec.value_ref.evaluate(spec.scene) == [spec.value_index] and level >= 4
            assert len(spec.edited) == len(spec.scene) + {"add": 1, "remove": -1}.get(op, 0)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_oracle_scores_one_and_source_or_blank_score_low_on_1000_problems(level):
    env = ImageEditEnv(difficulty=level)
    ops = set()
    for index in range(1000):
        problem = env.problem(index)
        ops.add(problem.meta["op"])
        oracle = env.score({"text": problem.solution, "image": problem.meta["target_image"]}, problem)
        assert env.total_reward(oracle.components) == 1.0 and oracle.correct, (index, oracle)
        for baseline in (problem.image, np.full_like(problem.image, 255), np.zeros_like(problem.image)):
            result = env.score({"text": problem.solution, "image": baseline}, problem)
            assert result.components["edit"] <= 0.2 and env.total_reward(result.components) <= 0.2, index
    assert ops == {"recolor", "remove", "move", "resize", "add"}


def test_step_api_oracle_and_info():
    env = gym.make(ENV_ID, difficulty=5)
    obs, info = env.reset(seed=0, options={"index": 3})
    assert set(info) >= {"task", "index", "difficulty", "source", "answer", "solution"}
    assert info["task"] == "image_edit" and info["difficulty"] == 5 and "centred at" in info["answer"]
    problem = env.unwrapped.problem(3)
    assert problem.meta["region_mask"].shape == (128, 128) and problem.meta["region_mask"].any()
    _, reward, terminated, truncated, step_info = env.step({"text": info["solution"], "image": problem.meta["target_image"]})
    assert reward == 1.0 and terminated and not truncated and step_info["correct"]
    assert step_info["reward_components"] == {"edit": 1.0, "format": 1.0}
    assert step_info["parsed"]["answer"] == info["answer"] and step_info["metrics"]["inside"] == 1.0
    _, reward, _, _, step_info = env.step(info["solution"])  # bare str: format only
    assert reward == pytest.approx(0.1) and "no image" in step_info["error"]


def test_check_env_and_spaces():
    env = gym.make(ENV_ID)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert not [w for w in caught if "WARN" in str(w.message)], [str(w.message) for w in caught]
    assert env.action_space["image"].shape == (128, 128, 3) and env.observation_space["image"].shape == (128, 128, 3)
    assert env.action_space.contains({"text": "hi", "image": np.zeros((128, 128, 3), np.uint8)})


def test_async_vector_env():
    envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="async", image_size=64)
    try:
        obs, info = envs.reset(seed=1)
        single = ImageEditEnv(image_size=64)
        problems = [single.problem(int(i)) for i in info["index"]]
        assert list(obs["prompt"]) == [p.prompt for p in problems]
        actions = {"text": tuple(info["solution"]), "image": np.stack([p.meta["target_image"] for p in problems])}
        _, reward, terminated, _, _ = envs.step(actions)
        assert reward.tolist() == [1.0, 1.0] and terminated.all()
    finally:
        envs.close()


_HASH = """
import hashlib, json, sys
from lavida_envs.tasks.image_edit import ImageEditEnv
out = []
for split, difficulty, index in json.loads(sys.argv[1]):
    env = ImageEditEnv(split=split, difficulty=difficulty)
    obs, info = env.reset(seed=int(sys.argv[2]), options={"index": index})
    p = env.problem(index)
    h = hashlib.sha256(obs["image"].tobytes() + obs["prompt"].encode() + info["answer"].encode()
                       + p.meta["target_image"].tobytes() + p.meta["region_mask"].tobytes())
    out.append(h.hexdigest())
print(json.dumps(out))
"""
PINNED = [(s, d, i) for s in ("train", "test") for d in (1, 5, "mixed") for i in (0, 17, 4242)]


def test_same_index_same_bytes_across_seeds_and_processes():
    runs = [subprocess.run([sys.executable, "-c", _HASH, json.dumps(PINNED), seed], capture_output=True, text=True,
                           timeout=120, env={"PYTHONHASHSEED": seed, "PATH": ""}) for seed in ("0", "999")]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-1500:]
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == second and len(set(first)) == len(PINNED)
    here = []
    for split, difficulty, index in PINNED[:3]:
        env = ImageEditEnv(split=split, difficulty=difficulty)
        obs, info = env.reset(seed=5, options={"index": index})
        p = env.problem(index)
        here.append(hashlib.sha256(obs["image"].tobytes() + obs["prompt"].encode() + info["answer"].encode()
                                   + p.meta["target_image"].tobytes() + p.meta["region_mask"].tobytes()).hexdigest())
    assert here == first[:3]


def test_train_and_test_keys_never_overlap_on_10000_draws():
    keys = {}
    for split in ("train", "test"):
        env = ImageEditEnv(split=split, image_size=32)
        problems = [env.problem(i) for i in range(5000)]
        keys[split] = {p.key for p in problems}
        assert all(split_of_key(f"image_edit|{k}") == split for k in keys[split])
        assert all(p.key == p.meta["scene"].key() for p in problems[:50])  # split by source scene
        assert len(keys[split]) >= 4950
    assert not keys["train"] & keys["test"]


#: (action, malformed): a malformed action scores 0 for its bad part and says why.
HOSTILE = [
    (None, True),
    (42, True),
    (["not", "a", "dict"], True),
    ({"text": None, "image": None}, True),
    ({"text": "x" * 1_000_000, "image": np.zeros((128, 128, 3), np.uint8)}, True),
    ({"text": "<answer>a</answer>", "image": np.full((128, 128, 3), np.nan)}, True),
    ({"text": "<answer>a</answer>", "image": np.zeros((7, 7), np.float64)}, False),  # grey, resized: just wrong
    ({"text": "<answer>a</answer>", "image": np.zeros((128, 128, 5), np.uint8)}, True),
    ({"text": "<answer>a</answer>", "image": "an image"}, True),
    ({"text": "<answer>a</answer>", "image": [[1, 2], [3]]}, True),
    ({"image": np.zeros((3, 3, 3), np.uint8)}, False),
    (b"\xff\xfe bytes", True),
]


@pytest.mark.parametrize("action, malformed", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_actions_never_crash(action, malformed):
    env = gym.make(ENV_ID, difficulty=2)
    env.reset(options={"index": 1})
    _, reward, terminated, _, info = env.step(action)
    assert terminated and 0.0 <= reward <= 0.1 + 1e-9 and not info["correct"]
    assert info["reward_components"]["edit"] == 0.0
    assert bool(info["error"]) == malformed, info["error"]


def test_resized_or_float_oracle_still_scores_one():
    env = ImageEditEnv(difficulty=3, image_size=64)
    problem = env.problem(2)
    big = np.repeat(np.repeat(problem.meta["target_image"], 2, axis=0), 2, axis=1)
    for image in (big, problem.meta["target_image"] / 255.0):
        result = env.score({"text": problem.solution, "image": image}, problem)
        assert result.components["edit"] == 1.0 and result.parsed["image_notes"]


def test_bad_kwargs_are_explained():
    with pytest.raises(ValueError, match="edit_reward"):
        ImageEditEnv(edit_reward="vibes")
    with pytest.raises(ValueError, match="clip_path"):
        ImageEditEnv(edit_reward="clip")
    with pytest.raises(ValueError, match="judge="):
        ImageEditEnv(edit_reward="judge")
    with pytest.raises(ValueError, match="ops"):
        ImageEditEnv(ops=("recolor", "explode"))


def test_judge_reward_marks_env_nondeterministic(tmp_path):
    calls = []

    def judge(obs):
        calls.append(obs["prompt"])
        return "SC: 9, PQ: 4"

    env = ImageEditEnv(edit_reward="judge", judge=judge, judge_cache_dir=str(tmp_path), image_size=64)
    assert env.nondeterministic and not ImageEditEnv().nondeterministic
    problem = env.problem(0)
    result = env.score({"text": problem.solution, "image": problem.meta["target_image"]}, problem)
    assert result.components["edit"] == pytest.approx(0.6) and not result.correct
    assert problem.meta["instruction"] in calls[0] and result.metrics["fidelity"] == 1.0
    env.score({"text": "", "image": problem.meta["target_image"]}, problem)
    assert len(calls) == 1  # cached


def test_clip_reward_with_tiny_local_model(tmp_path):
    tiny_clip_dir = build_tiny_clip(tmp_path / "clip")
    env = ImageEditEnv(edit_reward="clip", clip_path=str(tiny_clip_dir), image_size=64)
    problem = env.problem(0)
    oracle = env.score({"text": problem.solution, "image": problem.meta["target_image"]}, problem)
    assert oracle.components["edit"] == pytest.approx(1.0, abs=1e-5) and oracle.correct
    unchanged = env.score({"text": problem.solution, "image": problem.image}, problem)
    assert unchanged.metrics["image_directional"] == 0.0 and unchanged.components["edit"] <= 0.5
    assert set(oracle.metrics) >= {"clip_i", "clip_t", "image_directional", "fidelity"}


# ----- MagicBrush-style data ---------------------------------------------------------------
def test_magicbrush_loader_regions_and_oracle():
    env = ImageEditEnv(dataset="magicbrush", data_dir=FIXTURES, image_size=48)
    assert env.num_problems() == 3
    problems = [env.problem(i) for i in range(3)]
    assert [p.key for p in problems] == ["magicbrush:100:1", "magicbrush:100:2", "magicbrush:101:1"]
    assert [p.meta["region_from"] for p in problems] == ["alpha", "binary", "diff"]
    assert [p.difficulty for p in problems] == [1, 2, 1] and problems[0].answer == "make the red box green"
    # 24x16 source letterboxed to 48: scale 2, 8 px white bands top and bottom
    assert (problems[0].image[:8] == 255).all() and not problems[0].meta["region_mask"][:8].any()
    for i, p in enumerate(problems):
        _, info = env.reset(options={"index": i})
        _, reward, *_ = env.step({"text": info["solution"], "image": p.meta["target_image"]})
        _, low, *_ = env.step({"text": info["solution"], "image": p.image})
        assert reward == 1.0 and low <= 0.2
    # the alpha hole is rows 3..10, cols 5..12 of the 24x16 original -> rows 14..29, cols 10..25 (+ dilation)
    region = problems[0].meta["region_mask"]
    assert region[14:30, 10:26].all() and not region[40:, :].any() and not region[:, 35:].any()
    test = ImageEditEnv(dataset="magicbrush", data_dir=FIXTURES, split="test", image_size=48)
    assert test.num_problems() == 1 and test.problem(0).meta["region_from"] == "diff"
    assert ImageEditEnv(dataset="magicbrush", data_dir=FIXTURES, difficulty=2, image_size=48).num_problems() == 1


def test_magicbrush_flat_folder_is_split_by_image_id(tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(f"{FIXTURES}/train", flat)
    sessions = json.loads((flat / "edit_sessions.json").read_text())
    for n in range(20):  # more sessions reusing the same files so both splits get some
        sessions[f"9{n:02d}"] = sessions["101"]
        shutil.copytree(flat / "images" / "101", flat / "images" / f"9{n:02d}", dirs_exist_ok=True)
    (flat / "edit_sessions.json").write_text(json.dumps(sessions))
    splits = {s: {p.meta["img_id"] for p in ImageEditEnv(dataset=str(flat), split=s, image_size=32)._dataset_problems}
              for s in ("train", "test")}
    assert splits["train"] and splits["test"] and not splits["train"] & splits["test"]
    assert splits["train"] | splits["test"] == set(sessions)


def _broken(tmp_path, mutate) -> str:
    root = tmp_path / "mb"
    shutil.copytree(FIXTURES, root)
    path = root / "train" / "edit_sessions.json"
    data = json.loads(path.read_text())
    text = mutate(data)
    path.write_text(text if isinstance(text, str) else json.dumps(data))
    return str(root)


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda d: d["100"][0].pop("instruction") and None, "instruction", "missing"),
        (lambda d: d["100"][0].__setitem__("instruction", 7), "instruction", "expected str"),
        (lambda d: d["100"][1].__setitem__("output", "nope.png"), "output", "not found"),
        (lambda d: d["101"][0].__setitem__("input", ["x"]), "input", "expected str"),
        (lambda d: d.__setitem__("100", "turns"), None, "expected a list"),
        (lambda d: "[1, 2", None, "invalid JSON"),
        (lambda d: "[]", None, "top level is list"),
    ],
)
def test_magicbrush_malformed_files_name_file_and_field(tmp_path, mutate, field, words):
    root = _broken(tmp_path, mutate)
    with pytest.raises(DatasetError) as err:
        ImageEditEnv(dataset="magicbrush", data_dir=root)
    message = str(err.value)
    assert "edit_sessions.json" in message and words in message
    if field:
        assert f"'{field}'" in message and "session" in message


def test_magicbrush_missing_folder_and_corrupt_image(tmp_path):
    with pytest.raises(DatasetError, match="edit_sessions.json"):
        ImageEditEnv(dataset="magicbrush", data_dir=str(tmp_path))
    root = tmp_path / "mb"
    shutil.copytree(FIXTURES, root)
    (root / "train" / "images" / "100" / "100-mask2.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="100-mask2.png.*'mask'"):
        ImageEditEnv(dataset="magicbrush", data_dir=str(root))


def test_reset_info_holds_a_complete_reference_action():
    env = gym.make("LaViDa/ImageEdit-v0", split="test", image_size=64).unwrapped
    for index in range(3):
        _, info = env.reset(options={"index": index})
        reference = info["reference_action"]
        assert env.action_space.contains(reference) and reference["text"] == info["solution"]
        _, reward, _, _, step_info = env.step(reference)
        assert reward == 1.0 and step_info["correct"] and step_info["error"] is None
        reference["image"][:] = 0  # a copy: the env's own target is untouched
        env.reset(options={"index": index})
        assert env.step(env.reset(options={"index": index})[1]["reference_action"])[1] == 1.0
