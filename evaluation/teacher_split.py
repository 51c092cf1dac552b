"""Held-out VisualMath accuracy split by where the imperfect teacher is wrong (docs/testbed.md, "Imperfect references").

``python -m evaluation.teacher_split --error 0.3 --episodes 200 DIR ...`` decodes the first
``--episodes`` test problems of VisualMath level 1 greedily with each policy folder and prints, as
JSON lines: accuracy where the teacher's answer is right, accuracy where it is wrong, and how often
the policy's answer equals the teacher's wrong answer there (copying the teacher).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from typing import Any

import gymnasium as gym

import lavida_envs  # noqa: F401
from agents.teacher import teacher_solution

__all__ = ["split_accuracy"]

_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


def _answer(text: str) -> str | None:
    found = _ANSWER.findall(text or "")
    return found[-1] if found else None


def split_accuracy(policy: Any, error: float, episodes: int, image_size: int = 64, batch: int = 16) -> dict[str, float]:
    """``policy.act`` on test problems ``0..episodes-1``: accuracy by teacher right/wrong, copy rate where wrong."""
    env = gym.make("LaViDa/VisualMath-v0", split="test", difficulty=1, image_size=image_size)
    counts = {"right_n": 0, "right_ok": 0, "wrong_n": 0, "wrong_ok": 0, "wrong_copied": 0}
    for begin in range(0, episodes, batch):
        infos, observations = [], []
        for index in range(begin, min(begin + batch, episodes)):
            obs, info = env.reset(options={"index": index})
            infos.append(info)
            observations.append({**obs, "task": "visual_math"})
        for info, action in zip(infos, policy.act(observations, 1)):
            text = action[0] if isinstance(action, (list, tuple)) else action
            said, taught = _answer(text), _answer(teacher_solution(info["solution"], error))
            side = "right" if taught == str(info["answer"]) else "wrong"
            counts[f"{side}_n"] += 1
            counts[f"{side}_ok"] += said == str(info["answer"])
            counts["wrong_copied"] += side == "wrong" and said == taught
    right, wrong = max(counts["right_n"], 1), max(counts["wrong_n"], 1)
    return {"teacher_right": counts["right_n"], "teacher_wrong": counts["wrong_n"],
            "acc_where_teacher_right": counts["right_ok"] / right, "acc_where_teacher_wrong": counts["wrong_ok"] / wrong,
            "copies_teacher_where_wrong": counts["wrong_copied"] / wrong}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per policy folder."""
    p = argparse.ArgumentParser(prog="python -m evaluation.teacher_split", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="policy folders (DiffusionPolicy.save_pretrained)")
    p.add_argument("--error", type=float, required=True, help="the teacher's sft_teacher_error")
    p.add_argument("--episodes", type=int, default=200, help="held-out problems (default 200)")
    args = p.parse_args(argv)
    from agents.diffusion.policy import DiffusionPolicy

    for folder in args.dirs:
        policy = DiffusionPolicy.from_pretrained(folder)
        policy.decoding = replace(policy.decoding, temperature=0.0)
        print(json.dumps({"policy": folder, **split_accuracy(policy, args.error, args.episodes)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
