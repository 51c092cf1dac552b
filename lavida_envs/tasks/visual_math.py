"""``LaViDa/VisualMath-v0``: procedural visual math whose numbers must be read from the image.

Observation: ``{"image": uint8[S, S, 3], "prompt": str}`` (``S = image_size``, default 128).
The prompt says what to compute but never gives the numbers; the picture holds them.
Action: text ending in ``<answer>…</answer>`` (or ``\\boxed{…}``).

Reward = ``w_acc * accuracy + w_fmt * format`` (defaults 0.9 / 0.1, ``reward=`` overrides):
``accuracy`` is 1.0 when :func:`lavida_envs.rewards.math.check_answer` accepts the
extracted answer against the exact gold (math-verify, hard timeout; for multiple choice the
letter or the option's text), else 0.0; ``format`` is
:func:`lavida_envs.rewards.format.format_reward` (1.0 full ``<think>…</think><answer>…</answer>``
layout, 0.5 answer block or ``\\boxed{}`` only). Non-text or over-long actions score 0
with ``info["error"]`` set.

Families (``lavida_envs.tasks.math_families``): ``arith`` (expressions), ``fraction``,
``angles`` (two triangle angles labelled, find the third), ``right`` (right-triangle side,
exact surd such as ``5\\sqrt{2}``), ``circle`` (area/circumference as ``25\\pi``) and
``chart`` (bar/line charts: read a value, compare, range, sum). Every gold is built from
our own drawn values and re-derived with sympy when the problem is built.

Levels (``difficulty=1..5`` or ``"mixed"``, one level per index):

1. Carry-free two-digit sums ``a + b`` (every column sums to one digit: 1,980 operand pairs)
   drawn as a column addition at FIXED glyph slots in a fixed large font: each digit is on
   the same pixels every time, no jitter. Key = the operand pair, so the ~20% of pairs
   hashed to test are never seen in training, while every column fact (``4+3=7``) is. The
   reference solution adds column by column
   (``<think>2+5=7. 4+3=7.</think><answer>77</answer>``), so a small model can generalise to
   held-out pairs. Sums with carries start at level 3.
2. The same sums (same keys, so the same split) with the block's position and font size
   jittered: layout jitter is the step from level 1 to level 2.
3. Two-digit ``+ −`` and ``×`` up to 12; like-denominator fractions; triangle angles in
   multiples of 5; circles with the radius labelled; bar charts with values printed on the
   bars. Small jitter. 25% of fraction/angle/circle problems are multiple choice.
4. Three-operand expressions with precedence; unlike-denominator fractions; any-integer
   angles on rotated triangles; right triangles from two legs (surds); radius or diameter
   labelled; bar charts read off a gridded axis (value, difference, range). 35% MC.
5. Parentheses and exact division; fraction ``×`` and ``÷``; right triangles from the
   hypotenuse and a leg; line or bar charts with values to 50, sums. 50% MC.

Multiple choice: options A-D are listed in the prompt; the gold ``answer`` is the letter
and ``Problem.meta["choices"]`` holds the option texts in order. ``info["solution"]`` is a
short ``<think>steps</think><answer>gold</answer>`` that scores 1.0. Real benchmarks come
from ``dataset=NAME, data_dir=DIR`` via :func:`lavida_envs.datasets.load_math_dataset`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from lavida_envs.base import Problem, Score, TaskEnv, coerce_text
from lavida_envs.tasks.math_families import FAMILIES, LEVEL_MIX, build_spec, draw_draft
from lavida_envs.tasks.math_spec import LETTERS, Draft, MathSpec

__all__ = ["VisualMathConfig", "VisualMathEnv", "build_prompt"]

#: Appended to every question: the output layout the reward expects.
FORMAT_INSTRUCTION = "Think step by step inside <think></think>, then give the final answer inside <answer></answer>."


@dataclass
class VisualMathConfig:
    """Procedural options beyond the common TaskEnv kwargs."""

    families: tuple[str, ...] | None = None  # restrict to these families (None: the level's mixture)

    def validate(self) -> None:
        """Raise ValueError naming a bad field and its value."""
        if self.families is not None:
            unknown = sorted(set(self.families) - set(FAMILIES))
            if unknown or not self.families:
                raise ValueError(f"families={self.families!r}: unknown {unknown}; choose from {sorted(FAMILIES)}")


def build_prompt(spec: MathSpec) -> str:
    """The instruction for ``spec``: what to compute (no numbers), options if MC, the format."""
    if spec.choices is None:
        return f"{spec.question} {FORMAT_INSTRUCTION}"
    options = "\n".join(f"{letter}) {text}" for letter, text in zip(LETTERS, spec.choices))
    return f"{spec.question} Choose one option and answer with its letter.\n{options}\n{FORMAT_INSTRUCTION}"


@lru_cache(maxsize=16384)
def _verify(spec: MathSpec) -> None:
    FAMILIES[spec.family].verify(spec)


class VisualMathEnv(TaskEnv):
    """Visual math with exact, sympy-checked golds; see the module docstring for levels."""

    task_name = "visual_math"

    def __init__(self, *args: Any, families: list[str] | tuple[str, ...] | None = None, **kwargs: Any) -> None:
        self.config = VisualMathConfig(tuple(families) if families is not None else None)
        self.config.validate()
        super().__init__(*args, **kwargs)

    def problem(self, index: int) -> Problem:
        """Problem ``index``; the first call in a process also readies a math worker (see below).

        Readying it here (so in ``reset``, also through ``MultiTask-v0``) keeps the math
        workers' start-up out of ``step``: each check then meets its 3 s timeout
        (:func:`lavida_envs.rewards.math.prestart`).
        """
        from lavida_envs.rewards.math import prestart

        prestart()
        return super().problem(index)

    def sample_spec(self, rng: random.Random, difficulty: int) -> Draft:
        """Draw a problem's content at ``difficulty`` (family from the mixture or the allowed set)."""
        family = None
        if self.config.families is not None:
            allowed = [name for name, _ in LEVEL_MIX[difficulty] if name in self.config.families]
            family = rng.choice(allowed or sorted(self.config.families))
        return draw_draft(rng, difficulty, family)

    @staticmethod
    def clear_caches() -> None:
        """Forget which specs were already sympy-checked (benchmarks time cold generation)."""
        _verify.cache_clear()

    def render_spec(self, spec: MathSpec | Draft, rng: random.Random, difficulty: int) -> np.ndarray:
        """Only the picture (the family's renderer; a draft is built first, nothing is checked)."""
        if isinstance(spec, Draft):
            spec = build_spec(spec, rng, difficulty)
        return FAMILIES[spec.family].render(spec, rng, self.image_size, difficulty)

    def build_problem(self, spec: MathSpec | Draft, rng: random.Random, difficulty: int) -> Problem:
        """Build the spec, check its gold with sympy, render the picture and write the prompt."""
        if isinstance(spec, Draft):
            spec = build_spec(spec, rng, difficulty)
        _verify(spec)
        image = self.render_spec(spec, rng, difficulty)
        meta = {
            "family": spec.family,
            "content": spec.content,
            "choices": list(spec.choices) if spec.choices is not None else None,
            "answer_type": "choice" if spec.choices is not None else spec.answer_type,
        }
        return Problem(build_prompt(spec), image, spec.gold, spec.solution, difficulty, spec.key, meta=meta)

    def score(self, action: Any, problem: Problem) -> Score:
        """accuracy (check_answer vs the gold) and format (format_reward) for a text action."""
        from lavida_envs.rewards.format import format_reward
        from lavida_envs.rewards.math import check_answer

        text, error = coerce_text(action)
        if text is None:
            return Score({"accuracy": 0.0, "format": 0.0}, False, metrics={"accuracy": 0.0}, error=error)
        verdict = check_answer(
            text,
            problem.answer,
            choices=problem.meta.get("choices"),
            answer_type=problem.meta.get("answer_type"),
            timeout=3.0,
        )
        accuracy = 1.0 if verdict.correct else 0.0
        return Score(
            {"accuracy": accuracy, "format": format_reward(text)},
            bool(verdict.correct),
            metrics={"accuracy": accuracy},
            parsed=verdict.parsed,
            error=verdict.error,
        )

    def load_dataset(self, name: str, data_dir: str | None, split: str) -> list[Problem]:
        """A real math benchmark from local files, letterboxed to ``image_size``."""
        from lavida_envs.datasets import load_math_dataset

        return load_math_dataset(name, data_dir, split, self.image_size)
