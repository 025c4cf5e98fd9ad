"""Validation: the one range check every `fire_rl` module uses, and flags that carry their allowed range.

A flag's range sits in its annotation, beside the flag::

    @dataclass
    class Args(Flags):
        num_envs: Annotated[int, In(1, 1024)] = 1
        \"\"\"the number of parallel game environments\"\"\"

tyro does not enforce annotated constraints, so `Flags.check_ranges` does (before any work), and ``--help`` shows the
range after the default: ``(default: 1; an integer in [1, 1024])``. The type says whether it is an integer and
``int | None`` allows None.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Any, get_type_hints

import tyro

# The most env steps or gradient updates a run may count: integers stay exact in float64 up to 2**53, and the
# schedules (epsilon's decay, the reset midpoint, fractional replay ratios) compute in floats.
MAX_STEPS = 2**53


def describe(low: float, high: float = math.inf, bounds: str = "[]", integer: bool = False) -> str:
    """What an interval allows, in words: ``"an integer >= 1"``, ``"a finite number in (0, 1]"``."""
    what = "an integer" if integer else "a finite number"
    if math.isinf(high):
        return f"{what} {'>=' if bounds[0] == '[' else '>'} {low}"
    return f"{what} in {bounds[0]}{low}, {'2**53' if high == MAX_STEPS else high}{bounds[1]}"


def range_error(value: object, low: float, high: float = math.inf, bounds="[]", integer=False) -> str | None:
    """None if `value` is a finite number (an int if `integer`; never a bool) in the interval from `low` to `high`,
    `bounds` saying which ends are closed (``"[)"``: low ≤ value < high), else what is allowed (`describe`)."""
    kind = numbers.Integral if integer else numbers.Real
    number = isinstance(value, kind) and not isinstance(value, bool)
    number = number and (isinstance(value, numbers.Integral) or math.isfinite(value))  # isfinite overflows on 10**400
    above = number and (value >= low if bounds[0] == "[" else value > low)
    if above and (value <= high if bounds[1] == "]" else value < high):
        return None
    return describe(low, high, bounds, integer)


def check_range(name: str, value: Any, low: float, high: float = math.inf, bounds="[]", integer=False) -> Any:
    """`value` (as an int if `integer`) if `range_error` accepts it.

    Raises:
        ValueError: ``"<name> must be <allowed>, got <value>"`` otherwise.
    """
    allowed = range_error(value, low, high, bounds, integer)
    if allowed is not None:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value) if integer else value


def flag(name: str) -> str:
    """The command-line flag of a dataclass field: ``reset_at`` -> ``--reset-at``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class In:
    """A flag's allowed interval, as `Annotated` metadata: from `low` to `high`, `bounds` saying which ends are closed
    (``"(]"``: low < value ≤ high)."""

    low: float
    high: float = math.inf
    bounds: str = "[]"


class Flags:
    """Base of the flag dataclasses: each field annotated ``Annotated[T, In(...)]`` is range-checked by
    `check_ranges` and shows its range in ``--help`` (subclasses register theirs when they are defined)."""

    _ranges: typing.ClassVar[dict[str, tuple[In, bool, bool]]] = {}  # name -> (range, integer, None allowed)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = get_type_hints(cls, include_extras=True)
        cls._ranges = {k: v for base in reversed(cls.__mro__[1:]) for k, v in base.__dict__.get("_ranges", {}).items()}
        for name in cls.__dict__.get("__annotations__", {}):
            interval = next((m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, In)), None)
            if interval is None:
                continue
            kinds = typing.get_args(hints[name].__origin__)
            kinds = kinds if typing.get_origin(hints[name].__origin__) in (typing.Union, types.UnionType) else ()
            integer = int in kinds or hints[name].__origin__ is int
            cls._ranges[name] = (interval, integer, type(None) in kinds)
            text = describe(interval.low, interval.high, interval.bounds, integer)
            hint = tyro.conf.arg(help_behavior_hint=lambda default, text=text: f"(default: {default}; {text})")
            cls.__annotations__[name] = Annotated[hints[name], hint]

    def check_ranges(self) -> None:
        """Refuse a bad value before any work: every float field must be finite and every ranged field inside its
        range.

        Raises:
            ValueError: one line naming the flag, its value and what is allowed.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag(f.name)}={value}: must be a finite number")
        for name, (interval, integer, optional) in self._ranges.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if allowed := range_error(value, interval.low, interval.high, interval.bounds, integer):
                raise ValueError(f"{flag(name)}={value!r}: must be {allowed}{' or None' if optional else ''}")
