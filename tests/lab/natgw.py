"""A stand-in for Kube-OVN's ``nat-gateway.sh``, run against one gateway network namespace.

It issues the same ``iptables`` / ``nft`` / ``ip`` commands, with the same chains and rule shapes, as
the script Kube-OVN's controller execs in the ``vpc-nat-gw`` container (``bash nat-gateway.sh <op>
<rule>...``), so the speaker's data-plane reader and the interconnect routing manager are tested
against what a real gateway holds. Our own code, written from the documented behaviour:

- ``init`` creates, in the nat table, PREROUTING -> DNAT_FILTER -> EXCLUSIVE_DNAT, SHARED_DNAT and
  POSTROUTING -> SNAT_FILTER -> EXCLUSIVE_SNAT, SHARED_SNAT, HAIRPIN_SNAT; in the mangle table
  PREROUTING -> VPC_MARK, which marks packets arriving on the VPC interface with 0x1/0x1. It runs
  once (skipped when DNAT_FILTER exists) and sends gratuitous ARP for net1's IPv4 addresses.
- ``eip-add <eip>/<len>`` puts the EIP on net1 WITH its subnet's prefix length (the kernel then adds
  an on-link route for the whole subnet), ARPs it, adds the per-EIP hairpin rule and re-applies
  ``default via $GATEWAY_V4 dev net1 onlink``.
- ``floating-ip-add``, ``dnat-add``, ``snat-add`` (kept sorted longest prefix first) and the
  ``nft-dnat-map-add`` share-DNAT identities in table ``ip kube-ovn``.

The iptables backend is chosen explicitly (``iptables-legacy`` or ``iptables-nft`` binaries), so
one test machine can exercise both. ``arping`` and ``conntrack`` are skipped when not installed.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

NFT_TABLE = "kube-ovn"
NFT_BASE_CHAIN = "prerouting"
NFT_SERVICES_MAP = "service-ips"

NAT_CHAINS = (
    "DNAT_FILTER",
    "SNAT_FILTER",
    "EXCLUSIVE_DNAT",
    "EXCLUSIVE_SNAT",
    "HAIRPIN_SNAT",
    "SHARED_DNAT",
    "SHARED_SNAT",
)


class Backend(enum.StrEnum):
    LEGACY = "legacy"
    NFT = "nft"


class NatGwError(RuntimeError):
    """A command failed the way ``exec_cmd`` in nat-gateway.sh fails: the message names it."""


def share_chain_name(eip: str, port: int | str, proto: str) -> str:
    """Per-identity chain of a share DNAT: ``dnat-`` + first 12 hex digits of md5(eip:port:proto)."""
    digest = hashlib.md5(f"{eip}:{port}:{proto}".encode(), usedforsecurity=False).hexdigest()
    return f"dnat-{digest[:12]}"


@dataclass
class NatGateway:
    """The NAT-rule side of one gateway namespace (``netns`` is the kernel name of the namespace)."""

    netns: str
    backend: Backend = Backend.LEGACY
    vpc_interface: str = "eth0"
    external_interface: str = "net1"
    gateway_v4: str | None = None
    timeout: float = 30.0
    #: Every command issued, in order, for failure messages.
    log: list[str] = field(default_factory=list)

    # --- plumbing ----------------------------------------------------------------------

    @property
    def iptables(self) -> str:
        return f"iptables-{self.backend.value}"

    @property
    def iptables_save(self) -> str:
        return f"iptables-{self.backend.value}-save"

    def _exec(self, argv: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
        self.log.append(" ".join(argv))
        proc = subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            capture_output=True,
            text=True,
            timeout=self.timeout,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NatGwError(f"failed to exec command {' '.join(argv)!r}: {proc.stderr.strip()}")
        return proc.stdout

    def _ipt(self, *args: str, table: str = "nat", check: bool = True) -> str:
        return self._exec([self.iptables, "-w", "-t", table, *args], check=check)

    def _ipt_exists(self, *rule: str, table: str = "nat") -> bool:
        self.log.append(" ".join([self.iptables, "-t", table, "-C", *rule]))
        proc = subprocess.run(
            ["ip", "netns", "exec", self.netns, self.iptables, "-w", "-t", table, "-C", *rule],
            capture_output=True,
            text=True,
            timeout=self.timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return proc.returncode == 0

    def save(self, table: str = "nat") -> str:
        """``iptables-save -t <table>`` of this gateway's backend."""
        return self._exec([self.iptables_save, "-t", table])

    def _chain_rules(self, chain: str) -> list[str]:
        return [line for line in self.save().splitlines() if line.startswith(f"-A {chain} ")]

    def _check_inited(self) -> None:
        text = self.save()
        if ":SNAT_FILTER" not in text or "-A SNAT_FILTER -j SHARED_SNAT" not in text:
            raise NatGwError("nat gateway not initialized")

    def _arping(self, address: str) -> None:
        if shutil.which("arping") is None:
            return
        self._exec(["arping", "-I", self.external_interface, "-c", "3", "-U", address], check=False)

    def _conntrack_flush(self, *args: str) -> None:
        if shutil.which("conntrack") is None:
            return
        self._exec(["conntrack", "-D", *args], check=False)

    # --- commands -----------------------------------------------------------------------

    def run(self, op: str, *rules: str) -> None:
        """``nat-gateway.sh <op> <rule>...`` with the script's argument formats."""
        handlers = {
            "init": lambda r: self.init(),
            "eip-add": self.eip_add,
            "eip-del": self.eip_del,
            "floating-ip-add": lambda r: self.floating_ip_add(*r.split(",")[:2]),
            "floating-ip-del": lambda r: self.floating_ip_del(r.split(",")[0]),
            "dnat-add": lambda r: self.dnat_add(*r.split(",")[:5]),
            "dnat-del": lambda r: self.dnat_del(*r.split(",")[:3]),
            "snat-add": lambda r: self.snat_add(
                *r.split(",")[:2], random_fully="--random-fully" in r.split(",")[2:]
            ),
            "snat-del": lambda r: self.snat_del(*r.split(",")[:2]),
            "nft-dnat-map-add": self._nft_add_rule,
            "nft-dnat-map-del": lambda r: self.nft_dnat_map_del(*r.split(",")[:3]),
        }
        if op not in handlers:
            raise NatGwError(f"unknown operation {op!r}")
        if op == "init":
            self.init()
            return
        for rule in rules:
            handlers[op](rule)

    def init(self) -> None:
        if "DNAT_FILTER" in self.save():
            return  # run once is enough
        for chain in NAT_CHAINS:
            self._ipt("-N", chain)
        self._ipt("-A", "PREROUTING", "-j", "DNAT_FILTER")
        self._ipt("-A", "DNAT_FILTER", "-j", "EXCLUSIVE_DNAT")
        self._ipt("-A", "DNAT_FILTER", "-j", "SHARED_DNAT")
        self._ipt("-A", "POSTROUTING", "-j", "SNAT_FILTER")
        self._ipt("-A", "SNAT_FILTER", "-j", "EXCLUSIVE_SNAT")
        self._ipt("-A", "SNAT_FILTER", "-j", "SHARED_SNAT")
        self._ipt("-A", "SNAT_FILTER", "-j", "HAIRPIN_SNAT")
        self._ipt("-N", "VPC_MARK", table="mangle")
        self._ipt("-A", "PREROUTING", "-j", "VPC_MARK", table="mangle")
        self._ipt(
            "-A", "VPC_MARK", "-i", self.vpc_interface, "-j", "MARK", "--set-xmark", "0x1/0x1", table="mangle"
        )
        for address in self._external_v4():
            self._arping(address)

    def _external_v4(self) -> list[str]:
        out = self._exec(["ip", "-4", "-o", "addr", "show", "dev", self.external_interface])
        return [m.group(1) for m in re.finditer(r"inet (\S+)/\d+", out)]

    def _hairpin_rule(self, eip: str) -> list[str]:
        return [
            "HAIRPIN_SNAT", "-m", "mark", "--mark", "0x1/0x1", "-o", self.vpc_interface,
            "-m", "conntrack", "--ctstate", "DNAT", "--ctorigdst", eip,
            "-j", "SNAT", "--to-source", eip, "--random-fully",
        ]  # fmt: skip

    def eip_add(self, eip_cidr: str) -> None:
        """``eip-add <eip>/<prefix length of the EIP's subnet>``."""
        self._check_inited()
        eip = eip_cidr.split("/")[0]
        self._exec(["ip", "addr", "replace", eip_cidr, "dev", self.external_interface])
        self._arping(eip)
        if not self._ipt_exists(*self._hairpin_rule(eip)):
            self._ipt("-A", *self._hairpin_rule(eip))
        if self.gateway_v4:
            self._exec(["ip", "route", "replace", "default", "via", self.gateway_v4,
                        "dev", self.external_interface, "onlink"])  # fmt: skip

    def eip_del(self, eip_cidr: str) -> None:
        self._check_inited()
        eip = eip_cidr.split("/")[0]
        out = self._exec(["ip", "-4", "-o", "addr", "show", "dev", self.external_interface])
        for match in re.finditer(r"inet (\S+)", out):
            if match.group(1).split("/")[0] == eip:
                self._exec(["ip", "addr", "del", match.group(1), "dev", self.external_interface])
        if self._ipt_exists(*self._hairpin_rule(eip)):
            self._ipt("-D", *self._hairpin_rule(eip))

    def floating_ip_add(self, eip: str, internal_ip: str) -> None:
        self._check_inited()
        eip = eip.split("/")[0]
        for line in self._chain_rules("EXCLUSIVE_DNAT"):
            if re.search(rf"-d {re.escape(eip)}/32 ", line) and "--to-destination" in line:
                bound = line.split("--to-destination ")[1].split()[0]
                if bound != internal_ip:
                    raise NatGwError(f"eip {eip} is already bound to {bound}, not {internal_ip}")
                return  # already there
        self._ipt("-A", "EXCLUSIVE_DNAT", "-d", eip, "-j", "DNAT", "--to-destination", internal_ip)
        self._ipt("-A", "EXCLUSIVE_SNAT", "-s", internal_ip, "-j", "SNAT", "--to-source", eip)

    def floating_ip_del(self, eip: str) -> None:
        self._check_inited()
        eip = eip.split("/")[0]
        for line in self._chain_rules("EXCLUSIVE_DNAT"):
            if re.search(rf"-d {re.escape(eip)}/32 ", line) and "--to-destination" in line:
                internal_ip = line.split("--to-destination ")[1].split()[0]
                self._ipt("-D", "EXCLUSIVE_DNAT", "-d", eip, "-j", "DNAT", "--to-destination", internal_ip)
                self._ipt("-D", "EXCLUSIVE_SNAT", "-s", internal_ip, "-j", "SNAT", "--to-source", eip)
                self._conntrack_flush("-d", eip)

    def _dnat_rule(self, eip: str, port: str, proto: str, internal_ip: str, internal_port: str) -> list[str]:
        return ["SHARED_DNAT", "-p", proto, "-d", eip, "--dport", str(port),
                "-j", "DNAT", "--to-destination", f"{internal_ip}:{internal_port}"]  # fmt: skip

    def dnat_add(self, eip: str, port: str, proto: str, internal_ip: str, internal_port: str) -> None:
        self._check_inited()
        rule = self._dnat_rule(eip.split("/")[0], port, proto, internal_ip, internal_port)
        if not self._ipt_exists(*rule):
            self._ipt("-A", *rule)

    def dnat_del(self, eip: str, port: str, proto: str) -> None:
        """``dnat-del <eip>,<extPort>,<proto>``: the identity is (eip, port, proto)."""
        self._check_inited()
        eip = eip.split("/")[0]
        for line in self._chain_rules("SHARED_DNAT"):
            if (
                re.search(rf"-d {re.escape(eip)}/32 ", line)
                and f"-p {proto} " in line
                and re.search(rf"--dport {port}( |$)", line)
            ):
                self._ipt("-D", *line.split()[1:])
                self._conntrack_flush("-d", eip, "-p", proto, "--dport", str(port))

    def snat_add(self, eip: str, cidr: str, *, random_fully: bool = False) -> None:
        """Insert so that SHARED_SNAT stays sorted longest prefix first."""
        self._check_inited()
        eip = eip.split("/")[0]
        network = ipaddress.ip_network(cidr, strict=False)
        rules = self._chain_rules("SHARED_SNAT")
        position = len(rules) + 1
        for index, line in enumerate(rules, start=1):
            match = re.search(r"-s (\S+)", line)
            if match is None:
                continue
            existing = ipaddress.ip_network(match.group(1), strict=False)
            if existing == network and re.search(rf"--to-source {re.escape(eip)}( |$)", line):
                return  # already there
            if existing.prefixlen < network.prefixlen and position > len(rules):
                position = index
        extra = ["--random-fully"] if random_fully else []
        self._ipt("-I", "SHARED_SNAT", str(position), "-o", self.external_interface, "-s", cidr,
                  "-j", "SNAT", "--to-source", eip, *extra)  # fmt: skip

    def snat_del(self, eip: str, cidr: str) -> None:
        self._check_inited()
        eip = eip.split("/")[0]
        network = ipaddress.ip_network(cidr, strict=False)
        for line in self._chain_rules("SHARED_SNAT"):
            match = re.search(r"-s (\S+)", line)
            if (
                match
                and ipaddress.ip_network(match.group(1), strict=False) == network
                and re.search(rf"--to-source {re.escape(eip)}( |$)", line)
            ):
                self._ipt("-D", *line.split()[1:])

    # --- share DNAT in nftables -----------------------------------------------------------

    def _nft(self, script: str) -> None:
        self._exec(["nft", "-f", "-"], stdin=script)

    def _nft_add_rule(self, rule: str) -> None:
        eip, port, proto, backends = rule.split(",", 3)
        self.nft_dnat_map_add(eip, port, proto, backends.split("@"))

    def nft_dnat_map_add(self, eip: str, port: str | int, proto: str, backends: Sequence[str]) -> None:
        """``nft-dnat-map-add eip,dport,proto,ip1:port1@ip2:port2``: one atomic ``nft -f`` batch."""
        eip = eip.split("/")[0]
        chain = share_chain_name(eip, port, proto)
        targets = ", ".join(
            f"{i} : {backend.rsplit(':', 1)[0]} . {backend.rsplit(':', 1)[1]}"
            for i, backend in enumerate(sorted(set(backends)))
        )
        base_exists = (
            subprocess.run(
                ["ip", "netns", "exec", self.netns, "nft", "list", "chain", "ip", NFT_TABLE, NFT_BASE_CHAIN],
                capture_output=True, text=True, timeout=self.timeout, check=False, stdin=subprocess.DEVNULL,
            ).returncode == 0
        )  # fmt: skip
        lines = [
            f"add table ip {NFT_TABLE}",
            f"add map ip {NFT_TABLE} {NFT_SERVICES_MAP} "
            "{ type ipv4_addr . inet_proto . inet_service : verdict; }",
            f"add chain ip {NFT_TABLE} {NFT_BASE_CHAIN} "
            "{ type nat hook prerouting priority -150; policy accept; }",
        ]
        if not base_exists:
            lines.append(
                f"add rule ip {NFT_TABLE} {NFT_BASE_CHAIN} ip daddr . meta l4proto . th dport "
                f"vmap @{NFT_SERVICES_MAP}"
            )
        lines += [
            f"add chain ip {NFT_TABLE} {chain}",
            f"flush chain ip {NFT_TABLE} {chain}",
            f"add rule ip {NFT_TABLE} {chain} meta l4proto {proto} "
            f"dnat ip to numgen random mod {len(set(backends))} map {{ {targets} }}",
            f"add element ip {NFT_TABLE} {NFT_SERVICES_MAP} {{ {eip} . {proto} . {port} : goto {chain} }}",
        ]
        self.log.append("nft -f - <<< " + " ; ".join(lines))
        self._nft("\n".join(lines) + "\n")

    def nft_dnat_map_del(self, eip: str, port: str | int, proto: str) -> None:
        eip = eip.split("/")[0]
        chain = share_chain_name(eip, port, proto)
        listed = subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "list", "map", "ip", NFT_TABLE, NFT_SERVICES_MAP],
            capture_output=True, text=True, timeout=self.timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        lines = []
        if listed.returncode == 0 and f"goto {chain}" in listed.stdout:
            lines.append(f"delete element ip {NFT_TABLE} {NFT_SERVICES_MAP} {{ {eip} . {proto} . {port} }}")
        chain_listed = subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "list", "chain", "ip", NFT_TABLE, chain],
            capture_output=True, text=True, timeout=self.timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if chain_listed.returncode == 0:
            lines += [f"flush chain ip {NFT_TABLE} {chain}", f"delete chain ip {NFT_TABLE} {chain}"]
        if lines:
            self.log.append("nft -f - <<< " + " ; ".join(lines))
            self._nft("\n".join(lines) + "\n")
        self._conntrack_flush("-d", eip, "-p", proto, "--dport", str(port))
