"""pyroute2 through :mod:`bgp_speaker.adapters.netlink.light`, each case in a fresh interpreter
(the point is what a process imports, so it cannot share this one's ``sys.modules``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def run_fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter; it prints one JSON document, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_netlink_adapter_loads_the_rtnetlink_client_without_the_rest_of_pyroute2() -> None:
    result = run_fresh(
        """
        import asyncio, json, sys
        from bgp_speaker.adapters import netlink

        async def loopback():
            async with netlink.Rtnl() as rtnl:
                link = await rtnl.link("lo")
                return link, await rtnl.addresses(link.index)

        link, addresses = asyncio.run(loopback())
        print(json.dumps({
            "modules": sorted(m for m in sys.modules if m.startswith("pyroute2")),
            "link": link.name,
            "addresses": sorted(str(a.address) for a in addresses),
        }))
        """
    )
    modules = result["modules"]
    assert isinstance(modules, list)
    assert "pyroute2.iproute.linux" in modules
    for heavy in ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.nftables", "pyroute2.conntrack"):
        assert heavy not in modules
    assert result["link"] == "lo"
    assert "127.0.0.1" in result["addresses"]  # type: ignore[operator]


def test_any_other_top_level_name_loads_the_whole_package_once() -> None:
    result = run_fresh(
        """
        import json, sys
        from bgp_speaker.adapters import netlink
        import pyroute2
        from pyroute2 import AsyncIPRoute
        from pyroute2.iproute.linux import AsyncIPRoute as Defined
        light = "pyroute2.ndb.main" not in sys.modules
        from pyroute2 import IPRoute, NDB
        print(json.dumps({
            "light_before": light,
            "same_class": AsyncIPRoute is Defined,
            "iproute": IPRoute.__module__,
            "ndb": NDB.__module__,
            "version": pyroute2.__version__,
            "same_module": sys.modules["pyroute2"] is pyroute2,
        }))
        """
    )
    assert result["light_before"] is True
    assert result["same_class"] is True
    assert result["iproute"] == "pyroute2.iproute.linux"
    assert result["ndb"] == "pyroute2.ndb.main"
    assert result["version"]
    assert result["same_module"] is True


def test_a_package_imported_the_usual_way_first_is_left_alone() -> None:
    result = run_fresh(
        """
        import json, sys
        import pyroute2
        from bgp_speaker.adapters.netlink import light
        print(json.dumps({"installed": light.install(), "same": sys.modules["pyroute2"] is pyroute2}))
        """
    )
    assert result == {"installed": False, "same": True}
