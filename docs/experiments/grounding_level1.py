"""Grounding difficulty-1 learnability experiments behind docs/results.md (issue 6).

Not part of the package or the tests: a record of how the numbers were made, runnable from a
checkout of commit d0345a6 (``git checkout d0345a6``, then ``python
docs/experiments/grounding_level1.py env|probe ...``, one CPU thread). It drives the quick-SFT
loop ``agents.sft.train_sft`` of that time, which has since been replaced by the one trainer
(``lavida train --env ...``; docs/design.md), so it does not run on later commits.

* ``env``: SFT a fresh ``DiffusionPolicy.tiny`` on ``LaViDa/Grounding-v0`` difficulty 1 for
  ``--cpu`` minutes of process CPU time, with layout variants patched in (``--grid``,
  ``--size``, ``--patch``, ``--min/--max`` shapes, ``--words`` extra vocabulary, ``--listing``
  a cell-by-cell scene description before the answer); ``--every N`` evaluates 64 test problems
  every N steps (a learning curve). Reports test Acc@0.5, the right cell, and how often the
  named cell holds *some* shape (localisation without the right attribute).
* ``probe``: a synthetic stand-in with a short prompt: ``--nshapes`` shapes on the 4x4 grid,
  the target named by a colour no other shape has. Measures whether the model can name the
  target's cell (``--nshapes 1`` = localisation only, 2-3 = localisation plus binding).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re

import gymnasium as gym
import torch

import agents.diffusion.tokenizer as tokenizer_module
import lavida_envs  # noqa: F401  (registers the envs)
import lavida_envs.tasks.grounding as grounding
from agents.diffusion.policy import DiffusionPolicy
from agents.sft import SFTConfig, image_hash, sft_examples, train_sft
from lavida_envs.scene import COLORS, KINDS, Scene, Shape, _q, render_scene, shape_box

EXTRA_WORDS = ("Locate", "its", "origin", "corner", "down", "row", "column", "Row", "Step", "star", "pentagon",
               "hexagon", "empty")  # fmt: skip
CELL = re.compile(r"ow (\d+), column (\d+)")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["env", "probe"])
    p.add_argument("--out", required=True, help="prefix of OUT.log (curve), OUT.json (result), OUT_ckpt/")
    p.add_argument("--cpu", type=float, default=10.0, help="process CPU minutes of training")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--gen", type=int, default=80, help="response positions")
    p.add_argument("--patch", type=int, default=16, help="model patch size at 128 px")
    p.add_argument("--words", action="store_true", help="add EXTRA_WORDS to the vocabulary")
    p.add_argument("--listing", action="store_true", help="describe every cell before naming the target")
    p.add_argument("--every", type=int, default=0, help="env: curve point every N steps (64 test problems)")
    p.add_argument("--eval", type=int, default=200, help="env: test problems at the end")
    p.add_argument("--grid", type=int, default=4)
    p.add_argument("--size", type=float, default=0.085)
    p.add_argument("--min", type=int, default=3)
    p.add_argument("--max", type=int, default=9)
    p.add_argument("--nshapes", type=int, default=3, help="probe: shapes per image")
    return p.parse_args()


def _cell(shape: Shape, grid: int) -> tuple[int, int]:
    """The 1-based (row, column) of the grid cell holding ``shape``'s centre."""
    return int(shape.y * grid) + 1, int(shape.x * grid) + 1


def _listing(shapes: list[Shape], grid: int, empty: str) -> str:
    names = {_cell(s, grid): s.describe() for s in shapes}
    return " ".join(
        f"Row {r}: " + ", ".join(names.get((r, c), empty) for c in range(1, grid + 1)) + "." for r in range(1, grid + 1)
    )


def _patch_env(a: argparse.Namespace) -> None:
    grounding.LEVEL1_GRID, grounding.LEVEL1_SIZE = a.grid, a.size
    if a.listing:
        build = grounding.GroundingEnv.build_problem

        def build_problem(self, spec, rng, difficulty):  # type: ignore[no-untyped-def]
            problem = build(self, spec, rng, difficulty)
            rows = _listing(list(spec.scene), a.grid, "empty")
            return dataclasses.replace(problem, solution=problem.solution.replace("<think>Step 1: ", f"<think>{rows} "))

        grounding.GroundingEnv.build_problem = build_problem


def _probe_example(rng: random.Random, a: argparse.Namespace) -> tuple[dict, str, tuple[int, int]]:
    grid, size = grounding.LEVEL1_GRID, grounding.LEVEL1_SIZE
    cells = rng.sample(range(grid * grid), a.nshapes)
    shapes = [Shape(rng.choice(KINDS), rng.choice(COLORS), size, _q((c % grid + 0.5) / grid), _q((c // grid + 0.5) / grid))
              for c in cells]  # fmt: skip
    target = shapes[0]
    others = [c for c in COLORS if c != target.color]
    shapes = [target] + [dataclasses.replace(s, color=rng.choice(others)) for s in shapes[1:]]
    name = f"the {target.color} shape" if a.nshapes > 1 else "the shape"
    row, col = _cell(target, grid)
    box = "[" + ", ".join(str(int(v)) for v in shape_box(target, 128)) + "]"
    think = f"{name[0].upper()}{name[1:]} is in row {row}, column {col}."
    if a.listing:
        think = _listing(shapes, grid, "no shape") + " " + think
    prompt = f"Locate {name}. Give its bounding box as [x1, y1, x2, y2] in pixel coordinates."
    obs = {"image": render_scene(Scene(tuple(shapes)), 128), "prompt": prompt, "task": "grounding"}
    return obs, f"<think>{think}</think><answer>{box}</answer>", (row, col)


def _named_cell(text: str) -> tuple[int, int] | None:
    m = CELL.search(text)
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def main() -> None:
    """Train, record the curve, evaluate, save."""
    a = _parse()
    torch.set_num_threads(1)
    if a.words:
        extra = EXTRA_WORDS + (("no",) if a.listing and a.mode == "probe" else ())
        tokenizer_module.build_tokenizer.__defaults__ = (tokenizer_module.WORDS + extra,)
    policy = DiffusionPolicy.tiny(seed=0, patch_size=a.patch)
    policy.decoding.gen_length = a.gen
    policy.decoding.task_gen_length["grounding"] = a.gen
    seen: set[str] = set()
    env_kwargs = dict(min_shapes=a.min, max_shapes=a.max, image_size=128)

    if a.mode == "env":
        _patch_env(a)

        def stream():
            for obs, target, digest in sft_examples("LaViDa/Grounding-v0", "train", 1, **env_kwargs):
                seen.add(digest)
                yield obs, target, digest

        def evaluate(split: str, n: int) -> dict:
            env = gym.make("LaViDa/Grounding-v0", split=split, difficulty=1, **env_kwargs)
            acc = cell = on_shape = overlap = 0
            for begin in range(0, n, 16):
                pairs = [env.reset(options={"index": i}) for i in range(begin, min(n, begin + 16))]
                for (obs, info), action in zip(pairs, policy.act([o for o, _ in pairs])):
                    env.reset(options={"index": info["index"]})
                    acc += env.step(action[0])[4]["correct"]
                    overlap += image_hash(obs["image"]) in seen
                    named, gold = _named_cell(action[0]), _named_cell(info["solution"])
                    cell += named is not None and named == gold
                    scene = env.unwrapped.problem(info["index"]).meta["scene"]
                    on_shape += named is not None and any(_cell(s, a.grid) == named for s in scene)
            return {"acc": acc / n, "cell": cell / n, "on_a_shape": on_shape / n, "overlap": overlap}

    else:
        rng = random.Random(0)

        def stream():
            while True:
                obs, target, _ = _probe_example(rng, a)
                yield obs, target, ""

        held_out = [_probe_example(random.Random(10_000 + i), a) for i in range(64)]

        def evaluate(split: str, n: int) -> dict:
            actions = policy.act([obs for obs, _, _ in held_out])
            return {"cell": sum(_named_cell(x[0]) == rc for x, (_, _, rc) in zip(actions, held_out)) / len(held_out)}

    every = a.every or (100 if a.mode == "probe" else 0)

    def progress(step: int, metrics: dict) -> None:
        if step % 25 == 0:
            log.write(json.dumps(metrics) + "\n")
        if every and step % every == 0:
            policy.model.eval()
            point = evaluate("test", 64)
            policy.model.train()
            log.write(json.dumps({"step": step, "cpu_time": metrics["cpu_time"], "curve": point}) + "\n")
        log.flush()

    cfg = SFTConfig(steps=40_000, batch_size=a.bs, lr=a.lr, max_cpu_minutes=a.cpu)
    with open(a.out + ".log", "w", encoding="utf-8") as log:
        train_sft(policy, stream(), cfg, progress)
    policy.save_pretrained(a.out + "_ckpt")
    result = dict(vars(a), steps=len(cfg.history), loss=cfg.history[-1]["loss"], distinct_train_images=len(seen),
                  test=evaluate("test", a.eval))  # fmt: skip
    print(json.dumps(result))
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
