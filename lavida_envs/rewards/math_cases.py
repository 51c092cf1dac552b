"""Labelled answer pairs for the math reward: ``CASES = [(pred, gold, expected_equal), ...]``.

Written by hand (plus small generated families whose labels follow from exact
arithmetic), covering integers and chart values, decimals and fractions, surds, pi
expressions, degrees, choice letters, intervals, percentages (rule in
``math_normalize``), sets and tuples, algebraic expressions and near misses. Used by
``tests/test_math_reward.py`` and ``lavida bench rewards``.
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["CASES"]

Case = tuple[str, str, bool]

_HAND: list[Case] = [
    # integers, chart readings, formatting
    ("42", "42", True), ("-7", "-7", True), ("+5", "5", True), ("007", "7", True), ("-0", "0", True),
    ("1,000", "1000", True), ("1{,}000", "1000", True), ("1,234,567", "1234567", True),
    ("1234567.0", "1234567", True), ("12.0", "12", True), ("x = 3", "3", True), ("x=3", "3", True),
    ("n = 12", "12", True), (r"\boxed{5}", "5", True), ("$5$", "5", True), (r"\(8\)", "8", True),
    ("The answer is 6", "6", True), ("6.", "6", True), ("5 cm", "5", True), (r"5 \text{ cm}", "5", True),
    (r"6 \text{ apples}", "6", True), (r"\$5", "5", True), ("43", "42", False), ("-3", "3", False),
    ("12,34", "1234", False), ("100", "1000", False), ("x = 4", "3", False), ("", "3", False),
    ("1e3", "1000", True), ("2.5e2", "250", True), ("1e-3", "0.001", True),
    (r"1.5\times10^{3}", "1500", True), (r"3 \times 10^{2}", "300", True), (r"2\times 10^3", "200", False),
    # decimals and fractions
    (r"\frac{1}{2}", "0.5", True), ("0.5", r"\frac{1}{2}", True), ("1/2", "0.5", True), (r"\frac12", "0.5", True),
    (r"\dfrac{1}{2}", "1/2", True), (r"\tfrac{3}{4}", "0.75", True), ("2/4", "1/2", True), (".5", "0.5", True),
    (r"-\frac{3}{4}", "-0.75", True), (r"\frac{-3}{4}", r"-\frac{3}{4}", True), ("0.333333", r"\frac{1}{3}", True),
    (r"\frac{1}{3}", "0.333333", True), ("0.33", r"\frac{1}{3}", False), ("0.3333", r"\frac{1}{3}", False),
    ("0.51", "0.5", False), ("0.6", r"\frac{1}{2}", False), (r"\frac{1}{2}", r"\frac{1}{3}", False),
    (r"\frac{3}{4}", "0.7", False), ("1.5", r"\frac{3}{2}", True), (r"\frac{7}{2}", "3.5", True),
    (r"\frac{22}{7}", r"\pi", False), ("-0.75", "0.75", False), (r"\frac{x}{2}", "0.5x", True),
    # surds
    (r"2\sqrt{2}", r"\sqrt{8}", True), (r"\sqrt{8}", r"2\sqrt{2}", True), (r"3\sqrt{3}", r"\sqrt{27}", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True), (r"\sqrt{12}", r"2\sqrt{3}", True),
    (r"\sqrt{50}", r"5\sqrt{2}", True), ("√2", r"\sqrt{2}", True), ("sqrt(8)", r"2\sqrt{2}", True),
    ("1.414214", r"\sqrt{2}", True), (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    (r"2\sqrt{3}", r"\sqrt{8}", False), (r"\sqrt{3}", r"\sqrt{2}", False), ("1.41", r"\sqrt{2}", False),
    (r"3\sqrt{2}", r"\sqrt{8}", False), (r"\sqrt{2}+1", r"1+\sqrt{2}", True), (r"\sqrt{2}-1", r"1-\sqrt{2}", False),
    # pi expressions
    (r"\frac{\pi}{2}", r"0.5\pi", True), (r"\pi/2", r"\frac{\pi}{2}", True), (r"\frac{2\pi}{3}", r"\frac{4\pi}{6}", True),
    ("4π", r"4\pi", True), ("3.141593", r"\pi", True), ("37.699112", r"12\pi", True), (r"2\pi", r"\pi", False),
    (r"\frac{\pi}{3}", r"\frac{\pi}{2}", False), ("3.14", r"\pi", False), (r"\frac{3\pi}{4}", r"\frac{\pi}{4}", False),
    (r"\pi r^2", r"r^2\pi", True), (r"2\pi r", r"\pi r", False),
    # degrees
    (r"30^\circ", "30", True), ("30°", "30", True), ("30", r"30^\circ", True), (r"45^{\circ}", "45", True),
    (r"120", r"120^{\circ}", True), (r"60^\circ", r"30^\circ", False), (r"30^\circ", r"\frac{\pi}{6}", True),
    (r"\frac{\pi}{4}", r"45^\circ", True), ("90°", r"\frac{\pi}{3}", False), ("35°", "30", False),
    # choice letters
    ("A", "A", True), ("(A)", "A", True), ("A.", "A", True), (r"\text{A}", "A", True), (r"\textbf{B}", "B", True),
    ("A: 5", "A", True), ("Option B", "B", True), ("(b)", "B", True), ("(C) 12", "C", True), ("D)", "D", True),
    ("The answer is (B)", "B", True), ("B", "A", False), ("(C)", "D", False), (r"\text{B}", "A", False),
    ("A: 5", "B", False),
    # intervals
    ("(1, 2]", "(1,2]", True), ("[1,2]", "(1,2]", False), ("[1,2]", "(1,2)", False), ("[1,3]", "[1,2]", False),
    (r"(-\infty, 3)", r"(-\infty,3)", True), (r"[0, \infty)", r"[0,\infty)", True), (r"(0, \infty)", r"[0,\infty)", False),
    (r"(1,2)\cup(3,4)", r"(1,2) \cup (3,4)", True), (r"x \in [1,2]", "[1,2]", True), ("(1,2)", "(1,2)", True),
    # percentages (see math_normalize: a percent on one side matches p or p/100)
    (r"50\%", "0.5", True), ("50", r"50\%", True), ("0.5", r"50\%", True), (r"50\%", r"50\%", True),
    ("50%", r"50\%", True), (r"50\%", "50", True), ("12.5", r"12.5\%", True), ("0.125", r"12.5\%", True),
    ("40", r"50\%", False), ("0.4", r"50\%", False), (r"5\%", "0.5", False), (r"51\%", "0.5", False),
    (r"\frac{100}{3}\%", r"\frac{1}{3}", True), (r"25\%", r"\frac{1}{4}", True), (r"20\%", r"\frac{1}{4}", False),
    # sets and tuples
    (r"\{1,2\}", r"\{2,1\}", True), (r"\{1,2,3\}", r"\{1,2\}", False), ("(3,4)", "(3, 4)", True),
    ("(3,5)", "(3,4)", False), (r"\{-1, 1\}", r"\{1,-1\}", True), (r"\{0\}", r"\{1\}", False),
    ("a=2, b=3", "b=3, a=2", True), ("2:3", "2:3", True), (r"\frac{2}{3}", "2:3", True), ("2", "2:3", False),
    # algebraic expressions
    ("x^2+1", "1+x^2", True), ("2x", "x+x", True), ("(x+1)^2", "x^2+2x+1", True), ("x^2-1", "(x-1)(x+1)", True),
    ("y=2x+1", "y=1+2x", True), ("x^2", "x^3", False), ("2x+1", "2x-1", False), ("1+2i", "2i+1", True),
    ("1+2i", "1-2i", False), (r"\infty", r"\infty", True), (r"-\infty", r"\infty", False),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    # word answers
    ("red", "Red", True), ("right triangle", "Right Triangle", True), ("yes", "no", False), ("blue", "red", False),
]


def _generated() -> list[Case]:
    """Families whose labels follow from exact arithmetic."""
    cases: list[Case] = []
    for a, b in [(12, 7), (23, 19), (125, 8), (999, 3), (48, 25), (250, 40)]:
        product = a * b
        cases += [(str(product), str(product), True), (f"{product}.0", str(product), True),
                  (str(product + 1), str(product), False), (f"{product:,}", str(product), True)]
    for p, q in [(1, 4), (3, 8), (5, 2), (7, 20), (2, 3), (5, 6), (11, 12), (9, 16)]:
        value = Fraction(p, q)
        gold = rf"\frac{{{p}}}{{{q}}}"
        cases += [(f"{p}/{q}", gold, True), (rf"\frac{{{2 * p}}}{{{2 * q}}}", gold, True),
                  (rf"\frac{{{p + 1}}}{{{q}}}", gold, False)]
        if (value * 10**6).denominator == 1:
            cases.append((f"{float(value):g}", gold, True))
        else:
            cases.append((f"{float(value):.2f}", gold, False))  # two decimals is not 1/3
    for k, m in [(2, 3), (3, 5), (4, 2), (5, 7), (6, 3)]:
        gold = rf"{k}\sqrt{{{m}}}"
        cases += [(rf"\sqrt{{{k * k * m}}}", gold, True), (rf"{k + 1}\sqrt{{{m}}}", gold, False),
                  (rf"\sqrt{{{k * m}}}", gold, False)]
    for p, q in [(1, 4), (3, 2), (5, 6), (7, 4)]:
        gold = rf"\frac{{{p}\pi}}{{{q}}}"
        cases += [(rf"\frac{{{p}}}{{{q}}}\pi", gold, True), (rf"\frac{{{p + 1}\pi}}{{{q}}}", gold, False),
                  (rf"{round(float(Fraction(p, q)) * 3.141592653589793, 6)}", gold, True)]
    for d in [15, 45, 72, 135, 150]:
        cases += [(rf"{d}^\circ", str(d), True), (f"{d}°", str(d), True), (str(d + 5), rf"{d}^\circ", False)]
    for pct in [5, 20, 75]:
        cases += [(rf"{pct}\%", str(pct / 100), True), (str(pct / 100), rf"{pct}\%", True),
                  (str(pct + 1), rf"{pct}\%", False)]
    for letter, wrong in [("A", "C"), ("B", "D"), ("C", "A"), ("D", "B")]:
        cases += [(f"({letter})", letter, True), (rf"\text{{{letter}}}", letter, True), (f"({wrong})", letter, False)]
    return cases


CASES: list[Case] = _HAND + _generated()
