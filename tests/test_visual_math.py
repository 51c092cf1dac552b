"""VisualMath-v0: families render, golds are exact, oracle scores 1, levels, MC, image size."""

from __future__ import annotations

import random
import re
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest

from lavida_envs.render import ALL_COLORS
from lavida_envs.tasks.math_arith import arith_spec, column_spec, expr_tokens, fraction_spec
from lavida_envs.tasks.math_charts import chart_spec
from lavida_envs.tasks.math_families import FAMILIES, LEVEL_MIX, build_spec, draw_draft, draw_spec, make_multiple_choice
from lavida_envs.tasks.math_geometry import angles_spec, circle_spec, right_spec
from lavida_envs.tasks.math_spec import LETTERS
from lavida_envs.tasks.visual_math import VisualMathEnv, build_prompt

HAND_CHECKED = [
    (arith_spec(("+", 7, 5)), "12"),
    (arith_spec(("−", ("×", ("+", 3, 4), 5), 6)), "29"),
    (arith_spec(("−", ("×", 7, 6), ("÷", 12, 4))), "39"),
    (fraction_spec(("+", 1, 2, 1, 3)), "\\frac{5}{6}"),
    (fraction_spec(("÷", 3, 4, 3, 8)), "2"),
    (fraction_spec(("−", 3, 5, 1, 5)), "\\frac{2}{5}"),
    (angles_spec((60, 50)), "70"),
    (right_spec(("legs", 5, 5)), "5\\sqrt{2}"),
    (right_spec(("legs", 3, 4)), "5"),
    (right_spec(("legs", 1, 2)), "\\sqrt{5}"),
    (right_spec(("leg", 7, 3)), "2\\sqrt{10}"),
    (circle_spec(("area", "d", 5)), "25\\pi"),
    (circle_spec(("circumference", "r", 1)), "2\\pi"),
    (circle_spec(("area", "r", 1)), "\\pi"),
    (chart_spec(("bar", (3, 7, 5), "diff", (1, 0))), "4"),
    (chart_spec(("bar", (3, 7, 5), "value", (2,))), "5"),
    (chart_spec(("line", (10, 25, 40), "sum", ())), "75"),
    (chart_spec(("bar", (9, 2, 6, 4), "range", ())), "7"),
]


@pytest.mark.parametrize("spec, gold", HAND_CHECKED, ids=lambda x: getattr(x, "key", x))
def test_hand_checked_golds_are_exact_and_verified(spec, gold):
    assert spec.answer == gold
    FAMILIES[spec.family].verify(spec)  # sympy agrees
    assert spec.solution.endswith(f"<answer>{gold}</answer>")


@pytest.mark.parametrize("spec, gold", HAND_CHECKED[::3], ids=lambda x: getattr(x, "key", x))
def test_sympy_check_rejects_a_wrong_gold(spec, gold):
    with pytest.raises(AssertionError):
        FAMILIES[spec.family].verify(replace(spec, answer="13"))


def test_expression_tokens_place_parentheses_by_precedence():
    assert expr_tokens(("−", ("×", ("+", 3, 4), 5), 6)) == ["(", "3", "+", "4", ")", "×", "5", "−", "6"]
    assert expr_tokens(("−", 10, ("−", 3, 2))) == ["10", "−", "(", "3", "−", "2", ")"]
    assert expr_tokens(("+", ("×", 2, 3), 4)) == ["2", "×", "3", "+", "4"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("size", [16, 64, 128, 200])
def test_every_family_renders_palette_only(family, size):
    rng = random.Random(f"{family}{size}")
    for level in (3, 4, 5):
        spec = FAMILIES[family].sample(rng, level)
        img = FAMILIES[family].render(spec, random.Random(0), size, level)
        assert img.dtype == np.uint8 and img.shape == (size, size, 3)
        colors = {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0)}
        assert colors <= set(ALL_COLORS), f"non-palette colours {colors - set(ALL_COLORS)}"
        assert (img == 0).all(axis=2).sum() > 10  # something was drawn in ink


def test_oracle_scores_one_across_levels():
    for level in (1, 2, 3, 4, 5):
        env = VisualMathEnv(difficulty=level, split="test" if level % 2 else "train", image_size=48)
        for index in range(60):
            _, info = env.reset(options={"index": index})
            _, reward, terminated, _, step = env.step(info["solution"])
            assert terminated and reward == pytest.approx(1.0), (level, index, info, step)
            assert step["correct"] and step["error"] is None


def test_every_level_and_mixed_generate_the_planned_families():
    for level in (1, 2, 3, 4, 5):
        env = VisualMathEnv(difficulty=level, image_size=32)
        seen = {env.problem(i).meta["family"] for i in range(150)}
        assert seen == {name for name, _ in LEVEL_MIX[level]}, (level, seen)
    mixed = VisualMathEnv(difficulty="mixed", image_size=32)
    assert {mixed.problem(i).difficulty for i in range(100)} == {1, 2, 3, 4, 5}


def test_level_one_uses_fixed_slots_and_prompt_has_no_numbers():
    env = VisualMathEnv(difficulty=1, image_size=128)
    by_key: dict[str, np.ndarray] = {}
    top_row: dict[int, np.ndarray] = {}  # the first operand's row depends on a only
    ones: dict[tuple[int, int], np.ndarray] = {}  # the ones column depends on the two ones digits only
    for index in range(400):
        problem = env.problem(index)
        assert not re.search(r"\d", problem.prompt), problem.prompt
        _, a, b = problem.meta["content"]
        assert 10 <= a < 100 and 10 <= b < 100 and problem.answer == str(a + b)
        if problem.key in by_key:  # same operands -> same pixels, whatever the index
            assert np.array_equal(by_key[problem.key], problem.image)
        by_key[problem.key] = problem.image
        for store, slot, pixels in ((top_row, a, problem.image[:60]), (ones, (a % 10, b % 10), problem.image[:, 72:])):
            if slot in store:
                assert np.array_equal(store[slot], pixels), slot
            store[slot] = pixels
    assert len(by_key) > 250 and len(top_row) >= 60 and len(ones) == 55


def test_level_one_solution_adds_column_by_column_without_a_carry():
    env = VisualMathEnv(difficulty=1, image_size=64)
    for problem in map(env.problem, range(200)):
        _, a, b = problem.meta["content"]
        ones, tens = a % 10 + b % 10, a // 10 + b // 10
        assert ones <= 9 and tens <= 9  # carry-free
        expected = f"<think>{a % 10}+{b % 10}={ones}. {a // 10}+{b // 10}={tens}.</think><answer>{a + b}</answer>"
        assert problem.solution == expected
    assert column_spec(("+", 42, 35)).solution == "<think>2+5=7. 4+3=7.</think><answer>77</answer>"
    with pytest.raises(ValueError, match="47 \\+ 35 needs a carry"):
        column_spec(("+", 47, 35))


def test_level_two_jitters_the_same_sums():
    env = VisualMathEnv(difficulty=2, image_size=128)
    images: dict[str, set[bytes]] = {}
    for index in range(300):
        problem = env.problem(index)
        assert not re.search(r"\d", problem.prompt)
        images.setdefault(problem.key, set()).add(problem.image.tobytes())
    assert all(key.startswith("arith|('+',") for key in images)
    assert max(len(v) for v in images.values()) > 1  # layouts differ for one sum


def test_free_form_prompts_never_contain_digits():
    for level in (3, 4, 5):
        env = VisualMathEnv(difficulty=level, image_size=32)
        for index in range(80):
            problem = env.problem(index)
            if problem.meta["choices"] is None:
                assert not re.search(r"\d", problem.prompt), problem.prompt


def test_multiple_choice_letter_handling():
    env = VisualMathEnv(difficulty=5, image_size=48)
    problems = [env.problem(i) for i in range(60)]
    mc = [p for p in problems if p.meta["choices"] is not None]
    assert len({p.meta["family"] for p in mc}) >= 2
    for problem in mc[:6]:
        choices = problem.meta["choices"]
        assert problem.answer in LETTERS and len(choices) == 4 and len(set(choices)) == 4
        assert problem.meta["answer_type"] == "choice"
        for letter, text in zip(LETTERS, choices):
            assert f"{letter}) {text}" in problem.prompt
        env._problem, env._index = problem, 0
        wrong = next(x for x in LETTERS if x != problem.answer)
        assert env.step(f"<think>t</think><answer>{problem.answer}</answer>")[1] == pytest.approx(1.0)
        assert env.step(f"<think>t</think><answer>({problem.answer})</answer>")[1] == pytest.approx(1.0)
        assert env.step(f"<think>t</think><answer>{wrong}</answer>")[1] == pytest.approx(0.1)
        gold_text = choices[LETTERS.index(problem.answer)]
        assert env.step(f"<think>t</think><answer>{gold_text}</answer>")[1] == pytest.approx(1.0)


def test_make_multiple_choice_keeps_key_and_gold():
    spec = circle_spec(("area", "r", 5))
    mc = make_multiple_choice(spec, random.Random(3))
    assert mc.key == spec.key and mc.choices[mc.gold_index] == "25\\pi"
    assert mc.solution.endswith(f"<answer>{LETTERS[mc.gold_index]}</answer>")
    assert "A) " in build_prompt(mc) and "D) " in build_prompt(mc)


@pytest.mark.parametrize("size", [32, 96, 256])
def test_image_size_is_respected_and_layout_scales(size):
    env = VisualMathEnv(difficulty=1, image_size=size)
    obs, _ = env.reset(options={"index": 0})
    assert obs["image"].shape == (size, size, 3) and env.observation_space.contains(obs)
    ys, xs = np.nonzero((obs["image"] == 0).all(axis=2))
    assert xs.max() - xs.min() > 0.5 * size  # the sum spans the image at every size


def test_scoring_components():
    env = VisualMathEnv(difficulty=4, image_size=32)
    _, info = env.reset(options={"index": 5})
    gold = info["answer"]
    _, r, _, _, step = env.step(f"\\boxed{{{gold}}}")
    assert r == pytest.approx(0.9 + 0.05) and step["reward_components"] == {"accuracy": 1.0, "format": 0.5}
    _, r, _, _, step = env.step("<think>guess</think><answer>123456789</answer>")
    assert r == pytest.approx(0.1) and not step["correct"] and step["parsed"] == "123456789"
    _, r, _, _, step = env.step(None)
    assert r == 0.0 and "str" in step["error"]


def test_families_kwarg_restricts_and_validates():
    env = VisualMathEnv(difficulty=4, families=["right", "circle"], image_size=32)
    assert {env.problem(i).meta["family"] for i in range(30)} == {"right", "circle"}
    with pytest.raises(ValueError, match="bogus"):
        VisualMathEnv(families=["bogus"])


def test_draw_spec_is_deterministic_per_rng():
    a = [draw_spec(random.Random(i), 5).key for i in range(50)]
    assert a == [draw_spec(random.Random(i), 5).key for i in range(50)]


def test_draft_key_is_the_built_spec_key():
    for i in range(100):
        rng = random.Random(i)
        draft = draw_draft(rng, 1 + i % 5)
        spec = build_spec(draft, rng, 1 + i % 5)
        assert draft.key == spec.key and (spec.choices is not None) == draft.multiple_choice


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name, split", [("geometry3k", "train"), ("mathvista", "test"), ("mathverse", "test")])
def test_real_datasets_load_through_the_env_and_score_with_meta(name, split):
    env = VisualMathEnv(dataset=name, data_dir=str(FIXTURES / name), split=split, image_size=64)
    assert env.num_problems() >= 3
    for index in range(env.num_problems()):
        obs, info = env.reset(options={"index": index})
        assert obs["image"].shape == (64, 64, 3) and info["source"] != "procedural"
        assert env.step(info["solution"])[1] == pytest.approx(1.0), info
        choices = env._problem.meta.get("choices")
        if choices:  # multiple choice: the option text counts like the letter, another letter does not
            gold_text = choices[LETTERS.index(info["answer"])]
            assert env.step(f"<think>t</think><answer>{gold_text}</answer>")[1] == pytest.approx(1.0)
            wrong = next(x for x in "ABCD" if x != info["answer"])
            assert env.step(f"<think>t</think><answer>{wrong}</answer>")[1] == pytest.approx(0.1)


def test_unknown_dataset_name_is_a_clear_error():
    with pytest.raises(ValueError, match="nope"):
        VisualMathEnv(dataset="nope", data_dir=str(FIXTURES))
