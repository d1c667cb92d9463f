"""Parsing and validating the EIP file: entries become candidates or refusals, and a memo
hands unchanged entries back as the same objects so a one-line change costs one entry."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import ip_address
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, StrictStr, ValidationError

from bgp_speaker import settings
from bgp_speaker.core.model import AttributeOverrides, Candidate, Refusal
from bgp_speaker.errors import SourceError

_UINT32_MAX = 4294967295
_TOP_LEVEL_KEYS = frozenset({"eips"})
#: libyaml's parser when PyYAML was built with it (~8x faster at 10k entries), else the pure one;
#: both construct with the same safe constructor and YAML 1.1 resolver.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NO_OVERRIDES = AttributeOverrides()


def _address_text(value: str) -> str:
    try:
        return str(ip_address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {value!r}") from None


def _no_base60(value: object) -> object:
    # YAML 1.1 reads an unquoted 65000:10 as the base-60 integer 3900010.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f'got the number {value}: quote communities in YAML ("65000:10"), which reads an '
            "unquoted A:B as a base-60 integer"
        )
    return value


_Community = Annotated[settings.Community, BeforeValidator(_no_base60)]
_LargeCommunity = Annotated[settings.LargeCommunity, BeforeValidator(_no_base60)]
_Uint32 = Annotated[StrictInt, Field(ge=0, le=_UINT32_MAX)]


class _Entry(settings.Strict):
    """One element of ``eips``; unknown keys are refused (extra='forbid')."""

    ip: Annotated[StrictStr, AfterValidator(_address_text)]
    communities: tuple[_Community, ...] | None = None
    large_communities: tuple[_LargeCommunity, ...] | None = None
    med: _Uint32 | None = None
    local_preference: _Uint32 | None = None
    as_path_prepend: Annotated[StrictInt, Field(ge=0, le=16)] | None = None


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{type(value).__name__} {value!r}"


def _entry_problems(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        field = ""
        for part in item["loc"]:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        kind = item["type"]
        message = {"extra_forbidden": "unknown key", "missing": "required key missing"}.get(
            kind, item["msg"].removeprefix("Value error, ")
        )
        # Our own validators already quote the value.
        shown = "" if kind in ("missing", "value_error") else f" (got {_describe(item.get('input'))})"
        problems.append(f"{field or 'entry'}: {message}{shown}")
    return "; ".join(problems)


def _load_document(text: str, *, where: str) -> Any:
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{where}: not valid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise SourceError(f"{where}: not valid YAML: {detail}") from None


class EntryMemo:
    """What each distinct raw entry of the previous parse became, so that a re-read after a
    one-line change validates one entry, not every entry (and hands the unchanged ones on as
    the very same objects, which keeps the later comparisons cheap).

    Keys are the raw entries frozen with the type of every value (``1``, ``1.0`` and ``true``
    stay distinct); an entry holding something unhashable is simply not memoised. After a
    parse the memo holds exactly that parse's entries, so it never outgrows the file."""

    __slots__ = ("_results",)

    def __init__(self) -> None:
        self._results: dict[object, Candidate | Refusal] = {}

    def __len__(self) -> int:
        return len(self._results)

    def get(self, key: object) -> Candidate | Refusal | None:
        return self._results.get(key)

    def keep_only(self, results: dict[object, Candidate | Refusal]) -> None:
        self._results = results


def _frozen(value: object) -> object:
    if isinstance(value, dict):
        return (dict, tuple((_frozen(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (list, tuple(_frozen(v) for v in value))
    return (type(value), value)


def _memo_key(raw: dict[Any, Any]) -> object | None:
    """The common ``{ip: <text>}`` entry is keyed by its text; any other by its frozen form."""
    if len(raw) == 1:
        ip = raw.get("ip")
        if type(ip) is str:
            return ip
    key = _frozen(raw)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _validate(raw: object, *, origin: str) -> Candidate | Refusal:
    """One raw entry of ``eips`` as a candidate, or the refusal that says what is wrong."""
    if not isinstance(raw, dict):
        return Refusal(
            address=str(raw) if isinstance(raw, str) else "",
            origin=origin,
            reason=f"entry: must be a mapping like {{ip: 203.0.113.10}}, got {_describe(raw)}",
        )
    if len(raw) == 1 and type(raw.get("ip")) is str:
        # The common entry, without a model: the same address the model would yield.
        try:
            return Candidate(address=ip_address(raw["ip"]), origin=origin, overrides=_NO_OVERRIDES)
        except ValueError:
            pass  # the model below words the refusal
    try:
        entry = _Entry(**{str(k): v for k, v in raw.items()})
    except ValidationError as exc:
        address = "" if raw.get("ip") is None else str(raw.get("ip"))
        return Refusal(address=address, origin=origin, reason=_entry_problems(exc))
    return Candidate(
        address=ip_address(entry.ip),
        origin=origin,
        overrides=AttributeOverrides(
            communities=entry.communities,
            large_communities=entry.large_communities,
            med=entry.med,
            local_preference=entry.local_preference,
            as_path_prepend=entry.as_path_prepend,
        ),
    )


def parse(
    text: str, *, where: str, name: str, memo: EntryMemo | None = None
) -> tuple[tuple[Candidate, ...], tuple[Refusal, ...]]:
    """Parse the file's text. Raises :class:`SourceError` when the file as a whole is
    unusable; a bad entry only becomes a refusal. ``where`` names the file in errors,
    ``name`` goes into each entry's origin. With ``memo``, entries seen in the previous
    parse are not validated again (the memo is left holding this parse's entries; it is
    left untouched when the file is unusable)."""
    document = _load_document(text, where=where)
    if not isinstance(document, dict):
        raise SourceError(
            f"{where}: the top level must be a mapping with an `eips` list, got {_describe(document)}"
        )
    unknown = sorted(str(k) for k in document if k not in _TOP_LEVEL_KEYS)
    if unknown:
        raise SourceError(f"{where}: unknown top-level key {unknown[0]!r} (only `eips` is allowed)")
    if "eips" not in document:
        raise SourceError(f"{where}: eips: missing (write `eips: []` to announce nothing)")
    entries = document["eips"]
    if not isinstance(entries, list):
        raise SourceError(
            f"{where}: eips: must be a list (write `eips: []` to announce nothing), got {_describe(entries)}"
        )
    seen: dict[object, Candidate | Refusal] = {}
    candidates: list[Candidate] = []
    refusals: list[Refusal] = []
    prefix = f"file:{name}["
    for index, raw in enumerate(entries):
        origin = f"{prefix}{index}]"
        key = _memo_key(raw) if memo is not None and isinstance(raw, dict) else None
        result = memo.get(key) if memo is not None and key is not None else None
        if result is None:
            result = _validate(raw, origin=origin)
        elif result.origin != origin:  # same entry, moved
            result = replace(result, origin=origin)
        if key is not None:
            seen[key] = result
        if isinstance(result, Candidate):
            candidates.append(result)
        else:
            refusals.append(result)
    if memo is not None:
        memo.keep_only(seen)
    return tuple(candidates), tuple(refusals)
