"""A parser for the command-line syntax of Go's ``flag``/``pflag`` packages (pure).

kube-ovn-speaker parses its arguments with ``spf13/pflag`` plus the klog flags. This module
accepts what that parser accepts, and is lenient where Go's ``flag`` package differs:

- ``--name=value`` and ``-name=value`` (one element), ``--name value`` and ``-name value``
  (two elements, not for booleans);
- booleans: bare ``--name`` is true, ``--name=VALUE`` takes Go's ``strconv.ParseBool``
  spellings (``1 t T TRUE true True 0 f F FALSE false False``);
- one-letter shorthands with the value attached, as pflag gives klog's ``v``: ``-v5``;
- ``--`` ends the flags; other non-flag elements are positional and kept in order;
- Go durations (``1m30s``, ``500ms``, ``1h2m3.5s``, ``0``) become seconds (``float``);
- integers use Go's base-0 rules (``0x1f``, ``0o17``, ``017``, ``0b101``, ``1_000``);
- lists are comma-separated, and repeating a list flag appends (pflag semantics); any other
  repeated flag keeps its last value.

Nothing is fatal: unknown flags and bad values are returned as data. A value is never copied
into an error message for a flag marked ``secret``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Value = bool | int | float | str | tuple[str, ...]


class Kind(enum.Enum):
    BOOL = "bool"
    INT = "int"
    DURATION = "duration"
    STRING = "string"
    LIST = "list"


@dataclass(frozen=True)
class FlagSpec:
    """One flag: its name (without dashes), kind and, for integers, the accepted range."""

    name: str
    kind: Kind
    shorthand: str = ""
    minimum: int | None = None
    maximum: int | None = None
    secret: bool = False


@dataclass(frozen=True)
class UnknownFlag:
    """A flag that is not in the spec. ``has_value`` tells whether a value was consumed with it."""

    name: str
    has_value: bool


@dataclass(frozen=True)
class FlagError:
    """A known flag whose value could not be parsed. ``message`` never holds a secret value."""

    name: str
    message: str


@dataclass(frozen=True)
class ParsedFlags:
    values: dict[str, Value] = field(default_factory=dict)
    #: Flag names in the order they were first seen.
    order: tuple[str, ...] = ()
    unknown: tuple[UnknownFlag, ...] = ()
    errors: tuple[FlagError, ...] = ()
    positional: tuple[str, ...] = ()


# --- scalar parsers -----------------------------------------------------------------------

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r} (use true or false)")


_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zµμ]+)")


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration``, in seconds: ``1m30s`` -> 90.0, ``500ms`` -> 0.5."""
    body = text
    sign = 1.0
    if body and body[0] in "+-":
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (expected e.g. 90s, 1m30s, 500ms)")
        number, unit = match.groups()
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r} (ns, us, ms, s, m, h)")
        total += float(number) * _UNITS[unit]
        pos = match.end()
    if not math.isfinite(total) or total > 9223372036.854775807:
        raise ValueError(f"invalid duration {text!r} (overflow)")
    return sign * total


def parse_int(text: str) -> int:
    """Go's ``strconv.ParseInt(text, 0, 64)``: base prefixes, a leading 0 means octal."""
    body = text[1:] if text and text[0] in "+-" else text
    try:
        value = int(body[1:], 8) if re.fullmatch(r"0[0-7_]+", body) else int(body, 0)
    except ValueError:
        raise ValueError(f"invalid integer {text!r}") from None
    return -value if text.startswith("-") else value


def parse_list(text: str) -> tuple[str, ...]:
    """A comma list; blanks around items are dropped, and so are empty items."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


# --- the parser ---------------------------------------------------------------------------


def _convert(spec: FlagSpec, text: str) -> Value:
    if spec.kind is Kind.BOOL:
        return parse_bool(text)
    if spec.kind is Kind.DURATION:
        return parse_duration(text)
    if spec.kind is Kind.LIST:
        return parse_list(text)
    if spec.kind is Kind.INT:
        number = parse_int(text)
        if spec.minimum is not None and number < spec.minimum:
            raise ValueError(f"{number} is below the minimum {spec.minimum}")
        if spec.maximum is not None and number > spec.maximum:
            raise ValueError(f"{number} is above the maximum {spec.maximum}")
        return number
    return text


class _Parser:
    def __init__(self, specs: Iterable[FlagSpec]) -> None:
        self.by_name: dict[str, FlagSpec] = {}
        self.by_short: dict[str, FlagSpec] = {}
        for spec in specs:
            if spec.name in self.by_name:
                raise ValueError(f"flag {spec.name!r} is defined twice")
            self.by_name[spec.name] = spec
            if spec.shorthand:
                self.by_short[spec.shorthand] = spec
        self.values: dict[str, Value] = {}
        self.order: list[str] = []
        self.unknown: list[UnknownFlag] = []
        self.errors: list[FlagError] = []
        self.positional: list[str] = []

    def set(self, spec: FlagSpec, text: str) -> None:
        try:
            value = _convert(spec, text)
        except ValueError as exc:
            shown = "the given value is not valid" if spec.secret else str(exc)
            self.errors.append(FlagError(spec.name, f"--{spec.name}: {shown}"))
            return
        if spec.name not in self.order:
            self.order.append(spec.name)
        previous = self.values.get(spec.name)
        if spec.kind is Kind.LIST and isinstance(previous, tuple) and isinstance(value, tuple):
            value = previous + value
        self.values[spec.name] = value

    def run(self, argv: Sequence[str]) -> ParsedFlags:
        index = 0
        while index < len(argv):
            arg = argv[index]
            index += 1
            if arg == "--":
                self.positional.extend(argv[index:])
                break
            if not arg.startswith("-") or arg == "-":
                self.positional.append(arg)
                continue
            dashes = 2 if arg.startswith("--") else 1
            name, sep, inline = arg[dashes:].partition("=")
            has_eq = sep == "="
            spec = self.by_name.get(name)
            if spec is None and dashes == 1 and not has_eq and name[:1] in self.by_short and len(name) > 1:
                # pflag shorthand with its value attached: -v5
                self.set(self.by_short[name[0]], name[1:])
                continue
            if spec is None and dashes == 1:
                spec = self.by_short.get(name)
            if spec is None:
                consumed = has_eq
                if not has_eq and index < len(argv) and not argv[index].startswith("-"):
                    index += 1
                    consumed = True
                self.unknown.append(UnknownFlag(name, consumed))
                continue
            if has_eq:
                self.set(spec, inline)
            elif spec.kind is Kind.BOOL:
                self.set(spec, "true")
            elif index < len(argv):
                self.set(spec, argv[index])
                index += 1
            else:
                self.errors.append(FlagError(spec.name, f"--{spec.name}: needs a value"))
        return ParsedFlags(
            values=self.values,
            order=tuple(self.order),
            unknown=tuple(self.unknown),
            errors=tuple(self.errors),
            positional=tuple(self.positional),
        )


def parse(argv: Sequence[str], specs: Iterable[FlagSpec]) -> ParsedFlags:
    """Parse ``argv`` (without the program name) against ``specs``. Never raises for bad input.

    An unknown flag without ``=`` takes the next element as its value when that element does
    not start with ``-`` (Go would fail; we cannot know the type of a flag we do not know).
    """
    return _Parser(specs).run(argv)
