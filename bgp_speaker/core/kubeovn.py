"""Kube-OVN selection: which EIPs of this NAT gateway to announce, and why not the others.

Pure: plain dicts in (the objects exactly as the API server returns them), frozen values
out; no I/O, no clock (``now`` is a parameter).

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
   on every EIP of ours that holds it, naming the others (sorted).
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

**Shape.** The rules work on one EIP at a time: :func:`parse_eip` and :func:`parse_rule` turn
an object into the few facts the rules read (once per object version), and :func:`evaluate`
decides one EIP from its facts, the names holding each address, the rules naming it and its
own hold-down entries. :func:`select` does that for every EIP of a :class:`View`; the
Kubernetes adapter keeps the per-EIP results and re-evaluates only the EIPs an event can
affect, then joins them with :func:`assemble`. Both paths run the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from bgp_speaker.core.kubeovn_facts import (
    ANNOTATION_BGP,
    LABEL_GATEWAY,
    EipFacts,
    Obj,
    RuleFacts,
    RuleKind,
    parse_eip,
    parse_rule,
)
from bgp_speaker.core.model import Candidate, IPAddress, Refusal

Policy = Literal["bound", "ready", "annotated"]

#: The order Kube-OVN uses in ``status.nat``.
RULE_KINDS: tuple[RuleKind, ...] = ("dnat", "fip", "snat")
ORIGIN_PREFIX = "iptables-eip/"


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


@dataclass(frozen=True, slots=True)
class Hold:
    """An address announced only because of the hold-down (its note's text depends on the time)."""

    address: str
    origin: str
    #: Why it no longer qualifies.
    cause: str
    until: float

    def note(self, now: float) -> HeldNote:
        left = math.ceil(self.until - now)
        reason = f"held ({self.cause}) for {left} s more"
        return HeldNote(address=self.address, origin=self.origin, reason=reason, until=self.until)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one IptablesEIP: empty for an EIP of another gateway."""

    candidates: tuple[Candidate, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    holds: tuple[Hold, ...] = ()
    #: This EIP's hold-down entries: its ``previous`` for the next evaluation.
    state: Mapping[tuple[str, str], Held] = field(default_factory=dict)

    @property
    def deadline(self) -> float | None:
        """When the earliest hold-down of this EIP ends; evaluate it again then."""
        return min((h.until for h in self.holds), default=None)


NOTHING = Verdict()


# --- the rules ----------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def _addresses(eip: EipFacts) -> list[tuple[IPAddress, str]]:
    """The EIP's addresses (with their canonical text), v4 first. Raises _Refused with what is wrong."""
    spec_v4, status_ip = eip.spec_v4, eip.status_ip
    if spec_v4 and status_ip and spec_v4 != status_ip:
        raise _Refused(f"invalid: spec.v4ip {spec_v4} and status.ip {status_ip} disagree")
    result: list[tuple[IPAddress, str]] = []
    for field_name, text, address, canonical, family in (
        ("spec.v4ip" if spec_v4 else "status.ip", spec_v4 or status_ip, eip.v4, eip.v4_text, IPv4Address),
        ("spec.v6ip", eip.spec_v6, eip.v6, eip.v6_text, IPv6Address),
    ):
        if not text:
            continue
        if address is None:
            raise _Refused(f"invalid {field_name} {text!r}: not an IP address")
        if not isinstance(address, family):
            raise _Refused(
                f"invalid {field_name} {text!r}: not an IPv{4 if family is IPv4Address else 6} address"
            )
        result.append((address, canonical))
    if not result:
        raise _Refused("missing fields: neither spec.v4ip nor spec.v6ip is set (no address allocated yet)")
    return result


def _ownership(eip: EipFacts, gateway: str) -> bool:
    """True when the EIP is ours; False when it belongs to another gateway; raises on conflict."""
    by_spec, by_label = eip.spec_gateway, eip.label_gateway
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


def _rule_summary(rules: Iterable[RuleFacts], gateway: str) -> str | None:
    """None when a ready rule binds the EIP; otherwise why not."""
    described: list[str] = []
    for rule in rules:
        label = f"{rule.kind}/{rule.name}"
        if rule.deleting:
            described.append(f"{label} being deleted")
        elif rule.gateway and rule.gateway != gateway:
            described.append(f"{label} on gateway {rule.gateway!r}")
        elif rule.ready:
            return None
        else:
            described.append(f"{label} not ready")
    if not described:
        return "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"
    return "no ready FIP/SNAT/DNAT rule: " + ", ".join(sorted(described))


def _qualify(eip: EipFacts, *, options: Options, rules: Iterable[RuleFacts]) -> None:
    """Raise _Refused (transient or not) unless the EIP qualifies under the policy."""
    if options.policy == "annotated" and not eip.opted_in:
        raise _Refused(f"not annotated {ANNOTATION_BGP}=true (policy annotated)")
    if not eip.ready:
        detail = (
            f"status.ready is not true, status.redo {eip.redo}" if eip.redo else "status.ready is not true"
        )
        if not eip.spec_v4 and eip.spec_v6:
            detail += "; Kube-OVN never readies a v6-only EIP (the iptables NAT gateway has no NATv6)"
        raise _Refused(f"not ready ({detail})", transient=True)
    if options.policy == "bound":
        missing = _rule_summary(rules, options.gateway)
        if missing is not None:
            raise _Refused(missing, transient=True)


def evaluate(
    eip: EipFacts,
    *,
    options: Options,
    owners: Mapping[str, Collection[str]],
    rules: Collection[RuleFacts],
    previous: HoldDown,
    now: float,
) -> Verdict:
    """Decide one EIP. ``owners``: address text -> names of every IptablesEIP whose spec holds it;
    ``rules``: the rules whose ``spec.eip`` names this EIP; ``previous``: the hold-down state
    (only this EIP's entries are read)."""
    name = eip.name
    if not name:
        return NOTHING
    origin = origin_of(name)
    shown = eip.spec_v4 or eip.status_ip or eip.spec_v6
    try:
        if not _ownership(eip, options.gateway):
            return NOTHING
        addresses = _addresses(eip)
    except _Refused as exc:
        return Verdict(refusals=(Refusal(address=shown, origin=origin, reason=exc.reason),))
    try:
        if eip.deleting:
            raise _Refused("being deleted (metadata.deletionTimestamp is set)")
        for _, text in addresses:
            others = sorted(n for n in owners.get(text, ()) if n != name)
            if others:
                raise _Refused(f"duplicate address: {text} is also on IptablesEIP {', '.join(others)}")
        if isinstance(eip.overrides, str):
            raise _Refused(eip.overrides)
    except _Refused as exc:
        return Verdict(
            refusals=tuple(Refusal(address=t, origin=origin, reason=exc.reason) for _, t in addresses)
        )
    fresh = [(Candidate(address=a, origin=origin, overrides=eip.overrides), t) for a, t in addresses]
    try:
        _qualify(eip, options=options, rules=rules)
    except _Refused as exc:
        candidates: list[Candidate] = []
        refusals: list[Refusal] = []
        holds: list[Hold] = []
        state: dict[tuple[str, str], Held] = {}
        for candidate, text in fresh:
            key = (origin, text)
            before = previous.get(key)
            since = now if before is None or before.failing_since is None else before.failing_since
            until = since + options.hold_down_seconds
            if exc.transient and before is not None and now < until:
                state[key] = Held(candidate=before.candidate, failing_since=since)
                candidates.append(candidate)
                holds.append(Hold(address=text, origin=origin, cause=exc.reason, until=until))
            else:
                refusals.append(Refusal(address=text, origin=origin, reason=exc.reason))
        return Verdict(tuple(candidates), tuple(refusals), tuple(holds), state)
    return Verdict(
        candidates=tuple(c for c, _ in fresh),
        state={(origin, t): Held(candidate=c) for c, t in fresh},
    )


# --- the whole view -----------------------------------------------------------------------------


def owners_index(eips: Iterable[EipFacts]) -> dict[str, list[str]]:
    """Address text -> the names of the IptablesEIPs (of any gateway) whose spec holds it."""
    owners: dict[str, list[str]] = {}
    for eip in eips:
        if eip.name:
            for text in eip.spec_addresses:
                owners.setdefault(text, []).append(eip.name)
    return owners


def rules_index(rules: Iterable[RuleFacts]) -> dict[str, list[RuleFacts]]:
    """EIP name -> the rules whose ``spec.eip`` names it (matched by spec, never by labels)."""
    by_eip: dict[str, list[RuleFacts]] = {}
    for rule in rules:
        if rule.eip:
            by_eip.setdefault(rule.eip, []).append(rule)
    return by_eip


def assemble(verdicts: Iterable[Verdict], *, now: float) -> Selection:
    """Join per-EIP verdicts (in EIP name order) into a selection as seen at ``now``."""
    candidates: list[Candidate] = []
    refusals: list[Refusal] = []
    held: list[HeldNote] = []
    state: dict[tuple[str, str], Held] = {}
    for verdict in verdicts:
        candidates += verdict.candidates
        refusals += verdict.refusals
        held += (hold.note(now) for hold in verdict.holds)
        state.update(verdict.state)
    return Selection(
        candidates=tuple(candidates),
        refusals=tuple(refusals),
        held=tuple(held),
        hold_down=state,
        next_deadline=min((h.until for h in held), default=None),
    )


def select(view: View, *, options: Options, hold_down: HoldDown, now: float) -> Selection:
    """Candidates, refusals (one per address of every EIP of ours not announced), held notes."""
    eips = [parse_eip(eip, annotation_prefix=options.annotation_prefix) for eip in view.eips]
    owners = owners_index(eips)
    rules = rules_index(
        parse_rule(rule, kind=kind) for kind in RULE_KINDS for rule in view.rules.get(kind, ())
    )
    eips.sort(key=lambda eip: eip.name)
    return assemble(
        (
            evaluate(
                eip,
                options=options,
                owners=owners,
                rules=rules.get(eip.name, ()),
                previous=hold_down,
                now=now,
            )
            for eip in eips
        ),
        now=now,
    )
