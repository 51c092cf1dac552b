"""The imperfect teacher (agents.teacher, docs/testbed.md "Imperfect references"): exact, deterministic, verifier-true."""

from __future__ import annotations

import os
import sys

import gymnasium as gym
import pytest

import lavida_envs  # noqa: F401
from agents.config import load_config
from agents.teacher import FACTS, problem_error_rate, teacher_solution, wrong_facts

sys.path.insert(0, os.path.dirname(__file__))
from test_trainer import tiny_config  # noqa: E402


def test_the_teacher_gets_exactly_round_f_times_55_facts_wrong_nested_and_fixed():
    assert len(FACTS) == 55
    for f in (0.0, 0.1, 0.3, 0.5, 1.0):
        assert len(wrong_facts(f)) == round(f * 55)
    assert wrong_facts(0.1) < wrong_facts(0.3) < wrong_facts(1.0) == frozenset(FACTS)
    # fixed by the hash ranking, not by a seed or the process: the f = 0.3 set of the docs
    assert sorted(wrong_facts(0.3))[:6] == [(0, 0), (0, 3), (0, 4), (0, 6), (0, 7), (1, 0)]
    # exact problem fractions over the 55 x 36 carry-free sums (docs/testbed.md quotes these)
    assert problem_error_rate(0.3) == pytest.approx(888 / 1980) and problem_error_rate(0.0) == 0.0
    with pytest.raises(ValueError, match="sft_teacher_error=1.5"):
        wrong_facts(1.5)


def test_wrong_references_are_off_by_one_consistently_and_fail_the_verifier():
    env = gym.make("LaViDa/VisualMath-v0", split="train", difficulty=1, image_size=32)
    wrong = wrong_facts(0.3)
    seen = {True: 0, False: 0}
    for index in range(60):
        _, info = env.reset(options={"index": index})
        ones_tens = [(int(s[0]), int(s[2])) for s in info["solution"].split("<think>")[1].split(". ")[:2]]
        taught = teacher_solution(info["solution"], 0.3)
        assert taught == teacher_solution(info["solution"], 0.3)  # deterministic
        bad = any(f in wrong for f in ones_tens)
        seen[bad] += 1
        _, reward, *_ = env.step(taught)
        assert (reward < 0.5) == bad, (info["solution"], taught, reward)
        if bad:
            answer = int(taught.split("<answer>")[1].split("<")[0])
            assert abs(answer - int(info["answer"])) in (1, 10, 11, 9)  # one or both columns off by one
    assert seen[True] > 10 and seen[False] > 10
    assert teacher_solution("<think>2+5=7. 4+3=7.</think><answer>77</answer>", 0.0).endswith("<answer>77</answer>")
    with pytest.raises(ValueError, match="not a VisualMath level 1-2 column sum"):
        teacher_solution("<think>3*4=12.</think><answer>12</answer>", 0.3)


def test_sft_rows_carry_the_teachers_answers_and_the_config_names_bad_values(tmp_path):
    from agents.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, sft_teacher_error=1.0, tasks={"visual_math": 1.0}, difficulty="1",
                                  max_steps=1, task_decoding={"visual_math": {"gen_length": 64}}))  # fmt: skip
    texts = [text for rollouts in trainer._sft_rows(6) for text in rollouts.texts]
    assert len(texts) == 6
    for text in texts:  # every fact wrong: every column sum is off by one
        for step in text.split("<think>")[1].split("</think>")[0].split(". "):
            x, y, z = int(step[0]), int(step[2]), int(step[4])
            assert z == (x + y + 1 if x + y < 9 else x + y - 1), text
    with pytest.raises(ValueError, match="TrainConfig.sft_teacher_error=2.0: must be a fraction"):
        load_config(os.path.join(os.path.dirname(__file__), "fixtures", "trainer", "tiny.yaml"), sft_teacher_error=2.0)
    with pytest.raises(ValueError, match="needs tasks visual_math only at SFT level 1 or 2"):
        tiny_config(tmp_path, sft_teacher_error=0.3, tasks={"visual_math": 1.0}, difficulty="3")


class _Lookup:
    """A stand-in policy that answers each held-out problem with its reference, through the teacher at ``error``."""

    def __init__(self, error: float) -> None:
        env = gym.make("LaViDa/VisualMath-v0", split="test", difficulty=1, image_size=64)
        self.error, self.solutions = error, {}
        for index in range(40):
            obs, info = env.reset(options={"index": index})
            self.solutions[obs["image"].tobytes()] = info["solution"]

    def act(self, observations, n):
        return [[teacher_solution(self.solutions[o["image"].tobytes()], self.error)] for o in observations]


def test_teacher_split_separates_copying_the_teacher_from_being_right():
    from evaluation.teacher_split import split_accuracy

    copier = split_accuracy(_Lookup(0.3), 0.3, 40)
    assert copier["teacher_wrong"] + copier["teacher_right"] == 40 and copier["teacher_wrong"] > 5
    assert (copier["acc_where_teacher_right"], copier["acc_where_teacher_wrong"]) == (1.0, 0.0)
    assert copier["copies_teacher_where_wrong"] == 1.0
    gold = split_accuracy(_Lookup(0.0), 0.3, 40)
    assert gold["teacher_wrong"] == copier["teacher_wrong"]
    assert (gold["acc_where_teacher_wrong"], gold["copies_teacher_where_wrong"]) == (1.0, 0.0)
