"""The imperfect teacher: SFT references that are systematically wrong on a stated fraction of facts.

docs/testbed.md, section "Imperfect references". VisualMath levels 1-2 are carry-free column sums
whose reference solution adds the ones and then the tens column
(``<think>2+5=7. 4+3=7.</think><answer>77</answer>``). The teacher knows the 55 one-digit
addition facts ``x+y`` (``x + y <= 9``) except ``round(f * 55)`` of them, chosen by a fixed hash
ranking: on those it is off by one (``x+y+1``, or ``x+y-1`` when the sum is 9), in every column
and every problem that uses the fact. The error is a rule a student can learn and carry to
held-out problems, so copying the teacher keeps it (random per-problem noise would not: the
majority answer of each fact would still be right). The env's verifier still scores against the
true gold, so RL can correct it.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

__all__ = ["FACTS", "problem_error_rate", "teacher_solution", "wrong_facts"]

#: The one-digit addition facts of the carry-free column sums (ones 0-9, tens 1-9).
FACTS: tuple[tuple[int, int], ...] = tuple((x, y) for x in range(10) for y in range(10) if x + y <= 9)
_STEP = re.compile(r"(\d)\+(\d)=(\d)\.")
_ANSWER = re.compile(r"<answer>\d+</answer>")


def _rank(fact: tuple[int, int]) -> bytes:
    return hashlib.blake2b(f"teacher:{fact[0]}+{fact[1]}".encode(), digest_size=8).digest()


@lru_cache(maxsize=None)
def wrong_facts(fraction: float) -> frozenset[tuple[int, int]]:
    """The ``round(fraction * 55)`` facts the teacher gets wrong: the lowest of a fixed hash ranking (nested in f)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sft_teacher_error={fraction!r}: must be a fraction in [0, 1]")
    return frozenset(sorted(FACTS, key=_rank)[: round(fraction * len(FACTS))])


def _teacher_sum(x: int, y: int, wrong: frozenset[tuple[int, int]]) -> int:
    total = x + y
    if (x, y) not in wrong:
        return total
    return total + 1 if total < 9 else total - 1


def teacher_solution(solution: str, fraction: float) -> str:
    """The teacher's version of a level 1-2 column-sum reference: wrong facts off by one, the answer rebuilt."""
    if fraction == 0:
        return solution
    steps = _STEP.findall(solution)
    if len(steps) != 2 or len(_ANSWER.findall(solution)) != 1:
        raise ValueError(
            f"sft_teacher_error: reference {solution!r} is not a VisualMath level 1-2 column sum "
            "('<think>x+y=z. x+y=z.</think><answer>N</answer>'); the teacher only knows those"
        )
    wrong = wrong_facts(fraction)
    sums = [_teacher_sum(int(x), int(y), wrong) for x, y, _ in steps]
    it = iter(sums)
    text = _STEP.sub(lambda m: f"{m.group(1)}+{m.group(2)}={next(it)}.", solution)
    return _ANSWER.sub(f"<answer>{10 * sums[1] + sums[0]}</answer>", text)


def problem_error_rate(fraction: float) -> float:
    """Exact fraction of the 1,980 level 1-2 problems (ones fact x tens fact) whose teacher answer is wrong."""
    wrong = wrong_facts(fraction)
    tens = [f for f in FACTS if f[0] >= 1 and f[1] >= 1]
    bad = sum(1 for o in FACTS for t in tens if o in wrong or t in wrong)
    return bad / (len(FACTS) * len(tens))
