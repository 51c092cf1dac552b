"""format_reward: 1.0 exact think/answer layout, 0.5 answer block or \\boxed{} only, else 0.0."""

from __future__ import annotations

import time

import pytest

from lavida_envs.rewards.format import find_boxed, format_reward


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>add them</think><answer>3</answer>", 1.0),
        ("  <think>a\nb</think>\n<answer> 3 </answer>\n", 1.0),
        ("<think></think><answer>x</answer>", 1.0),
        ("<think>r</think><answer>\\boxed{3}</answer>", 1.0),
        ("<think>r</think><answer>  </answer>", 0.0),  # blank answer, nothing else
        ("<answer>3</answer>", 0.5),
        ("reasoning... <answer>3</answer>", 0.5),
        ("<think>r</think>text<answer>3</answer>", 0.5),  # text between the blocks
        ("<think>r</think><answer>3</answer> trailing", 0.5),
        ("<think>a<think>b</think><answer>3</answer>", 0.5),  # a tag twice
        ("<think>r</think><answer>3</answer><answer>4</answer>", 0.5),
        ("<answer>3</answer><think>r</think>", 0.5),  # wrong order
        ("so the result is \\boxed{42}", 0.5),
        ("\\boxed{\\frac{1}{2}}", 0.5),
        ("<think>r</think>\\boxed{3}", 0.5),
        ("\\boxed{}", 0.0),
        ("\\boxed{3", 0.0),
        ("<answer>3", 0.0),
        ("just 3", 0.0),
        ("", 0.0),
    ],
)
def test_format_reward_values(text: str, expected: float) -> None:
    assert format_reward(text) == expected


def test_format_reward_non_str_is_zero() -> None:
    assert format_reward(None) == 0.0  # type: ignore[arg-type]
    assert format_reward(b"<answer>3</answer>") == 0.0  # type: ignore[arg-type]


def test_find_boxed_balanced_and_nested() -> None:
    assert find_boxed(r"a \boxed{\frac{1}{2}} b \boxed{\{1,2\}} \fbox{x} \boxed {3}") == [
        r"\frac{1}{2}",
        r"\{1,2\}",
        "x",
        "3",
    ]
    assert find_boxed(r"\boxed{\boxed{3}}") == [r"\boxed{3}", "3"]
    assert find_boxed(r"\boxed{a}}} \boxed{b") == ["a"]
    assert find_boxed("no box") == []


def test_format_reward_is_cheap_on_hostile_text() -> None:
    hostile = [
        "\\boxed{" * 2000,
        "\\frac{" * 2700,
        "<think>" + "</think><answer>x</answer>" * 600,
        "<answer>" * 2000 + "</answer>",
        "x" * 16384,
    ]
    start = time.monotonic()
    for text in hostile:
        assert format_reward(text) in (0.0, 0.5)
    assert time.monotonic() - start < 2.0
