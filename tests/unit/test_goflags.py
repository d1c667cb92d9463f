"""Table tests for the Go/pflag command-line parser."""

from __future__ import annotations

import pytest

from bgp_speaker.core import goflags
from bgp_speaker.core.goflags import FlagSpec, Kind

SPECS = (
    FlagSpec("nat-gw-mode", Kind.BOOL),
    FlagSpec("cluster-as", Kind.INT, minimum=0, maximum=4294967295),
    FlagSpec("ebgp-multihop", Kind.INT, minimum=0, maximum=255),
    FlagSpec("holdtime", Kind.DURATION),
    FlagSpec("router-id", Kind.STRING),
    FlagSpec("auth-password", Kind.STRING, secret=True),
    FlagSpec("neighbor-address", Kind.LIST),
    FlagSpec("v", Kind.INT, shorthand="v", minimum=0),
    FlagSpec("graceful-restart", Kind.BOOL),
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90s", 90.0),
        ("1m30s", 90.0),
        ("1m0s", 60.0),
        ("3s", 3.0),
        ("500ms", 0.5),
        ("1h2m3.5s", 3723.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("2h45m", 9900.0),
        ("1500us", 0.0015),
        ("1500µs", 0.0015),
        ("250ns", 250e-9),
        ("+5s", 5.0),
        ("-1m", -60.0),
    ],
)
def test_duration(text: str, seconds: float) -> None:
    assert goflags.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "90", "s", "1x", "1m30", "1.2.3s", "abc", "5 s", "1mss"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        goflags.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(text, True) for text in ("1", "t", "T", "TRUE", "true", "True")],
        *[(text, False) for text in ("0", "f", "F", "FALSE", "false", "False")],
    ],
)
def test_bool(text: str, value: bool) -> None:
    assert goflags.parse_bool(text) is value


@pytest.mark.parametrize("text", ["yes", "on", "", "tRuE", "2"])
def test_bad_bool(text: str) -> None:
    with pytest.raises(ValueError, match="boolean"):
        goflags.parse_bool(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("65000", 65000), ("0x1f", 31), ("0o17", 15), ("017", 15), ("0b101", 5), ("1_000", 1000), ("-3", -3)],
)
def test_int(text: str, value: int) -> None:
    assert goflags.parse_int(text) == value


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # every spelling of a value flag
        (["--cluster-as=65000"], {"cluster-as": 65000}),
        (["-cluster-as=65000"], {"cluster-as": 65000}),
        (["--cluster-as", "65000"], {"cluster-as": 65000}),
        (["-cluster-as", "65000"], {"cluster-as": 65000}),
        # booleans: bare, explicit, and the last one wins
        (["--nat-gw-mode"], {"nat-gw-mode": True}),
        (["-nat-gw-mode"], {"nat-gw-mode": True}),
        (["--nat-gw-mode=false"], {"nat-gw-mode": False}),
        (["--graceful-restart=true", "--graceful-restart=0"], {"graceful-restart": False}),
        # durations, strings, values holding '='
        (["--holdtime=1m30s"], {"holdtime": 90.0}),
        (["--holdtime", "500ms"], {"holdtime": 0.5}),
        (["--router-id=10.0.0.1"], {"router-id": "10.0.0.1"}),
        (["--auth-password=a=b=c"], {"auth-password": "a=b=c"}),
        (["--auth-password", "-starts-with-dash"], {"auth-password": "-starts-with-dash"}),
        # lists: commas, blanks, repetition appends
        (["--neighbor-address=10.0.0.1,10.0.0.2"], {"neighbor-address": ("10.0.0.1", "10.0.0.2")}),
        (["--neighbor-address= 10.0.0.1 , ,10.0.0.2"], {"neighbor-address": ("10.0.0.1", "10.0.0.2")}),
        (
            ["--neighbor-address=10.0.0.1", "--neighbor-address", "10.0.0.2,10.0.0.3"],
            {"neighbor-address": ("10.0.0.1", "10.0.0.2", "10.0.0.3")},
        ),
        # the klog verbosity shorthand, every spelling
        (["-v5"], {"v": 5}),
        (["-v=5"], {"v": 5}),
        (["-v", "5"], {"v": 5}),
        (["--v=5"], {"v": 5}),
        (["--v", "3"], {"v": 3}),
    ],
)
def test_values(argv: list[str], expected: dict[str, goflags.Value]) -> None:
    parsed = goflags.parse(argv, SPECS)
    assert parsed.values == expected
    assert parsed.errors == ()
    assert parsed.unknown == ()


def test_order_and_positional() -> None:
    parsed = goflags.parse(
        ["--nat-gw-mode", "extra", "--cluster-as=1", "--", "--router-id=1.1.1.1", "tail"], SPECS
    )
    assert parsed.order == ("nat-gw-mode", "cluster-as")
    assert parsed.positional == ("extra", "--router-id=1.1.1.1", "tail")
    assert "router-id" not in parsed.values


@pytest.mark.parametrize(
    ("argv", "unknown", "values"),
    [
        (["--bogus"], [goflags.UnknownFlag("bogus", False)], {}),
        (["--bogus=1", "--nat-gw-mode"], [goflags.UnknownFlag("bogus", True)], {"nat-gw-mode": True}),
        (["--bogus", "x", "--nat-gw-mode"], [goflags.UnknownFlag("bogus", True)], {"nat-gw-mode": True}),
        (["--bogus", "--nat-gw-mode"], [goflags.UnknownFlag("bogus", False)], {"nat-gw-mode": True}),
        (["-x5"], [goflags.UnknownFlag("x5", False)], {}),
    ],
)
def test_unknown_flags_are_collected(
    argv: list[str], unknown: list[goflags.UnknownFlag], values: dict[str, goflags.Value]
) -> None:
    parsed = goflags.parse(argv, SPECS)
    assert list(parsed.unknown) == unknown
    assert parsed.values == values
    assert parsed.errors == ()


@pytest.mark.parametrize(
    ("argv", "name", "fragment"),
    [
        (["--cluster-as=abc"], "cluster-as", "invalid integer"),
        (["--cluster-as=4294967296"], "cluster-as", "above the maximum"),
        (["--ebgp-multihop=-1"], "ebgp-multihop", "below the minimum"),
        (["--holdtime=90"], "holdtime", "invalid duration"),
        (["--nat-gw-mode=yes"], "nat-gw-mode", "invalid boolean"),
        (["--cluster-as"], "cluster-as", "needs a value"),
    ],
)
def test_bad_values_are_errors_not_exceptions(argv: list[str], name: str, fragment: str) -> None:
    parsed = goflags.parse(argv, SPECS)
    assert [e.name for e in parsed.errors] == [name]
    assert fragment in parsed.errors[0].message
    assert name not in parsed.values


def test_secret_value_never_in_error() -> None:
    specs = (FlagSpec("token", Kind.INT, secret=True),)
    parsed = goflags.parse(["--token=hunter2"], specs)
    assert parsed.errors
    assert "hunter2" not in parsed.errors[0].message


def test_duplicate_spec_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        goflags.parse([], (FlagSpec("a", Kind.BOOL), FlagSpec("a", Kind.INT)))
