"""The visual math problem spec, the family interface and exact answer formatting.

A problem is drawn in two steps so that redraws for the other split stay cheap: a
:class:`Draft` (family + canonical ``content`` tuple, whose ``key`` decides the split),
then the full :class:`MathSpec` built from it (question, exact gold, reasoning steps,
distractors), independent of layout. A :class:`Family` bundles the functions of one
problem type: ``draw(rng, level) -> content``, ``build(content, rng, level) -> MathSpec``,
``render(spec, rng, size, level) -> uint8[size, size, 3]`` and ``verify(spec)``, which
re-derives the gold with sympy from the constructed values (AssertionError on a mismatch).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = [
    "Draft",
    "Family",
    "LETTERS",
    "MathSpec",
    "frac_latex",
    "layout_jitter",
    "pick_distractors",
    "pi_latex",
    "simplify_sqrt",
    "surd_latex",
]

#: Option letters of multiple-choice problems, in order.
LETTERS = "ABCD"


@dataclass(frozen=True)
class MathSpec:
    """A drawn problem's content: what to show, what to ask, the exact gold and its steps."""

    family: str
    content: tuple  # canonical numbers/operators the picture shows (family-specific)
    question: str  # what to compute, without the numbers
    answer: str  # free-form gold, LaTeX
    steps: tuple[str, ...]  # short reasoning steps for the reference solution
    answer_type: str = "math"
    distractors: tuple[str, ...] = ()  # wrong options for a multiple-choice variant
    choices: tuple[str, ...] | None = None  # set when this problem is multiple choice
    gold_index: int | None = None  # index of the gold among ``choices``

    @property
    def key(self) -> str:
        """Canonical semantic content: family and content (not layout, not option order)."""
        return f"{self.family}|{self.content!r}"

    @property
    def gold(self) -> str:
        """What a correct action answers: the option letter for multiple choice, else ``answer``."""
        return self.answer if self.gold_index is None else LETTERS[self.gold_index]

    @property
    def solution(self) -> str:
        """Reference solution ``<think>steps</think><answer>gold</answer>``."""
        steps = list(self.steps)
        if self.gold_index is not None:
            steps.append(f"This is option {self.gold}.")
        return f"<think>{' '.join(steps)}</think><answer>{self.gold}</answer>"


@dataclass(frozen=True)
class Draft:
    """A drawn problem before it is built: family, content and whether it is asked as MC."""

    family: str
    content: tuple
    multiple_choice: bool = False

    @property
    def key(self) -> str:
        """Same key as the :class:`MathSpec` it builds into."""
        return f"{self.family}|{self.content!r}"


@dataclass(frozen=True)
class Family:
    """One problem type: content sampler, spec builder, renderer and sympy verifier."""

    name: str
    draw: Callable[[random.Random, int], tuple]
    build: Callable[[tuple, random.Random, int], MathSpec]
    render: Callable[[MathSpec, random.Random, int, int], np.ndarray]
    verify: Callable[[MathSpec], None]
    multiple_choice: bool = False  # has distractors for a multiple-choice variant

    def sample(self, rng: random.Random, level: int) -> MathSpec:
        """Draw content and build its spec in one go."""
        return self.build(self.draw(rng, level), rng, level)


def layout_jitter(level: int) -> tuple[float, float]:
    """(position jitter as a fraction of the image size, relative font-size jitter) at ``level``."""
    return {1: (0.0, 0.0), 2: (0.08, 0.2), 3: (0.05, 0.15), 4: (0.07, 0.2)}.get(level, (0.09, 0.25))


def frac_latex(value: Fraction) -> str:
    """``\\frac{p}{q}`` for a non-integer rational (sign in front), else the integer."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def simplify_sqrt(n: int) -> tuple[int, int]:
    """``(k, m)`` with ``sqrt(n) = k * sqrt(m)`` and ``m`` square-free (n >= 1)."""
    k, m = 1, n
    f = 2
    while f * f <= m:
        while m % (f * f) == 0:
            m //= f * f
            k *= f
        f += 1
    return k, m


def surd_latex(n: int) -> str:
    """Exact LaTeX of ``sqrt(n)``: ``7``, ``\\sqrt{13}`` or ``5\\sqrt{2}``."""
    k, m = simplify_sqrt(n)
    if m == 1:
        return str(k)
    return f"\\sqrt{{{m}}}" if k == 1 else f"{k}\\sqrt{{{m}}}"


def pi_latex(coef: int) -> str:
    """LaTeX of ``coef * pi``: ``\\pi`` or ``25\\pi``."""
    return "\\pi" if coef == 1 else f"{coef}\\pi"


def pick_distractors(
    rng: random.Random, gold: str, candidates: Sequence[str], fallback: Sequence[str]
) -> tuple[str, ...]:
    """Three distinct wrong options: from ``candidates`` first, then ``fallback``, never ``gold``."""
    seen, out = {gold}, []
    pool = list(dict.fromkeys(candidates))
    rng.shuffle(pool)
    for option in [*pool, *fallback]:
        if option not in seen:
            seen.add(option)
            out.append(option)
        if len(out) == 3:
            return tuple(out)
    raise AssertionError(f"not enough distractors for gold {gold!r}: {candidates!r} {fallback!r}")


def is_square(n: int) -> bool:
    """Whether ``n`` is a perfect square."""
    return n >= 0 and math.isqrt(n) ** 2 == n
