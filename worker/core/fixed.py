"""Fixed-point integers: decimal-string parsing/formatting and named-rounding division.

Every amount inside the engine is an ``int`` at a fixed decimal scale (SPEC §2).
``floor`` rounds toward −∞, ``ceil`` toward +∞, ``half_even`` to the nearest, ties to even.
"""
from __future__ import annotations

import re
from typing import Final

from mypy_extensions import i64

PPM: Final = 1_000_000  # parts per million: 10^6 = 100 %

# A decimal string: optional minus, digits, optional fraction. No exponent, no '+', no spaces.
# (parse_decimal checks it in one pass over the characters; the pattern is the reference the tests use)
_DECIMAL_RE: Final = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?\Z")
MAX_DECIMAL_CHARS: Final = 40  # longer strings are refused before int() sees them
_ZEROS_KEPT: Final = 19
_ZEROS: Final = tuple("0" if d == 0 else "0." + "0" * d for d in range(_ZEROS_KEPT))  # zero at d decimals
_POWERS_KEPT: Final = 41  # 10^0 … 10^40 kept (scales are ≤ 18 in the parameters); a larger pad computes its power
_POW10: Final = tuple(10**k for k in range(_POWERS_KEPT))


class DecimalFormatError(ValueError):
    """A decimal string that is malformed or carries more decimals than its scale."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


MUL_WORD_BITS: Final = 62  # |a| < 2^la, |b| < 2^lb, la + lb ≤ 62 ⇒ |a·b| < 2^62: one machine word
_HALF_WORD: Final = 2**31  # |a|, |b| < 2^31 ⇒ |a·b| < 2^62 (the same bound, checked without bit_length)


def mul(a: int, b: int) -> int:
    """a · b, exact. Compiled (mypyc), an ``int`` product takes the machine multiplication only when
    both operands are in [0, 2^30): a negative size or an amount above ~1 073 quote units at 6
    decimals went through Python objects (~80–120 ns). Here, when |a|, |b| < 2^31 (four compares on
    the tagged ints) or else the operands' bit lengths add up to at most 62, the product is one i64
    multiplication (it cannot wrap: |a·b| < 2^62); otherwise it is the ``int`` product. Uncompiled,
    ``i64(x)`` is ``int(x)``: the same value either way."""
    if -_HALF_WORD < a < _HALF_WORD and -_HALF_WORD < b < _HALF_WORD:  # |a|, |b| < 2^31: four compares
        return i64(a) * i64(b)
    if a.bit_length() + b.bit_length() <= MUL_WORD_BITS:  # (an amount times a ppm rate, say)
        return i64(a) * i64(b)
    return a * b


def iabs(value: int) -> int:
    """|value|. Compiled (mypyc), ``abs()`` of an ``int`` boxes it into a Python object, calls the
    object's ``__abs__`` and unboxes the result (~150 instructions); this is a compare and a negation
    on the tagged integer. The same value as ``abs(value)`` for every int."""
    return -value if value < 0 else value


def floor_div(numerator: int, denominator: int) -> int:
    """floor(numerator / denominator), denominator > 0."""
    return numerator // denominator


def ceil_div(numerator: int, denominator: int) -> int:
    """ceil(numerator / denominator), denominator > 0."""
    return -((-numerator) // denominator)


def half_even_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to nearest, ties to even; denominator > 0."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def parse_decimal(text: object, decimals: int, rounding: str = "exact") -> int:
    """Parse a decimal string into an int at ``decimals`` places.

    ``rounding="exact"`` refuses extra decimals (code ``too_many_decimals``);
    ``rounding="half_even"`` rounds them half-even (mark prices, SPEC §2).

    One pass over the characters checks the grammar ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?`` (ASCII digits
    only: ``_DECIMAL_RE``) and accumulates the digits' value, units = int(whole + fraction).
    Compiled, ``ord(text[i])`` reads the code point without making a string (str methods and
    ``int()`` of the joined digits were ~2 500 instructions a decimal, ~6 % of the replay)."""
    if not isinstance(text, str):
        raise DecimalFormatError("wrong_type", f"expected a decimal string, got {type(text).__name__}")
    n = len(text)
    if n > MAX_DECIMAL_CHARS:
        raise _not_a_decimal(text)
    negative = n > 0 and ord(text[0]) == 45  # "-"
    first = i = 1 if negative else 0
    units = 0
    while i < n:  # the whole part: [0-9]+, no leading zero but "0" itself
        c = ord(text[i])
        if c < 48 or c > 57:
            break
        units = units * 10 + (c - 48)
        i += 1
    if i == first or (i - first > 1 and ord(text[first]) == 48):
        raise _not_a_decimal(text)
    fraction = 0  # digits after the point
    if i < n:
        if ord(text[i]) != 46:  # "."
            raise _not_a_decimal(text)
        i += 1
        fraction = n - i
        if fraction == 0:
            raise _not_a_decimal(text)
        while i < n:
            c = ord(text[i])
            if c < 48 or c > 57:
                raise _not_a_decimal(text)
            units = units * 10 + (c - 48)
            i += 1
    pad = decimals - fraction
    if pad >= 0:  # units = digits · 10^pad (the fraction padded with zeros to the scale)
        units = units * (_POW10[pad] if pad < _POWERS_KEPT else 10 ** pad)
    elif rounding == "half_even":
        units = half_even_div(units, 10 ** (fraction - decimals))
    else:
        raise DecimalFormatError(
            "too_many_decimals", f"{text!r} has {fraction} decimals, scale allows {decimals}"
        )
    return -units if negative else units


def _not_a_decimal(text: str) -> DecimalFormatError:
    """The error of a string the decimal grammar refuses (its first 48 characters shown)."""
    return DecimalFormatError("bad_decimal", f"not a decimal string: {text[:48]!r}")


def format_units(units: int, decimals: int) -> str:
    """Format an int at ``decimals`` places with exactly that many decimals ("12.500000")."""
    if units == 0 and decimals < _ZEROS_KEPT:  # (most amounts of an allocation are zero)
        return _ZEROS[decimals]
    if units < 0:
        return "-" + format_units(-units, decimals)
    digits = str(units)
    if decimals == 0:
        return digits
    n = len(digits)
    if n <= decimals:
        return f"0.{'0' * (decimals - n)}{digits}"
    return f"{digits[:n - decimals]}.{digits[n - decimals:]}"  # (compiled: one build, no intermediate string)
