"""Allowed ranges of numeric inputs: spec fields, sweep scales, command-line options and CSV columns.

A `Range` says what a number may be ("an integer ≥ 1", "a number in (0, 1]") and checks it; NaN, infinities
and bools are never numbers here. Specs list their fields' ranges in a dict and call `check_fields` from
`__post_init__`, so a spec that exists holds only allowed numbers; the error names the field, the value and
the range, and `config.build` adds the file.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from windtunnel.errors import SpecError

__all__ = ["Range", "check_fields", "POSITIVE", "POSITIVE_INT", "NON_NEGATIVE", "NON_NEGATIVE_INT", "FRACTION",
           "PORT", "option"]


@dataclass(frozen=True)
class Range:
    """Finite numbers from `low` to `high` (None: unbounded; `*_open`: the bound itself excluded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    unit: str = ""
    """what the number counts (tokens, steps, FLOPs), said in the error"""

    def ok(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        unit = f" ({self.unit})" if self.unit else ""
        if self.low is not None and self.high is not None:
            return (f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}{unit}")
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '≥'} {self.low:g}{unit}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '≤'} {self.high:g}{unit}"
        return kind + unit


POSITIVE = Range(low=0, low_open=True)
POSITIVE_INT = Range(low=1, integer=True)
NON_NEGATIVE = Range(low=0)
NON_NEGATIVE_INT = Range(low=0, integer=True)
FRACTION = Range(low=0, high=1, low_open=True)  # (0, 1]
PORT = Range(low=1, high=65535, integer=True)


def check_fields(obj, ranges: dict[str, Range]) -> None:
    """Raise SpecError(class name, field, value, range) for the first field outside its range. None (an optional
    field left unset) passes; a tuple is checked element by element."""
    for name, allowed in ranges.items():
        value = getattr(obj, name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if value is not None and not all(allowed.ok(v) for v in values):
            what = f"a list, each {allowed}" if isinstance(value, (tuple, list)) else str(allowed)
            raise SpecError(type(obj).__name__, name, value, what)


def option(allowed: Range):
    """An argparse `type=` that reads a number and refuses it, in one line, unless it is in `allowed`."""
    def parse(text: str):
        try:
            value = int(text) if allowed.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; {allowed}") from None
        if not allowed.ok(value):
            raise argparse.ArgumentTypeError(f"{text} is not allowed; {allowed}")
        return value

    parse.__name__ = str(allowed)  # argparse names the type in some messages
    return parse
