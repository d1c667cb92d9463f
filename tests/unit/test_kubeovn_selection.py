"""Table tests of the Kube-OVN selection (bgp_speaker.core.kubeovn), on Kube-OVN-shaped objects."""

from __future__ import annotations

import copy
from ipaddress import ip_address
from typing import Any

import pytest

from bgp_speaker.core import kubeovn
from bgp_speaker.core.model import AttributeOverrides
from tests.kubeapi import kubeovn as ko

GW = "gw1"
PFX = "bgp-speaker.kubeovn.io/"
Obj = dict[str, Any]


def eip(name: str, v4ip: str = "", **kwargs: Any) -> Obj:
    kwargs.setdefault("gateway", GW)
    return ko.eip(name, v4ip=v4ip, **kwargs)


def fip(name: str, eip_name: str, **kwargs: Any) -> Obj:
    return ko.rule("fip", name, eip_name=eip_name, gateway=GW, v4ip="", **kwargs)


def run(
    eips: list[Obj],
    rules: dict[str, list[Obj]] | None = None,
    *,
    policy: kubeovn.Policy = "bound",
    hold_down: kubeovn.HoldDown | None = None,
    now: float = 1000.0,
    hold: float = 15.0,
) -> kubeovn.Selection:
    view = kubeovn.View(eips=eips, rules=rules or {})  # type: ignore[arg-type]
    options = kubeovn.Options(gateway=GW, policy=policy, annotation_prefix=PFX, hold_down_seconds=hold)
    return kubeovn.select(view, options=options, hold_down=hold_down or {}, now=now)


def announced(selection: kubeovn.Selection) -> set[str]:
    return {str(c.address) for c in selection.candidates}


def reasons(selection: kubeovn.Selection) -> dict[str, str]:
    return {f"{r.origin} {r.address}": r.reason for r in selection.refusals}


A, B = "203.0.113.10", "203.0.113.11"
unlabelled_dup = eip("e2", A, gateway="gw2")

CASES: list[tuple[str, list[Obj], dict[str, list[Obj]], kubeovn.Policy, set[str], dict[str, str]]] = [
    ("bound by a ready FIP", [eip("e1", A)], {"fip": [fip("f1", "e1")]}, "bound", {A}, {}),
    (
        "bound by a ready SNAT",
        [eip("e1", A)],
        {"snat": [ko.rule("snat", "s1", eip_name="e1", gateway=GW, v4ip=A, internal="10.0.0.0/24")]},
        "bound",
        {A},
        {},
    ),
    (
        "bound by a ready DNAT",
        [eip("e1", A)],
        {"dnat": [ko.rule("dnat", "d1", eip_name="e1", gateway=GW, v4ip=A)]},
        "bound",
        {A},
        {},
    ),
    (
        "rule ready before its labels are written still binds (matched by spec.eip)",
        [eip("e1", A)],
        {"fip": [fip("f1", "e1", labelled=False)]},
        "bound",
        {A},
        {},
    ),
    (
        "no rule at all",
        [eip("e1", A)],
        {},
        "bound",
        set(),
        {f"iptables-eip/e1 {A}": "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"},
    ),
    (
        "only a rule that is not ready",
        [eip("e1", A)],
        {"fip": [fip("f1", "e1", ready=False)]},
        "bound",
        set(),
        {f"iptables-eip/e1 {A}": "no ready FIP/SNAT/DNAT rule: fip/f1 not ready"},
    ),
    (
        "a rule of another EIP does not bind",
        [eip("e1", A), eip("e2", B)],
        {"fip": [fip("f1", "e2")]},
        "bound",
        {B},
        {f"iptables-eip/e1 {A}": "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"},
    ),
    (
        "EIP not ready",
        [eip("e1", A, ready=False, redo="2026-01-02T15:04:05")],
        {"fip": [fip("f1", "e1")]},
        "bound",
        set(),
        {f"iptables-eip/e1 {A}": "not ready (status.ready is not true, status.redo 2026-01-02T15:04:05)"},
    ),
    ("policy ready ignores rules", [eip("e1", A)], {}, "ready", {A}, {}),
    (
        "policy ready still needs ready",
        [eip("e1", A, ready=False)],
        {},
        "ready",
        set(),
        {f"iptables-eip/e1 {A}": "not ready (status.ready is not true)"},
    ),
    (
        "policy annotated: opted in",
        [eip("e1", A, annotations={ko.ANNOTATION_BGP: "true"})],
        {},
        "annotated",
        {A},
        {},
    ),
    (
        "policy annotated: only exactly 'true' opts in",
        [eip("e1", A, annotations={ko.ANNOTATION_BGP: "True"}), eip("e2", B)],
        {},
        "annotated",
        set(),
        {
            f"iptables-eip/e1 {A}": "not annotated ovn.kubernetes.io/bgp=true (policy annotated)",
            f"iptables-eip/e2 {B}": "not annotated ovn.kubernetes.io/bgp=true (policy annotated)",
        },
    ),
    ("EIP of another gateway is ignored silently", [eip("e1", A, gateway="gw2")], {}, "ready", set(), {}),
    ("label not written yet is fine", [eip("e1", A, labelled=False)], {}, "ready", {A}, {}),
    (
        "spec says us, label says another gateway",
        [eip("e1", A, label_gateway="gw2")],
        {},
        "ready",
        set(),
        {
            f"iptables-eip/e1 {A}": "claims another gateway: spec.natGwDp is 'gw1' but label "
            "ovn.kubernetes.io/vpc-nat-gw-name is 'gw2'"
        },
    ),
    (
        "label says us, spec says another gateway",
        [eip("e1", A, gateway="gw2", label_gateway=GW)],
        {},
        "ready",
        set(),
        {
            f"iptables-eip/e1 {A}": "claims another gateway: label ovn.kubernetes.io/vpc-nat-gw-name "
            "is 'gw1' but spec.natGwDp is 'gw2'"
        },
    ),
    (
        "same address on two of our EIPs: both refused",
        [eip("e1", A), eip("e2", A)],
        {},
        "ready",
        set(),
        {
            f"iptables-eip/e1 {A}": f"duplicate address: {A} is also on IptablesEIP e2",
            f"iptables-eip/e2 {A}": f"duplicate address: {A} is also on IptablesEIP e1",
        },
    ),
    (
        "same address on an EIP of another gateway",
        [eip("e1", A), unlabelled_dup],
        {},
        "ready",
        set(),
        {f"iptables-eip/e1 {A}": f"duplicate address: {A} is also on IptablesEIP e2"},
    ),
    (
        "invalid IP",
        [eip("e1", "203.0.113.300")],
        {},
        "ready",
        set(),
        {"iptables-eip/e1 203.0.113.300": "invalid spec.v4ip '203.0.113.300': not an IP address"},
    ),
    (
        "IPv6 text in v4ip",
        [eip("e1", "2001:db8::1")],
        {},
        "ready",
        set(),
        {"iptables-eip/e1 2001:db8::1": "invalid spec.v4ip '2001:db8::1': not an IPv4 address"},
    ),
    (
        "no address allocated yet",
        [eip("e1", "")],
        {},
        "ready",
        set(),
        {
            "iptables-eip/e1 ": "missing fields: neither spec.v4ip nor spec.v6ip is set "
            "(no address allocated yet)"
        },
    ),
    (
        "dual stack gives a /32 and a /128",
        [eip("e1", A, v6ip="2001:db8::10")],
        {"fip": [fip("f1", "e1")]},
        "bound",
        {A, "2001:db8::10"},
        {},
    ),
    ("v6-only EIP made ready", [eip("e1", "", v6ip="2001:db8::10")], {}, "ready", {"2001:db8::10"}, {}),
    (
        "v6-only EIP as Kube-OVN leaves it (never ready)",
        [eip("e1", "", v6ip="2001:db8::10", ready=False)],
        {},
        "ready",
        set(),
        {
            "iptables-eip/e1 2001:db8::10": "not ready (status.ready is not true; Kube-OVN never "
            "readies a v6-only EIP (the iptables NAT gateway has no NATv6))"
        },
    ),
]


@pytest.mark.parametrize(
    ("eips", "rules", "policy", "expected", "refused"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_selection_table(
    eips: list[Obj],
    rules: dict[str, list[Obj]],
    policy: kubeovn.Policy,
    expected: set[str],
    refused: dict[str, str],
) -> None:
    selection = run(eips, rules, policy=policy)
    assert announced(selection) == expected
    assert reasons(selection) == refused
    assert all(c.origin.startswith("iptables-eip/") for c in selection.candidates)


def test_status_ip_stands_in_and_must_agree() -> None:
    missing_spec = eip("e1", A)
    missing_spec["spec"]["v4ip"] = ""
    assert announced(run([missing_spec], policy="ready")) == {A}
    disagree = eip("e1", A)
    disagree["status"]["ip"] = B
    assert reasons(run([disagree], policy="ready")) == {
        f"iptables-eip/e1 {A}": f"invalid: spec.v4ip {A} and status.ip {B} disagree"
    }


def test_being_deleted_is_refused() -> None:
    doomed = eip("e1", A)
    doomed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert reasons(run([doomed], {"fip": [fip("f1", "e1")]})) == {
        f"iptables-eip/e1 {A}": "being deleted (metadata.deletionTimestamp is set)"
    }


def test_rule_being_deleted_or_on_another_gateway_does_not_bind() -> None:
    leaving = fip("f1", "e1")
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    stray = fip("f2", "e1")
    stray["status"]["natGwDp"] = "gw9"
    assert reasons(run([eip("e1", A)], {"fip": [leaving, stray]})) == {
        f"iptables-eip/e1 {A}": "no ready FIP/SNAT/DNAT rule: fip/f1 being deleted, fip/f2 on gateway 'gw9'"
    }


# --- annotations --------------------------------------------------------------------------------


def test_annotations_become_overrides() -> None:
    annotations = {
        f"{PFX}communities": "65000:10, 65000:20",
        f"{PFX}large-communities": "65000:1:2",
        f"{PFX}med": "50",
        f"{PFX}local-preference": "200",
        f"{PFX}as-path-prepend": "2",
        "unrelated.example.com/key": "anything",
    }
    (candidate,) = run([eip("e1", A, annotations=annotations)], policy="ready").candidates
    assert candidate.overrides == AttributeOverrides(
        communities=("65000:10", "65000:20"),
        large_communities=("65000:1:2",),
        med=50,
        local_preference=200,
        as_path_prepend=2,
    )
    (plain,) = run([eip("e1", A)], policy="ready").candidates
    assert plain.overrides == AttributeOverrides()


def test_empty_communities_annotation_means_none() -> None:
    (candidate,) = run([eip("e1", A, annotations={f"{PFX}communities": ""})], policy="ready").candidates
    assert candidate.overrides.communities == ()


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        (
            "communities",
            "65000:70000",
            "'65000:70000' is not a standard community (ASN:VALUE, each part 0-65535)",
        ),
        (
            "communities",
            "no-export",
            "'no-export' is not a standard community (ASN:VALUE, each part 0-65535)",
        ),
        (
            "large-communities",
            "1:2",
            "'1:2' is not a large community (GLOBAL:LOCAL1:LOCAL2, each part 0-4294967295)",
        ),
        ("med", "abc", "not an integer 0-4294967295"),
        ("med", "-1", "not an integer 0-4294967295"),
        ("local-preference", "4294967296", "not an integer 0-4294967295"),
        ("as-path-prepend", "17", "not an integer 0-16"),
        (
            "comunities",
            "65000:1",
            "unknown key (known: communities, large-communities, med, local-preference, as-path-prepend)",
        ),
    ],
)
def test_invalid_annotation_is_refused_naming_key_and_value(key: str, value: str, why: str) -> None:
    selection = run([eip("e1", A, annotations={f"{PFX}{key}": value}), eip("e2", B)], policy="ready")
    assert announced(selection) == {B}
    assert reasons(selection) == {f"iptables-eip/e1 {A}": f"invalid annotation {PFX}{key}={value!r}: {why}"}


# --- hold-down ----------------------------------------------------------------------------------


def test_hold_down_rides_through_the_redo_cycle() -> None:
    bound = [eip("e1", A)], {"fip": [fip("f1", "e1")]}
    first = run(*bound, now=100.0)
    assert announced(first) == {A}
    assert first.next_deadline is None

    redo_eip = eip("e1", A, ready=False, redo="2026-01-02T15:04:05")
    during = run([redo_eip], {"fip": [fip("f1", "e1", ready=False)]}, hold_down=first.hold_down, now=104.2)
    assert announced(during) == {A}
    assert not during.refusals
    (note,) = during.held
    assert note.reason == (
        "held (not ready (status.ready is not true, status.redo 2026-01-02T15:04:05)) for 15 s more"
    )
    assert note.until == pytest.approx(119.2)
    assert during.next_deadline == pytest.approx(119.2)
    # Counted from the first failure, not from the previous selection.
    still = run([redo_eip], {"fip": [fip("f1", "e1", ready=False)]}, hold_down=during.hold_down, now=110.0)
    assert still.held[0].reason.endswith("for 10 s more")

    after = run(*bound, hold_down=still.hold_down, now=111.0)
    assert announced(after) == {A}
    assert not after.held
    assert after.hold_down[("iptables-eip/e1", A)].failing_since is None


def test_hold_down_expires() -> None:
    # A long quiet time between the last good selection and the failure does not eat the hold-down.
    first = run([eip("e1", A)], {"fip": [fip("f1", "e1")]}, now=100.0)
    unbound = run([eip("e1", A)], {}, hold_down=first.hold_down, now=700.0)
    assert announced(unbound) == {A}
    assert unbound.held[0].reason.startswith("held (not bound: no FIP/SNAT/DNAT rule")
    expired = run([eip("e1", A)], {}, hold_down=unbound.hold_down, now=715.0)
    assert announced(expired) == set()
    assert expired.hold_down == {}
    assert expired.next_deadline is None
    assert reasons(expired) == {
        f"iptables-eip/e1 {A}": "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"
    }


def test_zero_hold_down_withdraws_at_once() -> None:
    first = run([eip("e1", A)], policy="ready", now=100.0, hold=0.0)
    assert (
        announced(
            run([eip("e1", A, ready=False)], policy="ready", hold_down=first.hold_down, now=100.0, hold=0.0)
        )
        == set()
    )


def test_never_qualified_is_not_held() -> None:
    selection = run([eip("e1", A, ready=False)], policy="ready")
    assert not selection.held
    assert announced(selection) == set()


@pytest.mark.parametrize(
    "change",
    [
        "deleted",
        "being deleted",
        "claims another gateway",
        "annotation removed",
        "invalid annotation",
        "duplicate",
    ],
)
def test_hold_down_ends_at_once_on_definitive_changes(change: str) -> None:
    base = eip("e1", A, annotations={ko.ANNOTATION_BGP: "true"})
    first = run([base], policy="annotated", now=100.0)
    assert announced(first) == {A}
    changed = copy.deepcopy(base)
    eips = [changed]
    if change == "deleted":
        eips = []
    elif change == "being deleted":
        changed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    elif change == "claims another gateway":
        changed["metadata"]["labels"][ko.LABEL_GW] = "gw2"
    elif change == "annotation removed":
        del changed["metadata"]["annotations"][ko.ANNOTATION_BGP]
    elif change == "invalid annotation":
        changed["metadata"]["annotations"][f"{PFX}med"] = "lots"
    elif change == "duplicate":
        eips.append(eip("e9", A, gateway="gw2"))
    later = run(eips, policy="annotated", hold_down=first.hold_down, now=101.0)
    assert announced(later) == set()
    assert later.hold_down == {}
    assert not later.held


# --- robustness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        lambda o: o.update(spec="not a mapping"),
        lambda o: o.update(status=["x"]),
        lambda o: o["metadata"].update(labels=None, annotations=None),
        lambda o: o["metadata"].pop("name"),
        lambda o: o["spec"].update(v4ip=12345),
        lambda o: o["status"].update(ready="true"),
        lambda o: o["metadata"]["annotations"].update({f"{PFX}med": 5}),
    ],
)
def test_malformed_objects_never_raise_and_do_not_disturb_others(mangle: Any) -> None:
    bad = eip("e0", B, annotations={})
    mangle(bad)
    rules = {"fip": [fip("f1", "e1"), {"spec": "junk"}, {"metadata": {"name": "f3"}, "spec": {"eip": "e1"}}]}
    selection = run([bad, eip("e1", A)], rules)  # type: ignore[list-item]
    assert A in announced(selection)
    assert B not in announced(selection)


def test_origin_round_trip() -> None:
    assert kubeovn.eip_name_of(kubeovn.origin_of("eip-a")) == "eip-a"
    assert kubeovn.eip_name_of("file:eips.yaml[0]") is None


def test_candidates_carry_parsed_addresses() -> None:
    (candidate,) = run([eip("e1", A)], policy="ready").candidates
    assert candidate.address == ip_address(A)
