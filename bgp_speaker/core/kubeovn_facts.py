"""The facts the Kube-OVN selection reads from an object, extracted once per object version.

Objects come from the network and may have any shape: every accessor here is tolerant (a
missing or mistyped field reads as empty). Extraction decides nothing; the rules that turn
facts into candidates and refusals live in :mod:`bgp_speaker.core.kubeovn`. Facts are frozen
and compare by value, so a watch event that changes nothing the selection reads (a label
written after the spec, a new ``status.redo`` on a rule) can be recognised as a no-op.

Pure: no I/O. Address parsing is memoised (the same texts come back on every relist).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Literal

from bgp_speaker.core.kubeovn_annotations import parse_overrides
from bgp_speaker.core.model import AttributeOverrides, IPAddress

RuleKind = Literal["dnat", "fip", "snat"]

LABEL_GATEWAY = "ovn.kubernetes.io/vpc-nat-gw-name"
ANNOTATION_BGP = "ovn.kubernetes.io/bgp"

Obj = Mapping[str, Any]


def _dig(obj: object, *path: str) -> object:
    for key in path:
        # ``type is dict`` first: the ABC check is slow and objects are plain dicts.
        if type(obj) is not dict and not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(value: object) -> str:
    return value.strip() if type(value) is str or isinstance(value, str) else ""


def _mapping(value: object) -> Mapping[str, object]:
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def name_of(obj: object) -> str:
    return _text(_dig(obj, "metadata", "name"))


def resource_version_of(obj: object) -> str:
    return _text(_dig(obj, "metadata", "resourceVersion"))


@functools.lru_cache(maxsize=1 << 16)
def parse_ip(text: str) -> IPAddress | None:
    """The address ``text`` spells, or None. Cached: ``ip_address`` is the costly part of a pass."""
    try:
        return ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _canonical(text: str) -> str:
    address = parse_ip(text)
    return "" if address is None else str(address)


@dataclass(frozen=True, slots=True)
class EipFacts:
    """What the selection reads from one IptablesEIP."""

    name: str
    #: ``spec.natGwDp`` and the label ``ovn.kubernetes.io/vpc-nat-gw-name``.
    spec_gateway: str
    label_gateway: str
    spec_v4: str
    status_ip: str
    spec_v6: str
    #: ``spec.v4ip`` (``status.ip`` when that is empty) and ``spec.v6ip`` parsed, with their
    #: canonical text; None / "" when the text is not an address.
    v4: IPAddress | None
    v4_text: str
    v6: IPAddress | None
    v6_text: str
    #: Canonical ``spec.v4ip`` / ``spec.v6ip`` (any family): what other EIPs are checked against.
    spec_addresses: tuple[str, ...]
    deleting: bool
    ready: bool
    redo: str
    #: ``ovn.kubernetes.io/bgp`` is exactly ``"true"``.
    opted_in: bool
    #: Our annotations parsed under the prefix, or why they are invalid.
    overrides: AttributeOverrides | str

    @property
    def checked_addresses(self) -> tuple[str, ...]:
        """The addresses whose holders decide this EIP's duplicate check."""
        return tuple(t for t in (self.v4_text, self.v6_text) if t)


@dataclass(frozen=True, slots=True)
class RuleFacts:
    """What the selection reads from one FIP/SNAT/DNAT rule."""

    kind: RuleKind
    name: str
    #: ``spec.eip``: the IptablesEIP the rule binds.
    eip: str
    #: ``status.natGwDp``.
    gateway: str
    deleting: bool
    ready: bool


def parse_eip(obj: Obj, *, annotation_prefix: str) -> EipFacts:
    spec, status, meta = _dig(obj, "spec"), _dig(obj, "status"), _dig(obj, "metadata")
    spec_v4, spec_v6 = _text(_dig(spec, "v4ip")), _text(_dig(spec, "v6ip"))
    status_ip = _text(_dig(status, "ip"))
    v4 = parse_ip(spec_v4 or status_ip) if (spec_v4 or status_ip) else None
    v6 = parse_ip(spec_v6) if spec_v6 else None
    annotations = _mapping(_dig(meta, "annotations"))
    overrides: AttributeOverrides | str
    try:
        overrides = parse_overrides(annotations, prefix=annotation_prefix)
    except ValueError as exc:
        overrides = str(exc)
    return EipFacts(
        name=name_of(obj),
        spec_gateway=_text(_dig(spec, "natGwDp")),
        label_gateway=_text(_dig(meta, "labels", LABEL_GATEWAY)),
        spec_v4=spec_v4,
        status_ip=status_ip,
        spec_v6=spec_v6,
        v4=v4,
        v4_text="" if v4 is None else str(v4),
        v6=v6,
        v6_text="" if v6 is None else str(v6),
        spec_addresses=tuple(c for c in (_canonical(spec_v4), _canonical(spec_v6)) if c),
        deleting=bool(_dig(meta, "deletionTimestamp")),
        ready=_dig(status, "ready") is True,
        redo=_text(_dig(status, "redo")),
        opted_in=annotations.get(ANNOTATION_BGP) == "true",
        overrides=overrides,
    )


def parse_rule(obj: Obj, *, kind: RuleKind) -> RuleFacts:
    status = _dig(obj, "status")
    return RuleFacts(
        kind=kind,
        name=name_of(obj),
        eip=_text(_dig(obj, "spec", "eip")),
        gateway=_text(_dig(status, "natGwDp")),
        deleting=bool(_dig(obj, "metadata", "deletionTimestamp")),
        ready=_dig(status, "ready") is True,
    )
