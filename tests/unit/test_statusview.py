from __future__ import annotations

import copy
from typing import Any

import pytest

from bgp_speaker.core import statusview

NOW = 1_732_460_010.0


def document() -> dict[str, Any]:
    """The status document as the app serves it (see the http endpoint)."""
    return {
        "version": "0.1.0",
        "gateway": "gw1",
        "source": {
            "name": "file",
            "synced": True,
            "fresh_at": 1732460000.0,
            "stale_seconds": 0.2,
            "error": None,
        },
        "next_hops": {
            "ipv4": "172.31.255.11",
            "ipv6": None,
            "interface": "net1",
            "stale": False,
            "detail": {},
        },
        "exabgp": {"running": True, "pid": 1234, "restarts": 0, "api_connected": True, "generation": 1},
        "peers": [
            {
                "address": "172.31.255.1",
                "asn": 65000,
                "description": "core",
                "state": "established",
                "since": NOW - 192.0,
                "last_error": None,
                "flaps": 0,
                "announced": 2,
                "desired": 2,
            },
            {
                "address": "2001:db8:ff::1",
                "asn": 65010,
                "state": "idle",
                "since": NOW - 7260.0,
                "last_error": "connection refused",
                "flaps": 3,
                "announced": 0,
                "desired": 1,
            },
        ],
        "routes": [
            {
                "prefix": "203.0.113.10/32",
                "origin": "file:eips.yaml[0]",
                "next_hop": "172.31.255.11",
                "communities": ["65000:10"],
                "large_communities": ["65000:1:2"],
                "med": None,
                "peers": {"172.31.255.1": "announced"},
            },
            {
                "prefix": "2001:db8:1::5/128",
                "origin": "file:eips.yaml[1]",
                "next_hop": "2001:db8:ff::11",
                "communities": [],
                "large_communities": [],
                "med": None,
                "peers": {"2001:db8:ff::1": "pending"},
            },
        ],
        "refused": [
            {
                "address": "198.18.0.1",
                "origin": "file:eips.yaml[2]",
                "reason": "outside the allowed pools (203.0.113.0/24)",
                "peer": None,
            }
        ],
        "last_reconcile": {
            "at": NOW - 4.0,
            "duration_seconds": 0.004,
            "announced": 1,
            "withdrawn": 0,
            "result": "converged",
            "error": None,
        },
        "health": {"live": True, "ready": False, "reasons": ["0 of 2 BGP sessions established"], "notes": []},
    }


def section(text: str, title: str) -> list[str]:
    """The lines of one table (its title line excluded), up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start + 1 : end]


def row_for(rows: list[str], key: str) -> list[str]:
    matches = [row.split() for row in rows if row.split()[0] == key]
    assert len(matches) == 1, (key, rows)
    return matches[0]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0s"),
        (0.24, "0.2s"),
        (9.94, "9.9s"),
        (42.7, "42s"),
        (60.0, "1m00s"),
        (192.0, "3m12s"),
        (3599.0, "59m59s"),
        (7260.0, "2h01m"),
        (86399.0, "23h59m"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
        (-5.0, "0.0s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert statusview.human_duration(seconds) == text


def test_short_duration_uses_milliseconds_below_a_second() -> None:
    assert statusview.short_duration(0.004) == "4.0ms"
    assert statusview.short_duration(1.5) == "1.5s"


def test_every_peer_route_and_refusal_appears_with_its_fields() -> None:
    doc = document()
    text = statusview.render(doc, now=NOW)

    peers = section(text, "PEERS")
    assert peers[0].split()[:4] == ["ADDRESS", "AS", "STATE", "SINCE"]
    for peer in doc["peers"]:
        row = row_for(peers[1:], peer["address"])
        assert row[1] == str(peer["asn"])
        assert row[2] == peer["state"]
        assert row[3] == statusview.human_duration(NOW - peer["since"])
        assert row[4] == f"{peer['announced']}/{peer['desired']}"
        assert row[5] == str(peer["flaps"])
        assert " ".join(row[6:]) == (peer["last_error"] or "-")

    routes = section(text, "ROUTES")
    header = routes[0].split()
    peer_columns = [p["address"] for p in doc["peers"]]
    assert header[-len(peer_columns) :] == peer_columns
    for route in doc["routes"]:
        row = row_for(routes[1:], route["prefix"])
        assert row[1] == route["next_hop"]
        assert row[2] == (",".join(route["communities"] + route["large_communities"]) or "-")
        cells = dict(zip(peer_columns, row[-len(peer_columns) :], strict=True))
        assert cells == {p: route["peers"].get(p, "-") for p in peer_columns}

    refused = section(text, "REFUSED")
    for entry in doc["refused"]:
        row = row_for(refused[1:], entry["address"])
        assert row[1] == entry["origin"]
        assert " ".join(row[2:]) == entry["reason"]


def test_header_lines() -> None:
    doc = document()
    lines = statusview.render(doc, now=NOW).splitlines()
    assert lines[0] == "bgp-speaker 0.1.0  gateway gw1"
    assert "source     file: synced, as of 0.2s ago" in lines
    assert "next hops  ipv4 172.31.255.11  ipv6 -  interface net1" in lines
    assert "exabgp     running, pid 1234, restarts 0, api connected, generation 1" in lines
    assert "health     live, NOT READY" in lines
    assert "           reason: 0 of 2 BGP sessions established" in lines
    assert lines[-1] == "last reconcile: converged, 4.0s ago, took 4.0ms, announced 1, withdrawn 0"


def test_degraded_states_are_shouted() -> None:
    doc = document()
    doc["source"].update(synced=False, error="API unreachable")
    doc["next_hops"]["stale"] = True
    doc["exabgp"].update(running=False, api_connected=False)
    text = statusview.render(doc, now=NOW)
    assert "NOT SYNCED" in text
    assert "error: API unreachable" in text
    assert "(STALE)" in text
    assert "NOT RUNNING" in text
    assert "API DISCONNECTED" in text


def test_columns_are_aligned() -> None:
    text = statusview.render(document(), now=NOW)
    for title in ("PEERS", "ROUTES", "REFUSED"):
        rows = section(text, title)
        header = rows[0]
        # Every column starts where its header starts.
        starts = [i for i, ch in enumerate(header) if ch != " " and i >= 2 and header[i - 2 : i] == "  "]
        assert starts, header
        for row in rows[1:]:
            for start in starts:
                assert row[start - 2 : start] == "  ", (title, row)
                assert row[start] != " ", (title, row)
        assert all(line == line.rstrip() for line in rows)


def test_without_a_reference_time_timestamps_are_printed_in_utc() -> None:
    doc = document()
    doc["peers"][0]["since"] = 1732459000.0
    text = statusview.render(doc)
    assert row_for(section(text, "PEERS")[1:], "172.31.255.1")[3] == "2024-11-24T14:36:40Z"


def test_the_documents_own_now_is_used_when_present() -> None:
    doc = document()
    doc["now"] = NOW
    assert statusview.render(doc) == statusview.render(document(), now=NOW)


def test_med_and_peer_columns_appear_only_when_used() -> None:
    doc = document()
    text = statusview.render(doc, now=NOW)
    assert "MED" not in section(text, "ROUTES")[0]
    assert "PEER" not in section(text, "REFUSED")[0].split()
    doc["routes"][0]["med"] = 50
    doc["refused"][0]["peer"] = "172.31.255.1"
    text = statusview.render(doc, now=NOW)
    assert row_for(section(text, "ROUTES")[1:], "203.0.113.10/32")[3] == "50"
    assert row_for(section(text, "REFUSED")[1:], "198.18.0.1")[2] == "172.31.255.1"


def test_route_peers_not_in_the_peer_list_get_a_column() -> None:
    doc = document()
    doc["routes"][0]["peers"]["192.0.2.99"] = "withdrawing"
    routes = section(statusview.render(doc, now=NOW), "ROUTES")
    assert routes[0].split()[-1] == "192.0.2.99"
    assert row_for(routes[1:], "203.0.113.10/32")[-1] == "withdrawing"


@pytest.mark.parametrize(
    "key", ["version", "gateway", "source", "next_hops", "exabgp", "peers", "routes", "refused", "health"]
)
def test_any_missing_key_is_tolerated(key: str) -> None:
    doc = document()
    del doc[key]
    text = statusview.render(doc, now=NOW)
    assert text.endswith("\n")
    if key == "peers":
        assert "PEERS: none" in text
    else:
        assert "172.31.255.1" in text


def test_missing_and_mistyped_fields_render_as_dashes() -> None:
    doc: dict[str, Any] = {
        "peers": [{"address": "192.0.2.1"}, "not a peer", None],
        "routes": "not a list",
        "refused": [{"reason": "no\nnewlines   here"}],
        "health": {"live": [1], "ready": {}},
        "source": {"name": 3, "stale_seconds": "soon"},
        "last_reconcile": {"result": "failed", "at": "yesterday", "error": "boom"},
    }
    text = statusview.render(doc, now=NOW)
    peers = section(text, "PEERS")
    assert len(peers) == 2
    assert row_for(peers[1:], "192.0.2.1")[1:] == ["-", "-", "-", "-/-", "-", "-"]
    assert "ROUTES: none" in text
    assert row_for(section(text, "REFUSED")[1:], "-") == ["-", "-", "no", "newlines", "here"]
    assert "health     live -, ready -" in text
    assert "last reconcile: failed, -, error: boom" in text


def test_an_empty_document_renders() -> None:
    assert statusview.render({}) == (
        "bgp-speaker -\n\nPEERS: none\n\nROUTES: none\n\nREFUSED: none\n\nlast reconcile: none yet\n"
    )


def test_render_does_not_modify_its_input() -> None:
    doc = document()
    before = copy.deepcopy(doc)
    statusview.render(doc, now=NOW)
    assert doc == before
