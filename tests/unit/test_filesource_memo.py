"""Parsing the EIP file with an entry memo gives exactly what a parse without one gives."""

from __future__ import annotations

import json
import random

import pytest

from bgp_speaker.adapters.filesource import EntryMemo, parse
from bgp_speaker.errors import SourceError

#: Entries of every kind: plain, with overrides, wrong in various ways, and values that compare
#: equal across types (1, 1.0, true) but validate differently.
ENTRIES: list[object] = [
    {"ip": "203.0.113.1"},
    {"ip": "203.0.113.2", "communities": ["65000:10"], "med": 10},
    {"ip": "2001:db8::1", "large_communities": ["65000:1:2"], "local_preference": 200},
    {"ip": "203.0.113.300"},
    {"ip": " 203.0.113.4"},
    {"ip": 3405803777},
    {"ip": "203.0.113.5", "med": True},
    {"ip": "203.0.113.5", "med": 1},
    {"ip": "203.0.113.5", "med": 1.0},
    {"ip": "203.0.113.6", "colour": "blue"},
    {"ip": "203.0.113.7", "communities": [3900010]},
    {"med": 5},
    "203.0.113.8",
    None,
    {"ip": "203.0.113.9", "as_path_prepend": 2},
]


def doc(entries: list[object]) -> str:
    return json.dumps({"eips": entries})


def test_same_result_as_without_memo_over_random_edits() -> None:
    rng = random.Random(11)
    memo = EntryMemo()
    current = list(ENTRIES)
    for _ in range(60):
        op = rng.choice(("insert", "remove", "move", "replace"))
        if op == "insert":
            current.insert(rng.randrange(len(current) + 1), rng.choice(ENTRIES))
        elif op == "remove" and current:
            current.pop(rng.randrange(len(current)))
        elif op == "move" and current:
            current.insert(rng.randrange(len(current)), current.pop(rng.randrange(len(current))))
        else:
            current[rng.randrange(len(current))] = rng.choice(ENTRIES)
        text = doc(current)
        assert parse(text, where="f", name="eips.json", memo=memo) == parse(text, where="f", name="eips.json")


def test_unchanged_entries_are_handed_on_as_the_same_objects() -> None:
    memo = EntryMemo()
    first, _ = parse(doc(ENTRIES), where="f", name="e", memo=memo)
    second, _ = parse(doc([*ENTRIES, {"ip": "203.0.113.99"}]), where="f", name="e", memo=memo)
    assert all(a is b for a, b in zip(first, second, strict=False))
    assert str(second[-1].address) == "203.0.113.99"


def test_an_entry_that_moved_gets_its_new_origin() -> None:
    memo = EntryMemo()
    parse(doc([{"ip": "203.0.113.1"}, {"ip": "203.0.113.2"}]), where="f", name="e", memo=memo)
    candidates, _ = parse(doc([{"ip": "203.0.113.2"}]), where="f", name="e", memo=memo)
    assert [(str(c.address), c.origin) for c in candidates] == [("203.0.113.2", "file:e[0]")]


def test_the_memo_holds_only_the_last_parse_and_survives_an_unusable_file() -> None:
    memo = EntryMemo()
    parse(doc(ENTRIES), where="f", name="e", memo=memo)
    parse(doc([{"ip": "203.0.113.1"}, {"ip": "203.0.113.1"}]), where="f", name="e", memo=memo)
    assert len(memo) == 1
    with pytest.raises(SourceError):
        parse("{not json", where="f", name="e", memo=memo)
    assert len(memo) == 1


def test_yaml_keeps_refusing_unquoted_communities() -> None:
    text = "eips:\n  - ip: 203.0.113.1\n    communities: [65000:10]\n"
    candidates, refusals = parse(text, where="f", name="e", memo=EntryMemo())
    assert candidates == ()
    assert "quote communities" in refusals[0].reason
