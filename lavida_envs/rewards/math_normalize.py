"""Cheap, pure-string answer handling for the math reward (no sympy, nothing executed).

Contract:

* :func:`screen` is the gate in front of every parser: it returns ``(status, reason)``
  with status ``"too_long"`` (over :data:`MAX_ANSWER_CHARS`), ``"rejected"`` (characters
  outside :data:`ALLOWED_CHARS`, code-like tokens such as ``__`` or ``import``, bracket
  nesting deeper than :data:`MAX_NESTING`, power towers, numbers with too many digits)
  or ``("ok", None)``.
* :func:`clean` turns an answer into canonical LaTeX-ish text (strips ``$``/``\\(``
  delimiters and a whole-answer ``\\boxed{}``, maps unicode math to LaTeX, removes a
  trailing period).
* :func:`parse_number` reads plain numbers exactly (``Fraction``) with a strict regex:
  integers (``1,000`` and ``1{,}000`` thousands groups), decimals, scientific notation,
  ``a/b`` and ``\\frac{a}{b}``, an optional ``%``/``\\%`` suffix and an optional degree
  mark (``^\\circ``, ``°``), which is dropped.
* :func:`numbers_equal` decides two such numbers. Rule (same as math-verify's): exact
  equality, or, when either side is written as a decimal, equality after rounding both
  to 6 decimal places. **Percent rule**: if both or neither side carries ``%`` the
  values are compared; if exactly one does, ``p%`` matches ``q`` when ``p == q`` (the
  unit was written on one side only) or ``p / 100 == q``. So gold ``50\\%`` accepts
  ``50``, ``50\\%`` and ``0.5``; gold ``0.5`` accepts ``50\\%``; gold ``50`` accepts ``50\\%``.
* Answer-form rules (issue 17 item 20; each decided on its merits, all by regex and
  ``Fraction``, nothing evaluated):

  - **mixed numbers**: a whole number followed by a proper fraction, ``4 4/9``,
    ``4\\frac{4}{9}`` or ``-2 1/2``, is ``whole + fraction`` (sign on the whole), the
    school reading; math-verify already reads ``4\\frac{4}{9}`` so. ``2 \\cdot \\frac12``
    stays a product, and ``2 3/2`` (improper) is not a mixed number.
  - **percent words**: ``percent``, ``per cent``, ``pct`` (also inside ``\\text{}``) are
    the ``%`` sign, under the percent rule above.
  - **trailing unit words**: a plain number followed by unit words (``10 weeks``,
    ``10 \\text{ apples}``, ``10 cm^2``) is that number: the question fixes the unit, so
    the unit is not compared. A unit word is a known unit (``cm``, ``m``, ``kg``, ``ft``
    ..., with ``^2``/``^3`` only on length units) or a word of three or more letters that
    is not a math word (``sin``, ``pi``, ...), a scale word (``thousand``, ``dozen``,
    ``half``, ``tenths`` ...) or a connective (``and``, ``or``, ``times`` ...). So
    ``10 x``, ``10 x^2``, ``10 thousand`` and ``3 and 4`` are *not* the number.
    ``degrees``/``deg`` are a degree mark.
  - **assignments**: ``x = 2`` vs ``2`` (either side) compares the right-hand side: numbers
    here (:func:`strip_assignment`, one variable on the left), anything else
    (``AB = 5``, ``x = \\frac{\\pi}{2}``) in math-verify, which does the same; ``x = 2 or
    x = 3`` is not ``2``, and ``x = 3`` vs ``y = 3`` is left to math-verify (not equal).
  - **clock times** (:func:`parse_clock`): ``H:MM`` (optionally ``:SS``) with an optional
    ``am``/``pm`` (``p.m.``, ``PM``); with a meridiem on a side, or an hour of 0 or 13-23,
    times compare on the 24-hour clock, otherwise on the 12-hour clock (``3:30`` matches
    ``3:30 pm`` and ``15:30``). Two bare ``H:MM`` strings that differ as times are left
    to the rest of the cascade (they may be ratios).
  - **modular answers** (:func:`split_modulus`): ``a \\bmod m = r``, ``x \\equiv r
    \\pmod{m}`` and ``r \\pmod{m}`` are the residue ``r``; when both sides name a modulus
    the moduli must be equal.
  - **a stray trailing backslash** (``5\\``, ``\\frac12\\\\``) is dropped by :func:`clean`.
* :func:`choice_letter` recognises a multiple-choice letter in the usual forms
  (``A``, ``(A)``, ``A.``, ``A: text``, ``(A) text``, ``\\text{A}``, ``Option A``).
* :func:`candidate_pairs` gives the (pred, gold) LaTeX pairs the symbolic checker tries
  (any equal one counts): the pair itself plus percent and degree-to-radian variants.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "ALLOWED_CHARS",
    "MAX_ANSWER_CHARS",
    "MAX_NESTING",
    "Number",
    "candidate_pairs",
    "choice_letter",
    "clean",
    "clocks_equal",
    "is_text_answer",
    "numbers_equal",
    "parse_clock",
    "parse_number",
    "screen",
    "split_modulus",
    "strip_unit",
    "strip_assignment",
    "text_key",
]

#: Answers longer than this are not parsed (status "too_long").
MAX_ANSWER_CHARS = 1000
#: Deepest allowed nesting of (), [] and {} in an answer.
MAX_NESTING = 20
#: Largest number of digits a literal power ``a^{b}`` may have.
MAX_POWER_DIGITS = 10_000
#: Characters an answer may contain: printable ASCII without the backtick, plus common math symbols.
_UNICODE_MATH = "°√π×÷−–≤≥≠∞²³½¼¾·∠△⊥∥…∪∩∈∉⊂⊆∅±∓→≈′″αβγδθλμσφω"
ALLOWED_CHARS = frozenset(
    "".join(chr(c) for c in range(32, 127) if chr(c) != "`") + "\n\t" + _UNICODE_MATH
)
_FORBIDDEN = re.compile(
    r"__|\bimport\b|\blambda\b|\beval\b|\bexec\b|\bcompile\b|\bgetattr\b|\bsetattr\b|\bglobals\b"
    r"|\blocals\b|\bbuiltins\b|\bsubprocess\b|\bos\.|\bsys\.|\bsystem\s*\(|\bopen\s*\("
    r"|\\(?:input|include|write|immediate|def|edef|gdef|newcommand|renewcommand|catcode|csname)\b",
    re.IGNORECASE,
)
_POWER = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*\{?\s*(\d+)\s*(?:\^\s*\{?\s*(\d+))?")


def _nesting(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth = max(0, depth - 1)
    return deepest


def _power_tower_depth(text: str) -> int:
    """How many ``^`` are nested inside one another (``a^{b^{c}}`` -> 2)."""
    deepest, stack = 0, [0]  # stack: exponent depth of each open brace level
    pending = False  # a ^ was just seen: the next group/atom is an exponent
    level = 0
    for ch in text:
        if ch == "^":
            pending = True
            level = stack[-1] + 1
            deepest = max(deepest, level)
        elif ch == "{":
            stack.append(level if pending else stack[-1])
            pending = False
        elif ch == "}":
            if len(stack) > 1:
                stack.pop()
        elif not ch.isspace():
            pending = False
            level = stack[-1]
    return deepest


def screen(answer: str) -> tuple[str, str | None]:
    """``("ok", None)`` when ``answer`` may be parsed, else ``(status, reason)``."""
    if not isinstance(answer, str):
        return "rejected", f"answer must be a str, got {type(answer).__name__}"
    if len(answer) > MAX_ANSWER_CHARS:
        return "too_long", f"answer has {len(answer)} chars > cap {MAX_ANSWER_CHARS}"
    bad = sorted({ch for ch in answer if ch not in ALLOWED_CHARS})
    if bad:
        shown = ", ".join(ascii(ch) for ch in bad[:5])
        return "rejected", f"answer contains disallowed characters: {shown}"
    found = _FORBIDDEN.search(answer)
    if found:
        return "rejected", f"answer contains a code-like token {found.group()!r}"
    if _nesting(answer) > MAX_NESTING:
        return "rejected", f"answer nests brackets deeper than {MAX_NESTING}"
    if _power_tower_depth(answer) > 2:
        return "rejected", "answer has a power tower nested more than 2 deep"
    for match in _POWER.finditer(answer):
        base, exp, exp2 = float(match.group(1)), int(match.group(2)[:12]), match.group(3)
        exponent = exp ** min(int(exp2[:6]), 64) if exp2 and exp > 1 else exp
        if base > 1 and exponent * math.log10(base) > MAX_POWER_DIGITS:
            return "rejected", f"number {match.group().strip()!r} has over {MAX_POWER_DIGITS} digits"
    return "ok", None


_UNICODE_TO_LATEX = {
    "π": r"\pi ", "×": r"\times ", "÷": r"\div ", "−": "-", "–": "-", "≤": r"\le ", "≥": r"\ge ",
    "≠": r"\ne ", "∞": r"\infty ", "²": "^2", "³": "^3", "½": r"\frac{1}{2}", "¼": r"\frac{1}{4}",
    "¾": r"\frac{3}{4}", "·": r"\cdot ", "°": r"^\circ ", "∠": r"\angle ", "…": r"\ldots ",
    "∪": r"\cup ", "∩": r"\cap ", "∈": r"\in ", "∉": r"\notin ", "⊂": r"\subset ",
    "⊆": r"\subseteq ", "∅": r"\emptyset ", "±": r"\pm ", "∓": r"\mp ", "→": r"\to ",
    "≈": r"\approx ", "′": "'", "″": "''", "α": r"\alpha ", "β": r"\beta ", "γ": r"\gamma ",
    "δ": r"\delta ", "θ": r"\theta ", "λ": r"\lambda ", "μ": r"\mu ", "σ": r"\sigma ",
    "φ": r"\phi ", "ω": r"\omega ", "△": r"\triangle ", "⊥": r"\perp ", "∥": r"\parallel ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE_TO_LATEX)))
_SQRT_UNICODE = re.compile(r"√\s*(?:\(([^()]*)\)|(\d+(?:\.\d+)?|[A-Za-z]))")
_SQRT_WORD = re.compile(r"(?<![\\A-Za-z])sqrt\s*\(([^()]*)\)")
_PI_WORD = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")
_WRAPPERS = (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]"))
_WHOLE_BOX = re.compile(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", re.DOTALL)
_SPACES = re.compile(r"\s+")
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is\b\s*:?|\s*:)\s*(?=\S)", re.IGNORECASE)
_LATEX_SPACE = re.compile(r"\\[,;:! ]|\\q?quad\b")
_TRAILING_BACKSLASH = re.compile(r"(?<=\S)\s*\\+\s*$")


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if depth < 0:
            return False
    return depth == 0


def clean(answer: str) -> str:
    """Canonical LaTeX-ish text for an answer (delimiters, unicode, whole \\boxed{} removed)."""
    text = _SPACES.sub(" ", answer).strip()
    for _ in range(3):
        before = text
        for left, right in _WRAPPERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left) : len(text) - len(right)].strip()
        box = _WHOLE_BOX.match(text)
        if box and _balanced(box.group(1)):
            text = box.group(1).strip()
        if text == before:
            break
    text = text.replace(r"\$", "").replace("$", "")
    text = _ANSWER_PREFIX.sub("", text)
    text = _SQRT_UNICODE.sub(lambda m: r"\sqrt{%s}" % (m.group(1) or m.group(2)), text)
    text = text.replace("√", r"\sqrt")
    text = _UNICODE_RE.sub(lambda m: _UNICODE_TO_LATEX[m.group()], text)
    text = _SQRT_WORD.sub(r"\\sqrt{\1}", text)
    text = _PI_WORD.sub(r"\\pi ", text)
    text = text.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    text = _SPACES.sub(" ", text).strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    text = _TRAILING_BACKSLASH.sub("", text)
    return text


_ASSIGN = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*(?!=)(.+)$")


def strip_assignment(text: str) -> str:
    """``x = 3`` -> ``3`` (a single-variable assignment on the left), else unchanged."""
    match = _ASSIGN.match(text)
    if match and "=" not in match.group(1):
        return match.group(1).strip()
    return text


@dataclass(frozen=True)
class Number:
    """A plain number read exactly: value, written as a decimal?, with a percent sign?"""

    value: Fraction
    decimal: bool
    percent: bool


_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_UNSIGNED = rf"(?:{_INT}(?:\.\d*)?|\.\d+)"
_NUM_RE = re.compile(
    rf"^(?P<sign>[-+]?)\s*(?:"
    rf"(?P<mant>{_UNSIGNED})(?:\s*(?:[eE](?P<exp>[-+]?\d{{1,3}})|(?:\\times|\\cdot|x|\*)\s*10\s*\^\s*"
    rf"(?:\{{\s*(?P<exp2>[-+]?\d{{1,3}})\s*\}}|(?P<exp3>\d))))?"
    rf"|(?P<num>{_INT})\s*/\s*(?P<den>{_INT})"
    rf"|\\frac\s*(?:\{{\s*(?P<fsign>[-+]?)\s*(?P<fnum>{_INT})\s*\}}\s*\{{\s*(?P<fden>{_INT})\s*\}}"
    rf"|(?P<snum>\d)(?P<sden>\d))"
    rf")$"
)
_PERCENT = re.compile(
    r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\\percent"
    r"|(?<![A-Za-z])(?:percent|per\s*cent|pct)\.?|\\(?:text|mathrm|mbox)\s*\{\s*(?:percent|per\s*cent|pct)\s*\})$",
    re.IGNORECASE,
)
_DEGREE = re.compile(
    r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|\^\s*\{\s*o\s*\}"
    r"|(?<![A-Za-z])(?:degrees?|deg)\.?|\\(?:text|mathrm|mbox)\s*\{\s*(?:degrees?|deg)\s*\})\s*$",
    re.IGNORECASE,
)
_THOUSANDS = re.compile(r"\{,\}|\\,|\\!|\\ ")


def _split_suffix(text: str, pattern: re.Pattern[str]) -> tuple[str, bool]:
    match = pattern.search(text)
    return (text[: match.start()], True) if match else (text, False)


#: Short unit words accepted after a number (longer words are accepted unless excluded below).
KNOWN_UNITS = frozenset(
    "m cm mm km nm um in ft yd mi g kg mg lb lbs oz t s ms h hr hrs min mins sec secs l ml mL L "
    "cc K N J W V kW kWh Hz mph kph km/h m/s cm/s ft/s km/hr".split()
)
_LENGTH_UNITS = frozenset("m cm mm km nm in ft yd mi units unit meters metres feet inches".split())
#: Words after a number that change its value or are not units (so ``10 thousand`` is not 10).
_NOT_UNITS = frozenset(
    "and or not to of the is are was be times plus minus over by per with from than into "
    "hundred hundreds thousand thousands million millions billion billions trillion dozen dozens "
    "score half halves third thirds quarter quarters fourth fourths fifth fifths sixth sixths "
    "seventh sevenths eighth eighths ninth ninths tenth tenths hundredth hundredths thousandth "
    "thousandths squared cubed factorial percent pct degree degrees deg radian radians".split()
)
_UNIT_TAIL = re.compile(
    r"^(?P<core>.*?[\d}.])\s*(?:\\[,;:! ]\s*)*(?:\\(?:text|mbox|mathrm|textrm)\s*\{\s*(?P<wrapped>[A-Za-z][A-Za-z/ ]*?)\s*\}"
    r"|(?P<bare>[A-Za-z][A-Za-z/]*(?:\s+[A-Za-z][A-Za-z/]*){0,2}))"
    r"\s*(?P<exp>\^\s*\{?\s*[23]\s*\}?)?\s*$"
)


def _unit_word(word: str) -> bool:
    if word in KNOWN_UNITS:
        return True
    return len(word) >= 3 and word.isalpha() and word.lower() not in _NOT_UNITS and word.lower() not in _MATH_WORDS


def strip_unit(text: str) -> tuple[str, str | None]:
    """``("10", "weeks")`` for ``10 weeks`` (unit rule in the module docstring), else ``(text, None)``."""
    match = _UNIT_TAIL.match(text)
    if match is None:
        return text, None
    unit = (match.group("wrapped") or match.group("bare") or "").strip()
    words = unit.split()
    if not words or not all(_unit_word(w) for w in words):
        return text, None
    if match.group("exp") and not (len(words) == 1 and words[0] in _LENGTH_UNITS):
        return text, None
    return match.group("core").strip(), unit + (match.group("exp") or "").replace(" ", "")


_MIXED = re.compile(
    r"^(?P<sign>[-+]?)\s*(?P<whole>\d+)(?:\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)"
    r"|\s*\\frac\s*(?:\{\s*(?P<fnum>\d+)\s*\}\s*\{\s*(?P<fden>\d+)\s*\}|(?P<snum>\d)(?P<sden>\d)))$"
)


def _mixed_number(text: str) -> Fraction | None:
    """``4 4/9`` / ``4\\frac{4}{9}`` -> 40/9 (a whole number and a proper fraction), else None."""
    match = _MIXED.match(text)
    if match is None:
        return None
    num = int(match.group("num") or match.group("fnum") or match.group("snum"))
    den = int(match.group("den") or match.group("fden") or match.group("sden"))
    if not 0 < num < den:
        return None
    value = int(match.group("whole")) + Fraction(num, den)
    return -value if match.group("sign") == "-" else value


def parse_number(text: str) -> Number | None:
    """An exact plain number (see module docstring), or None when ``text`` is anything else."""
    text = strip_unit(strip_assignment(text).strip())[0]
    text = _THOUSANDS.sub(lambda m: "," if m.group() == "{,}" else "", text).strip()
    text, _ = _split_suffix(text, _DEGREE)
    text, percent = _split_suffix(text, _PERCENT)
    text, _ = _split_suffix(text, _DEGREE)  # 50^\circ\% is nonsense but 5\%^\circ is not
    text = text.strip()
    if text.startswith("{") and text.endswith("}") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    match = _NUM_RE.match(text)
    if match is None:
        mixed = _mixed_number(text)
        return None if mixed is None else Number(mixed, False, percent)
    sign = -1 if match.group("sign") == "-" else 1
    if match.group("mant") is not None:
        mant = match.group("mant").replace(",", "")
        exp = match.group("exp") or match.group("exp2") or match.group("exp3")
        value = Fraction(mant) * (Fraction(10) ** int(exp) if exp else 1)
        decimal = "." in mant
    elif match.group("num") is not None:
        num, den = (int(match.group(k).replace(",", "")) for k in ("num", "den"))
        if den == 0:
            return None
        value, decimal = Fraction(num, den), False
    else:
        num_text = match.group("fnum") or match.group("snum")
        den_text = match.group("fden") or match.group("sden")
        num, den = int(num_text.replace(",", "")), int(den_text.replace(",", ""))
        if den == 0:
            return None
        value, decimal = Fraction(num, den), False
        if match.group("fsign") == "-":
            value = -value
    return Number(sign * value, decimal, percent)


def _close(a: Fraction, b: Fraction, decimal: bool) -> bool:
    return a == b or (decimal and round(a, 6) == round(b, 6))


def numbers_equal(pred: Number, gold: Number) -> bool:
    """Exact (or 6-decimal when either is a decimal) equality with the percent rule."""
    decimal = pred.decimal or gold.decimal
    if pred.percent == gold.percent:
        return _close(pred.value, gold.value, decimal)
    pct, other = (pred, gold) if pred.percent else (gold, pred)
    return _close(pct.value, other.value, decimal) or _close(pct.value / 100, other.value, decimal)


_CLOCK = re.compile(
    r"^(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\s*"
    r"(?:\\(?:text|mathrm|mbox)\s*\{\s*(?P<wm>[ap]\.?\s*m\.?)\s*\}|(?P<mer>[ap]\.?\s*m\.?))?$",
    re.IGNORECASE,
)


def parse_clock(text: str) -> tuple[int, bool] | None:
    """``(seconds since midnight, unambiguous?)`` for a clock time such as ``3:30 pm``, else None.

    Unambiguous: a meridiem is given, or the hour is 0 or 13-23 (24-hour clock).
    """
    match = _CLOCK.match(text.strip())
    if match is None:
        return None
    hour, minute, second = int(match.group("h")), int(match.group("m")), int(match.group("s") or 0)
    meridiem = (match.group("wm") or match.group("mer") or "").lower().replace(".", "").replace(" ", "")
    if minute > 59 or second > 59 or hour > 23 or (meridiem and not 1 <= hour <= 12):
        return None
    if meridiem:
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    return (hour * 60 + minute) * 60 + second, bool(meridiem) or hour == 0 or hour >= 13


def clocks_equal(pred: str, gold: str) -> bool | None:
    """Clock-time rule (module docstring): True/False when both are times, None when not decided."""
    a, b = parse_clock(pred), parse_clock(gold)
    if a is None or b is None:
        return None
    half_day = 12 * 3600
    same = a[0] == b[0] if (a[1] and b[1]) else a[0] % half_day == b[0] % half_day
    if same or a[1] or b[1] or pred.count(":") != gold.count(":"):
        return same if (same or a[1] or b[1]) else None
    return None  # two bare H:MM that differ as times: maybe ratios, leave them to the cascade


_MOD_COMPUTED = re.compile(r"^(?P<expr>[^=]+?)\s*\\(?:bmod|mod)\b\s*(?P<m>[^=]+?)\s*=\s*(?P<r>[^=]+)$")
_MOD_CONGRUENT = re.compile(
    r"^(?:(?P<lhs>[^=]+?)\s*(?:\\equiv|\\cong|=)\s*)?(?P<r>[^=]+?)\s*"
    r"(?:\\pmod\s*\{\s*(?P<m1>[^{}]+?)\s*\}|\\pmod\s*(?P<m2>\w+)|\(\s*\\?mod\s*(?P<m3>[^()]+?)\s*\)"
    r"|\\(?:bmod|mod)\s*\{?\s*(?P<m4>[^{}=]+?)\s*\}?)$"
)


def split_modulus(text: str) -> tuple[str, str | None]:
    """``("3", "7")`` for ``17 \\bmod 7 = 3``, ``x \\equiv 3 \\pmod{7}`` or ``3 \\pmod{7}``; else ``(text, None)``."""
    match = _MOD_COMPUTED.match(text)
    if match:
        return match.group("r").strip(), match.group("m").strip()
    match = _MOD_CONGRUENT.match(text)
    if match and match.group("r").strip():
        modulus = next(g for g in (match.group(k) for k in ("m1", "m2", "m3", "m4")) if g is not None)
        if match.group("lhs") is None and "\\equiv" not in text and not re.search(r"\\pmod|\(\s*\\?mod", text):
            return text, None  # a bare "a \bmod m" is an expression to evaluate, not a residue
        return match.group("r").strip(), modulus.strip()
    return text, None


_LETTER_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|textrm|mbox)\s*\{([^{}]*)\}(.*)$")
_LETTER_PREFIX = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+)?(?:final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)",
    re.IGNORECASE,
)
_LETTER_FORMS = (
    re.compile(r"^\(\s*([A-Za-z])\s*\)(?:\s*\S.*)?$"),  # (A), (A) text, (a)
    re.compile(r"^\[\s*([A-Z])\s*\](?:\s*\S.*)?$"),  # [A]
    re.compile(r"^([A-Z])(?:\s*[.:)\]]\s*.*)?$"),  # A, A., A: text, A) text
)


def choice_letter(text: str) -> str | None:
    """The upper-case choice letter ``text`` names (``A``, ``(A)``, ``A: text``...), else None."""
    text = text.replace("*", "").strip()
    for _ in range(2):
        wrapped = _LETTER_WRAP.match(text)
        if wrapped:
            text = (wrapped.group(1) + wrapped.group(2)).strip()
        text = _LETTER_PREFIX.sub("", text).strip()
    for form in _LETTER_FORMS:
        match = form.match(text)
        if match:
            return match.group(1).upper()
    return None


_TEXT_ANSWER = re.compile(r"^[A-Za-z][A-Za-z' -]*[A-Za-z]$")


_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln exp sqrt pi infty inf "
    "min max det lim mod gcd lcm".split()
)


def is_text_answer(text: str) -> bool:
    """True for a plain word answer (``red``, ``right triangle``) best compared as text."""
    inner = text
    wrapped = _LETTER_WRAP.match(text)
    if wrapped and not wrapped.group(2).strip():
        inner = wrapped.group(1).strip()
    if not _TEXT_ANSWER.match(inner) or len(inner.replace(" ", "")) < 3:
        return False
    return not any(word.lower() in _MATH_WORDS for word in re.split(r"[\s'-]+", inner))


def text_key(text: str) -> str:
    """Case- and space-insensitive key for comparing word answers."""
    wrapped = _LETTER_WRAP.match(text)
    if wrapped and not wrapped.group(2).strip():
        text = wrapped.group(1)
    return _SPACES.sub(" ", text).strip().lower()


def _degree_to_radians(text: str) -> str | None:
    core, has_degree = _split_suffix(text, _DEGREE)
    if not has_degree or not core.strip():
        return None
    return r"\frac{(%s)\pi}{180}" % core.strip()


def candidate_pairs(pred: str, gold: str) -> list[tuple[str, str]]:
    """(pred, gold) LaTeX pairs to try symbolically; equal if any pair is equal."""
    pairs = [(pred, gold)]
    pred_core, pred_pct = _split_suffix(pred, _PERCENT)
    gold_core, gold_pct = _split_suffix(gold, _PERCENT)
    if pred_pct or gold_pct:
        pairs = [(pred_core.strip(), gold_core.strip())]
        if pred_pct != gold_pct:
            if pred_pct:
                pairs.append((r"\frac{%s}{100}" % pred_core.strip(), gold_core.strip()))
            else:
                pairs.append((pred_core.strip(), r"\frac{%s}{100}" % gold_core.strip()))
    if r"\pi" in gold and r"\circ" not in gold:
        radians = _degree_to_radians(pred)
        if radians:
            pairs.append((radians, gold))
    if r"\pi" in pred and r"\circ" not in pred:
        radians = _degree_to_radians(gold)
        if radians:
            pairs.append((pred, radians))
    return [(p, g) for p, g in pairs if p and g]
