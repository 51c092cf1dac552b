"""Format reward: does a model output follow the ``<think>…</think><answer>…</answer>`` layout?

Contract: ``format_reward(text) -> float`` in {0.0, 0.5, 1.0}.

* 1.0 -- the whole text (surrounding whitespace allowed) is exactly
  ``<think>REASONING</think>`` then ``<answer>ANSWER</answer>`` (whitespace allowed
  between them), each tag appears exactly once and ANSWER is not blank.
* 0.5 -- not the full layout, but the text carries a well-formed non-empty
  ``<answer>…</answer>`` block or a balanced, non-empty ``\\boxed{…}``.
* 0.0 -- anything else (including non-str input).

Regex and a linear brace scan only; callers cap the input (``base.coerce_text``).
"""

from __future__ import annotations

import re

__all__ = ["format_reward", "find_boxed"]

_FULL = re.compile(
    r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*",
    re.DOTALL,
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_BRACES = re.compile(r"\\[{}]|\\(?:boxed|fbox)\s*\{|[{}]")


def find_boxed(text: str) -> list[str]:
    """Contents of every balanced ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, by start.

    One linear pass with a brace stack (escaped ``\\{``/``\\}`` are literal), so hostile
    inputs such as thousands of unclosed ``\\boxed{`` stay cheap.
    """
    stack: list[tuple[bool, int]] = []
    found: list[tuple[int, str]] = []
    for token in _BRACES.finditer(text):
        piece = token.group()
        if piece in ("\\{", "\\}"):
            continue
        if piece == "}":
            if stack:
                is_box, start = stack.pop()
                if is_box:
                    found.append((start, text[start : token.start()]))
        else:
            stack.append((piece != "{", token.end()))
    return [content for _, content in sorted(found)]


def format_reward(text: str) -> float:
    """1.0 for the exact think/answer layout, 0.5 for an answer block or \\boxed{} only, else 0.0."""
    if not isinstance(text, str) or not text:
        return 0.0
    if all(text.count(tag) == 1 for tag in _TAGS):  # counted first: keeps the regex linear
        match = _FULL.fullmatch(text)
        if match is not None and match.group("answer").strip():
            return 1.0
    if any(block.strip() for block in _ANSWER.findall(text)):
        return 0.5
    if any(box.strip() for box in find_boxed(text)):
        return 0.5
    return 0.0
