"""One validation layer for every input — spec files, `--set` overrides, command-line numbers — on pydantic v2.

A spec is a frozen pydantic dataclass (`@spec`): unknown keys are refused, numbers are `number(...)` fields,
choices are `Literal`s, and a check between fields raises `refuse(key, value, allowed)`. Every failure becomes one
`SpecError` line naming the file, the full dotted key, the value and what is allowed ("did you mean" for keys), in
words, never Python type names. One number syntax everywhere: 1e6, 1_000_000 and "1e6" are the same integer where
an integer is due (when exact); NaN, infinities and true/false are never numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
import typing
from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, StrictBool, TypeAdapter, ValidationError, WithJsonSchema
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import PydanticCustomError

from windtunnel.errors import SpecError, WindtunnelError, did_you_mean

__all__ = ["spec", "number", "refuse", "build", "read", "option", "problem", "json_schema", "read_csv", "csv_cells", "Flag", "POSITIVE",
           "POSITIVE_INT", "NON_NEGATIVE", "NON_NEGATIVE_INT", "FRACTION", "PORT"]

Flag = StrictBool  # true or false, never 1 or "yes"


def _range_text(low, high, low_open, high_open, integer, unit) -> str:
    kind, unit = ("an integer" if integer else "a finite number"), (f" ({unit})" if unit else "")
    low, high = (f"{x:g}" if isinstance(x, float) else x for x in (low, high))
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}{unit}"
    if low is not None:
        return f"{kind} {'>' if low_open else '≥'} {low}{unit}"
    if high is not None:
        return f"{kind} {'<' if high_open else '≤'} {high}{unit}"
    return kind + unit


def _read_number(value):
    """A number from YAML, a command line or Python: ints and floats as they are, text such as "1e6" or "1_000"
    parsed; None for anything else (true/false included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        for parse in (int, float):
            try:
                return parse(text)
            except ValueError:
                pass
    return None


def number(*, low=None, high=None, low_open=False, high_open=False, integer=False, unit="", keep_int=False):
    """The type of a numeric field: finite, within [low, high] (a bound None: open-ended; *_open: excluded), whole
    where `integer` (an exact 1e6 is the integer 1000000). Floats come out as floats, except that `keep_int` keeps
    a whole number given as one (a sweep coordinate logged as written)."""
    allowed = _range_text(low, high, low_open, high_open, integer, unit)

    def check(value):
        x = _read_number(value)
        ok = x is not None and math.isfinite(x) and (not integer or float(x).is_integer())
        ok = ok and (low is None or (x > low if low_open else x >= low))
        ok = ok and (high is None or (x < high if high_open else x <= high))
        if not ok:
            raise PydanticCustomError("number", "{allowed}", {"allowed": allowed})
        return int(x) if integer else x if keep_int and isinstance(x, int) else float(x)

    schema = {"type": "integer" if integer else "number", "description": allowed}
    if low is not None:
        schema["exclusiveMinimum" if low_open else "minimum"] = low
    if high is not None:
        schema["exclusiveMaximum" if high_open else "maximum"] = high
    return Annotated[int if integer else (int | float) if keep_int else float, BeforeValidator(check),
                     WithJsonSchema(schema)]


POSITIVE = number(low=0, low_open=True)
POSITIVE_INT = number(low=1, integer=True)
NON_NEGATIVE = number(low=0)
NON_NEGATIVE_INT = number(low=0, integer=True)
FRACTION = number(low=0, high=1, low_open=True)  # (0, 1]
PORT = number(low=1, high=65535, integer=True)


def refuse(key: str, value, allowed: str) -> PydanticCustomError:
    """The error a check between fields raises (in __post_init__): `key` relative to the spec being checked."""
    return PydanticCustomError("refused", "{allowed}", {"key": key, "value": value, "allowed": allowed})


def spec(cls):
    """A frozen, keyword-only pydantic dataclass that refuses unknown keys; built in Python with a bad value it
    raises the SpecError a file would (named after the class)."""
    cls = pydantic_dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid", use_attribute_docstrings=True))(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except ValidationError as err:
            raise _spec_error(err, cls, kwargs, file=cls.__name__) from None

    cls.__init__ = __init__
    return cls


@functools.cache
def _adapter(kind) -> TypeAdapter:
    return TypeAdapter(kind)


def build(cls, mapping, *, file, prefix: str = ""):
    """`cls` (a @spec class) from a mapping read from `file`; `prefix` is where the mapping sits in the file."""
    if not isinstance(mapping, dict):
        raise SpecError(file, prefix.rstrip(".") or "<top>", mapping, "a mapping of keys to values")
    try:
        return _adapter(cls).validate_python(mapping)
    except ValidationError as err:
        raise _spec_error(err, cls, mapping, file=file, prefix=prefix) from None


def read(kind, value):
    """`value` as a `kind` (a number(...) type), or None when it is not one."""
    try:
        return _adapter(kind).validate_python(value)
    except ValidationError:
        return None


def problem(kind, value) -> str | None:
    """What is allowed, when `value` is not a `kind` (a number(...) type); None when it is."""
    try:
        _adapter(kind).validate_python(value)
    except ValidationError as err:
        return _allowed(err.errors(include_url=False)[0])
    return None


def option(kind):
    """An argparse `type=` that reads a `kind` (a number(...) type) and refuses anything else in one line."""
    def parse(text: str):
        try:
            return _adapter(kind).validate_python(text)
        except ValidationError as err:
            shown = text if _read_number(text) is not None else repr(text)
            raise argparse.ArgumentTypeError(f"{shown} is not allowed; {_allowed(err.errors()[0])}") from None

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def json_schema(kind) -> dict:
    """The JSON Schema of a spec class or type, as editors read it."""
    return _adapter(kind).json_schema()


# ---------------------------------------------------------------- CSV files (fit --csv, monitor --csv)


def read_csv(path):
    """A CSV file as a table indexed by each row's line in the file (the header is line 1), blank lines dropped; a
    file pandas cannot read is one line naming it."""
    import pandas as pd

    try:
        raw = pd.read_csv(path, skip_blank_lines=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise WindtunnelError(f"{path}: cannot read as CSV ({str(err).splitlines()[0]})") from None
    raw.index += 2  # blank lines are kept for the numbering, then dropped
    return raw.dropna(how="all")


def csv_cells(column, ok, *, path, name: str, allowed: str):
    """`column` (of read_csv) as floats when `ok(values)` holds in every row (`values`: the cells read as numbers, NaN
    where one is not); else one line naming the file, the first bad cell's line and column, and what is allowed."""
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce")
    good = ok(values)
    if not good.all():
        line, cell = good.idxmin(), column[good.idxmin()]
        shown = repr(cell) if isinstance(cell, str) else "an empty cell (or NaN)" if cell != cell else f"{cell:g}"
        raise WindtunnelError(f"{path}: line {line} (the header is line 1), column {name!r}: {shown} is not allowed; "
                              f"{allowed}")
    return values.astype(float)


# ---------------------------------------------------------------- one line per error

_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a text", "dict": "a mapping",
          "dataclass": "a mapping of keys to values", "tuple": "a list", "list": "a list", "missing": "a value"}


def _allowed(error: dict) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("number", "refused"):
        return ctx["allowed"]
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"])
        return did_you_mean(error["input"], choices) + "one of " + ", ".join(map(repr, choices))
    return _WORDS.get(kind.split("_")[0], error["msg"])


def _known_keys(cls, parts: list[str]) -> list[str]:
    """The field names of the spec at dotted path `parts` below spec class `cls` (through Optional, tuple and
    dict types); [] where there is none."""
    kind = cls
    for part in [*parts, None]:
        while not dataclasses.is_dataclass(kind) and typing.get_args(kind):
            kind = [a for a in typing.get_args(kind) if a is not type(None)][-1]
        if not dataclasses.is_dataclass(kind):
            return []
        if part is None:
            return [f.name for f in dataclasses.fields(kind)]
        kind = typing.get_type_hints(kind).get(part)


def _spec_error(err: ValidationError, cls, raw, *, file, prefix: str = "") -> SpecError:
    """The first of pydantic's errors as a SpecError: the dotted key from the file's top, the value, what is
    allowed."""
    errors = err.errors(include_url=False)  # a misspelt key first: it explains the key then missing
    error = min(errors, key=lambda e: e["type"] not in ("unexpected_keyword_argument", "extra_forbidden"))
    loc = list(error["loc"])
    value, allowed = error.get("input"), _allowed(error)
    if any(isinstance(p, int) for p in loc):  # an element of a list: name the list and show it whole
        loc = loc[:next(i for i, p in enumerate(loc) if isinstance(p, int))]
        allowed, value = f"a list, each {allowed}", _at(raw, loc, value)
    parts = [str(p) for p in loc]
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        known = _known_keys(cls, parts[:-1])
        allowed = did_you_mean(parts[-1], known) + "known keys: " + ", ".join(known)
    elif error["type"] in ("missing", "missing_keyword_argument"):
        value, allowed = None, f"{prefix}{'.'.join(parts)} is required"
    elif error["type"] == "refused":
        parts, value = parts + [error["ctx"]["key"]], error["ctx"]["value"]
    return SpecError(file, prefix + ".".join(parts), value, allowed)


def _at(raw, loc: list, default):
    for part in loc:
        if not isinstance(raw, dict) or part not in raw:
            return default
        raw = raw[part]
    return raw
