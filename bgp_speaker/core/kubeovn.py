"""Kube-OVN selection: which EIPs of this NAT gateway to announce, and why not the others.

Pure: plain dicts in (the objects exactly as the API server returns them), frozen values
out; no I/O, no clock (``now`` is a parameter). The Kubernetes adapter keeps the objects
in memory and calls :func:`select` for every snapshot.

Rules, in the order they are checked for every IptablesEIP:

1. **Ownership.** An EIP is ours when ``spec.natGwDp`` or the label
   ``ovn.kubernetes.io/vpc-nat-gw-name`` names this gateway. EIPs of other gateways are
   ignored silently. When the two disagree (one names us, the other another gateway, or
   ``spec.natGwDp`` is empty) the EIP is refused: it *claims another gateway*. A missing
   label alone is fine: the controller writes labels after the spec.
2. **Being deleted** (``metadata.deletionTimestamp``): refused at once.
3. **Addresses.** ``spec.v4ip`` gives a /32 and ``spec.v6ip`` a /128 (a dual-stack EIP
   yields two candidates). ``status.ip`` stands in for a missing ``spec.v4ip`` and must
   agree with it when both are set. Unparsable or wrong-family text, or no address at
   all, is refused.
4. **Uniqueness.** An address held by two IptablesEIP objects (of any gateway) is refused
   on every EIP of ours that holds it, naming the other one.
5. **Our annotations** (``<prefix>communities``, ``large-communities``, ``med``,
   ``local-preference``, ``as-path-prepend``) become :class:`AttributeOverrides`
   (:mod:`bgp_speaker.core.kubeovn_annotations`); an invalid value or an unknown key under
   the prefix refuses the EIP, naming key and value.
6. **Policy.** ``annotated``: ``ovn.kubernetes.io/bgp`` must be exactly ``"true"``. Then
   ``status.ready`` must be true. ``bound`` (the default) also needs at least one
   FIP/SNAT/DNAT rule whose ``spec.eip`` names the EIP and whose ``status.ready`` is true.
   Rules are matched by ``spec.eip``, never by labels only: the controller marks a rule
   ready before it writes the rule's labels.

**Hold-down.** Failing step 6 (not ready, no ready rule, no rule any more) is *transient*:
an EIP that qualified keeps being announced for ``hold_down_seconds`` from the first
selection that saw it fail, reported as ``held (<reason>) for N s more``. That rides Kube-OVN's redo cycle
(``ready`` false then true on every gateway restart) and a rule being replaced. Every other
failure ends the hold-down at once, and so does the EIP object disappearing, because the
address may then be handed to another gateway and announcing it from here would steal its
traffic: deleted or being deleted, claimed by another gateway, address changed or
duplicated, the ``annotated`` opt-in removed, an invalid annotation.

Pool membership and next hops are checked later by :mod:`bgp_speaker.core.desired`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Literal

from bgp_speaker.core.kubeovn_annotations import parse_overrides
from bgp_speaker.core.model import Candidate, IPAddress, Refusal

Policy = Literal["bound", "ready", "annotated"]
RuleKind = Literal["dnat", "fip", "snat"]

LABEL_GATEWAY = "ovn.kubernetes.io/vpc-nat-gw-name"
ANNOTATION_BGP = "ovn.kubernetes.io/bgp"
#: The order Kube-OVN uses in ``status.nat``.
RULE_KINDS: tuple[RuleKind, ...] = ("dnat", "fip", "snat")
ORIGIN_PREFIX = "iptables-eip/"

Obj = Mapping[str, Any]


def origin_of(name: str) -> str:
    return f"{ORIGIN_PREFIX}{name}"


def eip_name_of(origin: str) -> str | None:
    """The IptablesEIP name behind a candidate origin, or None for other sources."""
    return origin[len(ORIGIN_PREFIX) :] if origin.startswith(ORIGIN_PREFIX) else None


@dataclass(frozen=True, slots=True)
class View:
    """A point-in-time copy of the objects the source watches."""

    eips: Sequence[Obj] = ()
    rules: Mapping[RuleKind, Sequence[Obj]] = field(default_factory=dict)
    #: This gateway's VpcNatGateway, or None when it is not (yet) known.
    gateway: Obj | None = None


@dataclass(frozen=True, slots=True)
class Options:
    gateway: str
    policy: Policy = "bound"
    annotation_prefix: str = "bgp-speaker.kubeovn.io/"
    hold_down_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class Held:
    """A candidate that qualified, and since when (wall clock) it has been failing, if it is."""

    candidate: Candidate
    failing_since: float | None = None


#: Hold-down state, keyed by (origin, address text).
HoldDown = Mapping[tuple[str, str], Held]


@dataclass(frozen=True, slots=True)
class HeldNote:
    """An address announced only because of the hold-down."""

    address: str
    origin: str
    reason: str
    #: Wall-clock time at which the hold-down ends.
    until: float


@dataclass(frozen=True, slots=True)
class Selection:
    candidates: tuple[Candidate, ...]
    refusals: tuple[Refusal, ...]
    held: tuple[HeldNote, ...]
    hold_down: HoldDown
    #: The earliest time a hold-down ends; select again then. None when nothing is held.
    next_deadline: float | None


# --- tolerant accessors: objects come from the network and may have any shape ------------------


def _dig(obj: object, *path: str) -> object:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def name_of(obj: object) -> str:
    return _text(_dig(obj, "metadata", "name"))


# --- the selection ------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def _addresses(eip: Obj) -> list[IPAddress]:
    """The EIP's addresses, v4 first. Raises _Refused with what is wrong."""
    spec_v4, status_ip, v6 = (
        _text(_dig(eip, "spec", "v4ip")),
        _text(_dig(eip, "status", "ip")),
        _text(_dig(eip, "spec", "v6ip")),
    )
    if spec_v4 and status_ip and spec_v4 != status_ip:
        raise _Refused(f"invalid: spec.v4ip {spec_v4} and status.ip {status_ip} disagree")
    result: list[IPAddress] = []
    for field_name, text, family in (
        ("spec.v4ip" if spec_v4 else "status.ip", spec_v4 or status_ip, IPv4Address),
        ("spec.v6ip", v6, IPv6Address),
    ):
        if not text:
            continue
        try:
            address = ip_address(text)
        except ValueError:
            raise _Refused(f"invalid {field_name} {text!r}: not an IP address") from None
        if not isinstance(address, family):
            raise _Refused(
                f"invalid {field_name} {text!r}: not an IPv{4 if family is IPv4Address else 6} address"
            )
        result.append(address)
    if not result:
        raise _Refused("missing fields: neither spec.v4ip nor spec.v6ip is set (no address allocated yet)")
    return result


def _ownership(eip: Obj, gateway: str) -> bool:
    """True when the EIP is ours; False when it belongs to another gateway; raises on conflict."""
    by_spec = _text(_dig(eip, "spec", "natGwDp"))
    by_label = _text(_dig(eip, "metadata", "labels", LABEL_GATEWAY))
    if by_spec != gateway and by_label != gateway:
        return False
    if by_spec == gateway and by_label in ("", gateway):
        return True
    if by_spec == gateway:
        raise _Refused(
            f"claims another gateway: spec.natGwDp is {gateway!r} but label {LABEL_GATEWAY} is {by_label!r}"
        )
    shown = repr(by_spec) if by_spec else "missing"
    raise _Refused(
        f"claims another gateway: label {LABEL_GATEWAY} is {gateway!r} but spec.natGwDp is {shown}"
    )


def _rule_summary(name: str, rules: Mapping[str, list[tuple[RuleKind, Obj]]], gateway: str) -> str | None:
    """None when a ready rule binds the EIP; otherwise why not."""
    mine = rules.get(name, [])
    described: list[str] = []
    for kind, rule in mine:
        rule_gw = _text(_dig(rule, "status", "natGwDp"))
        label = f"{kind}/{name_of(rule)}"
        if _dig(rule, "metadata", "deletionTimestamp"):
            described.append(f"{label} being deleted")
        elif rule_gw and rule_gw != gateway:
            described.append(f"{label} on gateway {rule_gw!r}")
        elif _dig(rule, "status", "ready") is True:
            return None
        else:
            described.append(f"{label} not ready")
    if not described:
        return "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"
    return "no ready FIP/SNAT/DNAT rule: " + ", ".join(sorted(described))


def _qualify(eip: Obj, *, options: Options, rules: Mapping[str, list[tuple[RuleKind, Obj]]]) -> None:
    """Raise _Refused (transient or not) unless the EIP qualifies under the policy."""
    if options.policy == "annotated":
        flag = _dig(eip, "metadata", "annotations", ANNOTATION_BGP)
        if flag != "true":
            raise _Refused(f"not annotated {ANNOTATION_BGP}=true (policy annotated)")
    if _dig(eip, "status", "ready") is not True:
        redo = _text(_dig(eip, "status", "redo"))
        detail = f"status.ready is not true, status.redo {redo}" if redo else "status.ready is not true"
        if not _text(_dig(eip, "spec", "v4ip")) and _text(_dig(eip, "spec", "v6ip")):
            detail += "; Kube-OVN never readies a v6-only EIP (the iptables NAT gateway has no NATv6)"
        raise _Refused(f"not ready ({detail})", transient=True)
    if options.policy == "bound":
        missing = _rule_summary(name_of(eip), rules, options.gateway)
        if missing is not None:
            raise _Refused(missing, transient=True)


def select(view: View, *, options: Options, hold_down: HoldDown, now: float) -> Selection:
    """Candidates, refusals (one per address of every EIP of ours not announced), held notes."""
    owners: dict[str, list[str]] = {}
    for other in view.eips:
        for spec_key in ("v4ip", "v6ip"):
            text = _text(_dig(other, "spec", spec_key))
            try:
                canonical = str(ip_address(text))
            except ValueError:
                continue
            owners.setdefault(canonical, []).append(name_of(other))
    rules: dict[str, list[tuple[RuleKind, Obj]]] = {}
    for kind in RULE_KINDS:
        for rule in view.rules.get(kind, ()):
            target = _text(_dig(rule, "spec", "eip"))
            if target:
                rules.setdefault(target, []).append((kind, rule))

    candidates: list[Candidate] = []
    refusals: list[Refusal] = []
    held: list[HeldNote] = []
    state: dict[tuple[str, str], Held] = {}

    def refuse(address: str, origin: str, reason: str) -> None:
        refusals.append(Refusal(address=address, origin=origin, reason=reason))

    for eip in sorted(view.eips, key=name_of):
        name = name_of(eip)
        if not name:
            continue
        origin = origin_of(name)
        raw_v4 = _text(_dig(eip, "spec", "v4ip")) or _text(_dig(eip, "status", "ip"))
        shown = raw_v4 or _text(_dig(eip, "spec", "v6ip"))
        try:
            if not _ownership(eip, options.gateway):
                continue
        except _Refused as exc:
            refuse(shown, origin, exc.reason)
            continue
        try:
            addresses = _addresses(eip)
        except _Refused as exc:
            refuse(shown, origin, exc.reason)
            continue
        try:
            if _dig(eip, "metadata", "deletionTimestamp"):
                raise _Refused("being deleted (metadata.deletionTimestamp is set)")
            for address in addresses:
                others = [n for n in owners.get(str(address), []) if n != name]
                if others:
                    raise _Refused(f"duplicate address: {address} is also on IptablesEIP {', '.join(others)}")
            overrides = parse_overrides(
                _mapping(_dig(eip, "metadata", "annotations")), prefix=options.annotation_prefix
            )
        except _Refused as exc:
            for address in addresses:
                refuse(str(address), origin, exc.reason)
            continue
        except ValueError as exc:
            for address in addresses:
                refuse(str(address), origin, str(exc))
            continue
        fresh = [Candidate(address=a, origin=origin, overrides=overrides) for a in addresses]
        try:
            _qualify(eip, options=options, rules=rules)
        except _Refused as exc:
            for candidate in fresh:
                key = (origin, str(candidate.address))
                previous = hold_down.get(key)
                since = now if previous is None or previous.failing_since is None else previous.failing_since
                until = since + options.hold_down_seconds
                if exc.transient and previous is not None and now < until:
                    state[key] = Held(candidate=previous.candidate, failing_since=since)
                    candidates.append(candidate)
                    left = math.ceil(until - now)
                    held.append(
                        HeldNote(
                            address=str(candidate.address),
                            origin=origin,
                            reason=f"held ({exc.reason}) for {left} s more",
                            until=until,
                        )
                    )
                else:
                    refuse(str(candidate.address), origin, exc.reason)
            continue
        for candidate in fresh:
            state[(origin, str(candidate.address))] = Held(candidate=candidate)
            candidates.append(candidate)

    return Selection(
        candidates=tuple(candidates),
        refusals=tuple(refusals),
        held=tuple(held),
        hold_down=state,
        next_deadline=min((h.until for h in held), default=None),
    )
