"""Arithmetic-expression and fraction families of VisualMath.

``arith`` content is an expression tree ``(op, left, right)`` over ints, shown as one line
(``17 + 25 = ?``, ``(3 + 4) × 5 − 6 = ?``). Levels 1-2 are carry-free two-digit sums ``a + b``
drawn as a column addition (``a`` above ``b``, digits aligned), solved column by column:
at level 1 every digit sits on fixed pixels, level 2 jitters the block's position and size.
``fraction`` content is ``(op, a, b, c, d)`` for ``a/b op c/d``, shown stacked; the gold is
reduced (``\\frac{7}{12}`` or an integer).
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

import numpy as np
import sympy

from lavida_envs.render import INK, new_canvas, to_array
from lavida_envs.tasks.math_draw import Frac, draw_label, draw_line_of_items, fit_size, jitter
from lavida_envs.tasks.math_spec import Family, MathSpec, frac_latex, layout_jitter, pick_distractors

__all__ = ["ARITH", "FRACTION", "arith_spec", "build_arith", "column_spec", "expr_tokens", "expr_value", "fraction_spec"]

#: Digit pairs whose sum is one digit: the ones (0-9) and tens (1-9) columns of levels 1-2.
_NO_CARRY_ONES = [(x, y) for x in range(10) for y in range(10) if x + y <= 9]
_NO_CARRY_TENS = [(x, y) for x in range(1, 10) for y in range(1, 10) if x + y <= 9]
_ASCII = {"+": "+", "−": "-", "×": "*", "÷": "/"}
_PREC = {"+": 1, "−": 1, "×": 2, "÷": 2}
_FRAC_GOLD = re.compile(r"(?P<sign>-?)(?:\\frac\{(?P<p>\d+)\}\{(?P<q>\d+)\}|(?P<int>\d+))")
ARITH_QUESTION = "Compute the value of the expression shown in the image."
FRACTION_QUESTION = "Compute the value of the fraction expression shown in the image. Simplify fully."


# ----- expression trees (our own values only) ---------------------------------------------
def expr_value(node) -> Fraction:
    """Exact value of an expression tree ``int | (op, left, right)``."""
    if isinstance(node, int):
        return Fraction(node)
    op, left, right = node
    a, b = expr_value(left), expr_value(right)
    return {"+": a + b, "−": a - b, "×": a * b, "÷": a / b if b else Fraction(10**9)}[op]


def _sympy_value(node) -> sympy.Expr:
    if isinstance(node, int):
        return sympy.Integer(node)
    op, left, right = node
    a, b = _sympy_value(left), _sympy_value(right)
    if op in "+−":
        return sympy.Add(a, b if op == "+" else -b)
    return sympy.Mul(a, b if op == "×" else sympy.Pow(b, -1))


def expr_tokens(node, parent_prec: int = 0, right_side: bool = False) -> list[str]:
    """The expression as display tokens, with parentheses only where precedence needs them."""
    if isinstance(node, int):
        return [str(node)]
    op, left, right = node
    prec = _PREC[op]
    tokens = [*expr_tokens(left, prec), op, *expr_tokens(right, prec, True)]
    if prec < parent_prec or (right_side and prec == parent_prec):
        tokens = ["(", *tokens, ")"]
    return tokens


def _steps(node) -> tuple[list[str], str]:
    """Evaluation steps (innermost first) in ASCII, and the node's value text."""
    if isinstance(node, int):
        return [], str(node)
    op, left, right = node
    s1, a = _steps(left)
    s2, b = _steps(right)
    v = expr_value(node)
    return [*s1, *s2, f"{a} {_ASCII[op]} {b} = {v}."], str(v)


def _flat_tree(nums: list[int], ops: list[str]):
    """Tree of ``n0 op0 n1 op1 n2`` under the usual precedence (× before + and −)."""
    if _PREC[ops[1]] > _PREC[ops[0]]:
        return (ops[0], nums[0], (ops[1], nums[1], nums[2]))
    return (ops[1], (ops[0], nums[0], nums[1]), nums[2])


def _arith_tree(rng: random.Random, level: int):
    if level <= 2:  # two-digit + two-digit without a carry: every column sum is one digit
        ones = rng.choice(_NO_CARRY_ONES)
        tens = rng.choice(_NO_CARRY_TENS)
        return ("+", 10 * tens[0] + ones[0], 10 * tens[1] + ones[1])
    if level == 3:
        op = rng.choice("+−×")
        if op == "×":
            return (op, rng.randint(2, 12), rng.randint(2, 12))
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return (op, max(a, b), min(a, b)) if op == "−" else (op, a, b)
    if level == 4:
        ops = [rng.choice("+−"), "×"]
        rng.shuffle(ops)
        return _flat_tree([rng.randint(2, 15), rng.randint(2, 12), rng.randint(2, 12)], ops)
    if rng.random() < 0.5:
        inner = (rng.choice("+−"), rng.randint(2, 20), rng.randint(2, 20))
        tree = ("×", inner, rng.randint(2, 9))
        return (rng.choice("+−"), tree, rng.randint(1, 30))
    d = rng.randint(2, 9)
    return ("−", ("×", rng.randint(2, 12), rng.randint(2, 12)), ("÷", d * rng.randint(1, 9), d))


def draw_arith(rng: random.Random, level: int):
    """An expression tree with a non-negative integer value."""
    while True:
        tree = _arith_tree(rng, level)
        value = expr_value(tree)
        if value >= 0 and value.denominator == 1:
            return tree


def arith_spec(tree, restate: bool = False) -> MathSpec:
    """The spec of expression ``tree`` (``restate``: the steps first restate the expression)."""
    steps, answer = _steps(tree)
    shown = " ".join(expr_tokens(tree)).replace("( ", "(").replace(" )", ")")
    for sym, ascii_sym in _ASCII.items():
        shown = shown.replace(sym, ascii_sym)
    steps = [f"The image shows {shown}."] + steps if restate else steps
    return MathSpec("arith", tree, ARITH_QUESTION, answer, tuple(steps), "number")


def column_spec(tree) -> MathSpec:
    """The spec of a carry-free two-digit sum ``("+", a, b)`` solved column by column (ones, then tens)."""
    _, a, b = tree
    ones, tens = a % 10 + b % 10, a // 10 + b // 10
    if ones > 9 or tens > 9:
        raise ValueError(f"{a} + {b} needs a carry; levels 1-2 draw carry-free sums")
    steps = (f"{a % 10}+{b % 10}={ones}.", f"{a // 10}+{b // 10}={tens}.")
    return MathSpec("arith", tree, ARITH_QUESTION, str(a + b), steps, "number")


def build_arith(tree, rng: random.Random, level: int) -> MathSpec:
    """Column steps for levels 1-2 (carry-free); step-by-step evaluation (restating the expression) from level 3."""
    return column_spec(tree) if level <= 2 else arith_spec(tree, restate=True)


def verify_arith(spec: MathSpec) -> None:
    """Re-evaluate the expression with sympy and compare to the gold."""
    value = _sympy_value(spec.content)  # sympy evaluates integer arithmetic exactly
    assert value.is_integer and value == sympy.Integer(spec.answer), (spec, value)


def _glue(tokens: list[str]) -> list[str]:
    """Attach parentheses to their neighbours so they take no extra gap: ``(17``, ``20)``."""
    out: list[str] = []
    for tok in tokens:
        if out and (out[-1].endswith("(") or tok == ")"):
            out[-1] += tok
        else:
            out.append(tok)
    return out


def render_column(spec: MathSpec, rng: random.Random, size: int, level: int) -> np.ndarray:
    """``a`` above ``+ b`` with digits in fixed columns and a rule below (level 2: jittered block)."""
    img, draw = new_canvas(size)
    _, a, b = spec.content
    pos, scale = layout_jitter(level)
    font = round(0.3 * size * (1 + jitter(rng, scale)))
    cx = min(max(size * (0.55 + jitter(rng, pos)), 1.75 * font), size - 0.85 * font)  # whole block inside
    top = min(size * (0.33 + jitter(rng, pos)), 0.95 * size - 1.8 * font)  # keep the rule inside
    rows = ((top, f"{a:2d}", " "), (top + 1.1 * font, f"{b:2d}", "+"))
    for cy, digits, sign in rows:
        for text, x in ((sign, cx - 1.3 * font), (digits[0], cx - 0.4 * font), (digits[1], cx + 0.4 * font)):
            if text.strip():
                draw_label(draw, text, x, cy, font)
    rule_y = round(top + 1.75 * font)
    draw.line([(round(cx - 1.7 * font), rule_y), (round(cx + 0.8 * font), rule_y)], fill=INK, width=max(1, font // 12))
    return to_array(img)


def render_arith(spec: MathSpec, rng: random.Random, size: int, level: int) -> np.ndarray:
    """Column addition for levels 1-2, else one jittered, fitted line ``expr = ?``."""
    if level <= 2:
        return render_column(spec, rng, size, level)
    img, draw = new_canvas(size)
    items = [*expr_tokens(spec.content), "=", "?"]
    pos, scale = layout_jitter(level)
    font = round(0.25 * size * (1 + jitter(rng, scale)))
    lines = [items] if level <= 3 else [_glue(items[:-2]), items[-2:]]  # "= ?" on its own line
    font = min(fit_size(line, font, 0.92 * size, 0.25) for line in lines)
    cx, base = size * (0.5 + jitter(rng, pos)), size * (0.6 + jitter(rng, pos))
    base -= (len(lines) - 1) * 0.7 * font
    for i, line in enumerate(lines):
        draw_line_of_items(draw, line, cx, base + 1.4 * font * i, font, round(0.25 * font), canvas=size)
    return to_array(img)


# ----- fractions -----------------------------------------------------------------------------
def draw_fraction(rng: random.Random, level: int) -> tuple:
    """``(op, a, b, c, d)`` for ``a/b op c/d`` with a non-negative value."""
    if level <= 3:
        b = rng.randint(3, 9)
        a, c = rng.randint(1, b - 1), rng.randint(1, b - 1)
        op = rng.choice("+−")
        return (op, max(a, c), b, min(a, c), b) if op == "−" else (op, a, b, c, b)
    b, d = rng.sample(range(2, 10), 2)
    a, c = rng.randint(1, 9), rng.randint(1, 9)
    op = rng.choice("+−") if level == 4 else rng.choice("×÷")
    if op == "−" and Fraction(a, b) < Fraction(c, d):
        a, b, c, d = c, d, a, b
    return (op, a, b, c, d)


def _fraction_value(op: str, a: int, b: int, c: int, d: int) -> Fraction:
    return {
        "+": Fraction(a, b) + Fraction(c, d),
        "−": Fraction(a, b) - Fraction(c, d),
        "×": Fraction(a, b) * Fraction(c, d),
        "÷": Fraction(a, b) / Fraction(c, d),
    }[op]


def fraction_spec(content: tuple, rng: random.Random | None = None) -> MathSpec:
    """The spec of ``(op, a, b, c, d)``: reduced gold, typical-mistake distractors (``rng`` orders them)."""
    op, a, b, c, d = content
    value = _fraction_value(*content)
    gold = frac_latex(value)
    sym = _ASCII[op]
    if op in "+−":
        num = a * d + c * b if op == "+" else a * d - c * b
        raw = (a + c if op == "+" else a - c, b) if b == d else (num, b * d)
        work = f"{a}/{b} {sym} {c}/{d} = {raw[0]}/{raw[1]}"
    elif op == "×":
        raw = (a * c, b * d)
        work = f"{a}/{b} * {c}/{d} = {raw[0]}/{raw[1]}"
    else:
        raw = (a * d, b * c)
        work = f"{a}/{b} divided by {c}/{d} = {a}/{b} * {d}/{c} = {raw[0]}/{raw[1]}"
    simplified = "" if value.denominator == raw[1] else f" = {value}"
    steps = (f"{work}{simplified}.",)
    wrong = [Fraction(a + c, b + d) if op == "+" else Fraction(abs(a - c), abs(b - d) or 1),
             Fraction(a * c, b * d), Fraction(a * d, b * c), value + Fraction(1, value.denominator),
             1 / value if value else Fraction(2), value * 2]
    fallback = [frac_latex(value + Fraction(k, value.denominator + 1)) for k in range(1, 6)]
    distractors = pick_distractors(rng or random.Random(0), gold, [frac_latex(w) for w in wrong if w > 0], fallback)
    return MathSpec("fraction", content, FRACTION_QUESTION, gold, steps, "math", distractors)


def verify_fraction(spec: MathSpec) -> None:
    """Recompute with sympy Rationals and compare to the gold."""
    op, a, b, c, d = spec.content
    value = _sympy_value((op, ("÷", a, b), ("÷", c, d)))
    match = _FRAC_GOLD.fullmatch(spec.answer)
    assert match is not None, f"gold {spec.answer!r} is not a reduced fraction or integer"
    sign = -1 if match["sign"] else 1
    expected = sympy.Rational(sign * int(match["p"] or match["int"]), int(match["q"] or 1))
    assert value == expected and (match["int"] or sympy.gcd(int(match["p"]), int(match["q"])) == 1), (spec, value)


def render_fraction(spec: MathSpec, rng: random.Random, size: int, level: int) -> np.ndarray:
    """Stacked fractions on one jittered line: ``a/b + c/d = ?``."""
    img, draw = new_canvas(size)
    op, a, b, c, d = spec.content
    items = [Frac((a, b)), op, Frac((c, d)), "=", "?"]
    pos, scale = layout_jitter(level)
    font = round(0.2 * size * (1 + jitter(rng, scale)))
    font = fit_size(items, font, 0.92 * size, 0.3)
    cx, base = size * (0.5 + jitter(rng, pos)), size * (0.58 + jitter(rng, pos))
    draw_line_of_items(draw, items, cx, base, font, round(0.3 * font), canvas=size)
    return to_array(img)


ARITH = Family("arith", draw_arith, build_arith, render_arith, verify_arith)
FRACTION = Family("fraction", draw_fraction, lambda c, rng, level: fraction_spec(c, rng), render_fraction,
                  verify_fraction, multiple_choice=True)
