"""Issue-3 acceptance for LaViDa/VisualMath-v0: Gymnasium API, determinism, splits, hostile input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lavida_envs  # noqa: F401  (registers the ids)
from lavida_envs.base import split_of_key
from lavida_envs.tasks.visual_math import VisualMathEnv

ENV_ID = "LaViDa/VisualMath-v0"
#: (split, difficulty, index) triples whose problems must be identical everywhere.
PINNED = [(s, d, i) for s in ("train", "test") for d in (1, 3, 5, "mixed") for i in (0, 7, 123, 99_999)]

_HASH_SNIPPET = """
import hashlib, json, sys
import gymnasium as gym
import lavida_envs
out = []
for split, difficulty, index in json.loads(sys.argv[1]):
    env = gym.make("LaViDa/VisualMath-v0", split=split, difficulty=difficulty)
    obs, info = env.reset(seed=int(sys.argv[2]), options={"index": index})
    digest = hashlib.sha256(obs["image"].tobytes() + obs["prompt"].encode() + info["answer"].encode())
    out.append(digest.hexdigest())
print(json.dumps(out))
"""


def _problem_hashes(seed: int) -> list[str]:
    out = []
    for split, difficulty, index in PINNED:
        env = gym.make(ENV_ID, split=split, difficulty=difficulty)
        obs, info = env.reset(seed=seed, options={"index": index})
        digest = hashlib.sha256(obs["image"].tobytes() + obs["prompt"].encode() + info["answer"].encode())
        out.append(digest.hexdigest())
    return out


def _run_python(code: str, *args: str, cwd=None, extra_env=None) -> str:
    env = {**os.environ, **(extra_env or {})}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_check_env_passes_with_default_kwargs():
    env = gym.make(ENV_ID)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert not [w for w in caught if "WARN" in str(w.message)], [str(w.message) for w in caught]
    assert env.observation_space["image"].shape == (128, 128, 3)


def test_make_with_module_prefix_in_fresh_process(tmp_path):
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'lavida_envs' not in sys.modules\n"
        "env = gym.make('lavida_envs:LaViDa/VisualMath-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "_, reward, terminated, _, _ = env.step(info['solution'])\n"
        "print(obs['image'].shape, info['task'], reward, terminated)\n"
    )
    assert _run_python(code, cwd=tmp_path).split() == ["(128,", "128,", "3)", "visual_math", "1.0", "True"]


def test_async_vector_env_reset_and_step():
    # Default shared memory: lavida_envs.spaces.PromptText makes the Text prompt readable from it.
    envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="async")
    try:
        obs, info = envs.reset(seed=3)
        assert obs["image"].shape == (2, 128, 128, 3) and obs["image"].dtype == np.uint8
        single = VisualMathEnv()
        for i in range(2):
            problem = single.problem(int(info["index"][i]))
            assert obs["prompt"][i] == problem.prompt
            assert np.array_equal(obs["image"][i], problem.image)
        _, reward, terminated, truncated, step_info = envs.step(list(info["solution"]))
        assert reward.tolist() == [1.0, 1.0] and terminated.all() and not truncated.any()
        _, reward, _, _, _ = envs.step(["<think>x</think><answer>-1</answer>"] * 2)  # autoreset step
        assert reward.tolist() == [0.0, 0.0]
    finally:
        envs.close()


def test_same_problem_across_seeds_and_processes():
    here = _problem_hashes(seed=0)
    assert here == _problem_hashes(seed=12345)
    other = json.loads(_run_python(_HASH_SNIPPET, json.dumps(PINNED), "777", extra_env={"PYTHONHASHSEED": "99"}))
    assert other == here
    assert len(set(here)) > len(here) // 2  # level 1 has only 100 sums, so a few repeat


def test_train_and_test_never_overlap_on_10000_draws():
    seen: dict[str, tuple[set[str], set[bytes]]] = {}
    for split in ("train", "test"):
        env = VisualMathEnv(split=split, difficulty="mixed", image_size=64)
        keys, contents = set(), set()
        for index in range(10_000):
            problem = env.problem(index)
            keys.add(problem.key)
            contents.add(hashlib.blake2b(problem.image.tobytes() + problem.prompt.encode(), digest_size=16).digest())
        seen[split] = (keys, contents)
    (train_keys, train_content), (test_keys, test_content) = seen["train"], seen["test"]
    assert len(test_keys) > 1000 and len(train_keys) > 1000
    assert not train_keys & test_keys
    assert not train_content & test_content
    level1 = VisualMathEnv(split="test", difficulty=1, image_size=32)
    held_out = {level1.problem(i).key for i in range(300)}
    assert len(held_out) > 200 and not held_out & train_keys  # operand pairs never seen in training
    pairs = [f"arith|{('+', a, b)!r}" for a in range(10, 100) for b in range(10, 100)
             if a % 10 + b % 10 <= 9 and a // 10 + b // 10 <= 9]  # carry-free: 1,980 sums
    assert held_out <= set(pairs) and len(pairs) == 1980
    assert 0.17 < sum(split_of_key(key) == "test" for key in pairs) / len(pairs) < 0.23


def _hostile_actions(marker: str) -> list:
    return [
        "",
        "x" * 1_000_000,
        "\\frac{" * 10_000,
        "10^{10^{10^{10}}}",
        f"__import__('os').system('touch {marker}')",
        "\x00\x01\x02\x1b[31m\x7f\x08",
        "\udcff",
        b"\xff\xfe\xfd\x80",
        None,
        123,
        ["<answer>1</answer>"],
        {"text": 5},
    ]


def test_hostile_actions_score_zero_fast_and_execute_nothing(tmp_path):
    marker = str(tmp_path / "pwned")
    env = gym.make(ENV_ID)
    _, info = env.reset(options={"index": 0})
    env.step(info["solution"])  # warm the checker outside the timed steps
    for action in _hostile_actions(marker):
        start = time.perf_counter()
        _, reward, terminated, _, step = env.step(action)
        elapsed = time.perf_counter() - start
        label = repr(action)[:60]
        assert reward == 0.0 and terminated, (label, step)
        assert step["error"], label
        assert elapsed < 4.0, (label, elapsed)
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "payload",
    ["10^{10^{10^{10}}}", "__import__('os').system('touch {m}')", "\\frac{" * 2000, "9" * 5000,
     "\\sqrt{\\sqrt{\\sqrt{\\sqrt{2}}}}" * 50],
)
def test_hostile_answers_inside_the_layout_get_format_credit_only(payload, tmp_path):
    marker = str(tmp_path / "pwned")
    env = gym.make(ENV_ID, difficulty=4)
    _, info = env.reset(options={"index": 2})
    env.step(info["solution"])
    start = time.perf_counter()
    answer = payload.replace("{m}", marker)
    _, reward, _, _, step = env.step(f"<think>t</think><answer>{answer}</answer>")
    assert time.perf_counter() - start < 4.0
    assert step["reward_components"]["accuracy"] == 0.0 and reward <= 0.1 + 1e-9
    assert not os.path.exists(marker)


def test_spec_for_replays_exactly_what_problem_builds():
    env = VisualMathEnv(split="test", difficulty="mixed", image_size=48)
    for index in (0, 5, 77):
        spec, rng, level = env.spec_for(index)
        built, expected = env.build_problem(spec, rng, level), env.problem(index)
        assert built.key == expected.key and np.array_equal(built.image, expected.image)
        assert built.prompt == expected.prompt and built.answer == expected.answer


def test_bench_envs_prints_a_table(capsys):
    from evaluation.bench_envs import main

    assert main(["--n", "8", "--difficulty", "3", "--image-size", "48", "--core", "-1"]) == 0
    out = capsys.readouterr().out
    for row in ("reset (generate+render)", "reset+step (oracle answer)", "build_problem", "render only"):
        assert row in out
    with pytest.raises(SystemExit):
        main(["--help"])
