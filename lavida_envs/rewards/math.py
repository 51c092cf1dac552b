"""Verifiable math reward (work in progress: extract_answer first)."""

from __future__ import annotations

import re

from lavida_envs.rewards.format import find_boxed

__all__ = ["extract_answer"]

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The last ``<answer>`` block, else the last balanced ``\\boxed{}``; stripped; None if absent."""
    if not isinstance(text, str):
        return None
    blocks = _ANSWER.findall(text)
    if blocks:
        return blocks[-1].strip()
    boxes = find_boxed(text)
    if boxes:
        return boxes[-1].strip()
    return None
