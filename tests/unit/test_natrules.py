"""Parsing of real gateway tables (captured from namespaces shaped by tests/lab/natgw.py)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bgp_speaker.core import natrules
from bgp_speaker.core.natrules import RuleKind

DATA = Path(__file__).parent / "data"

A = IPv4Address


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_full_gateway_has_every_rule_kind(backend: str) -> None:
    view = natrules.parse(
        backend=backend,
        iptables_save=read(f"natrules_{backend}_full.txt"),
        nft_json=read("natrules_nft_share.json"),
    )
    assert view.initialized
    assert view.rules == {
        A("203.0.113.10"): {RuleKind.FIP},
        A("203.0.113.11"): {RuleKind.DNAT},
        A("203.0.113.12"): {RuleKind.SNAT},
        A("203.0.113.13"): {RuleKind.SHARE_DNAT},
    }
    # 203.0.113.14 has only the EXCLUSIVE_DNAT half of a FIP: reported, not installed.
    assert view.partial == {A("203.0.113.14")}
    assert A("203.0.113.14") not in view.installed()


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_after_deletions(backend: str) -> None:
    view = natrules.parse(
        backend=backend,
        iptables_save=read(f"natrules_{backend}_after_del.txt"),
        nft_json=read("natrules_nft_share_after_del.json"),
    )
    # The FIP of .10 is gone; .11 keeps its udp DNAT; .12 keeps the /24 SNAT; .13 keeps udp/53.
    assert view.installed() == {A("203.0.113.11"), A("203.0.113.12"), A("203.0.113.13")}
    assert view.kinds(A("203.0.113.10")) == frozenset()


def test_hairpin_rules_alone_do_not_count() -> None:
    """eip-add installs a HAIRPIN_SNAT rule per EIP; that is not a NAT binding."""
    text = read("natrules_legacy_after_del.txt")
    assert "--ctorigdst 203.0.113.11" in text
    only_hairpin = "\n".join(
        line for line in text.splitlines() if not line.startswith(("-A SHARED_", "-A EXCLUSIVE_"))
    )
    view = natrules.parse(backend="legacy", iptables_save=only_hairpin)
    assert view.installed() == frozenset()
    assert view.initialized


def test_init_only_is_initialized_and_empty() -> None:
    view = natrules.parse(backend="legacy", iptables_save=read("natrules_legacy_init_only.txt"))
    assert view.initialized
    assert view.rules == {}


def test_uninitialized_nat_table() -> None:
    text = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
    view = natrules.parse(backend="nft", iptables_save=text)
    assert not view.initialized
    assert view.installed() == frozenset()


def test_rules_in_other_tables_or_chains_are_ignored() -> None:
    text = (
        "*filter\n-A EXCLUSIVE_DNAT -d 198.51.100.1/32 -j DNAT --to-destination 10.0.0.1\nCOMMIT\n"
        "*nat\n:SNAT_FILTER - [0:0]\n:SHARED_SNAT - [0:0]\n"
        "-A PREROUTING -d 198.51.100.2/32 -j DNAT --to-destination 10.0.0.2\n"
        "-A SHARED_DNAT -d 198.51.100.0/24 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.3:80\n"
        "-A SHARED_SNAT -s 10.0.0.0/24 -o net1 -j SNAT --to-source 198.51.100.4:1024-2048\n"
        "COMMIT\n"
    )
    view = natrules.parse(backend="legacy", iptables_save=text)
    # Only the SNAT counts: a /24 destination is not an EIP match, PREROUTING is not our chain.
    assert view.rules == {A("198.51.100.4"): {RuleKind.SNAT}}


def test_fip_halves_must_agree_on_the_internal_ip() -> None:
    text = (
        "*nat\n"
        "-A EXCLUSIVE_DNAT -d 198.51.100.1/32 -j DNAT --to-destination 10.0.0.1\n"
        "-A EXCLUSIVE_SNAT -s 10.0.0.9/32 -j SNAT --to-source 198.51.100.1\n"
        "-A EXCLUSIVE_SNAT -s 10.0.0.7/32 -j SNAT --to-source 198.51.100.7\n"
        "COMMIT\n"
    )
    view = natrules.parse(backend="legacy", iptables_save=text)
    assert view.installed() == frozenset()
    assert view.partial == {A("198.51.100.1"), A("198.51.100.7")}


def test_not_iptables_save_output_is_an_error() -> None:
    with pytest.raises(natrules.NatParseError):
        natrules.parse_iptables_save("iptables: Permission denied\n")


def test_empty_iptables_output_is_an_empty_view() -> None:
    assert natrules.parse(backend="none", iptables_save="").rules == {}


def test_nft_share_needs_the_whole_path() -> None:
    document = json.loads(read("natrules_nft_share.json"))
    objects = document["nftables"]

    def without(predicate: object) -> str:
        kept = [o for o in objects if not predicate(o)]  # type: ignore[operator]
        return json.dumps({"nftables": kept})

    full = natrules.parse_nft_share(read("natrules_nft_share.json"))
    assert full == {A("203.0.113.13")}
    # No base chain hook: nothing reaches the map.
    assert (
        natrules.parse_nft_share(without(lambda o: o.get("chain", {}).get("name") == "prerouting"))
        == frozenset()
    )
    # Target chains emptied: elements point at chains without a DNAT rule.
    assert (
        natrules.parse_nft_share(without(lambda o: "rule" in o and o["rule"]["chain"].startswith("dnat-")))
        == frozenset()
    )


def test_nft_share_empty_table_and_garbage() -> None:
    empty = '{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]}'
    assert natrules.parse_nft_share(empty) == frozenset()
    assert natrules.parse_nft_share("") == frozenset()
    with pytest.raises(natrules.NatParseError):
        natrules.parse_nft_share("Error: No such file or directory")


def test_digest_changes_with_content_only() -> None:
    one = natrules.parse(backend="nft", iptables_save=read("natrules_nft_full.txt"))
    again = natrules.parse(backend="nft", iptables_save=read("natrules_nft_full.txt"))
    other = natrules.parse(backend="nft", iptables_save=read("natrules_nft_after_del.txt"))
    assert one.digest() == again.digest()
    assert one.digest() != other.digest()
    assert one.as_dict()["rules"] == {
        "203.0.113.10": ["fip"],
        "203.0.113.11": ["dnat"],
        "203.0.113.12": ["snat"],
    }
