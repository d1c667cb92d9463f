"""What the NAT gateway's own tables say is installed, as a pure value.

Kube-OVN's ``nat-gateway.sh`` installs, per EIP (IPv4 only: the gateway has no NATv6):

- FIP: ``-A EXCLUSIVE_DNAT -d EIP/32 -j DNAT --to-destination IP`` and
  ``-A EXCLUSIVE_SNAT -s IP/32 -j SNAT --to-source EIP``. Only both halves together make a FIP.
- DNAT: ``-A SHARED_DNAT -d EIP/32 -p PROTO -m PROTO --dport N -j DNAT --to-destination IP:PORT``.
- SNAT: ``-A SHARED_SNAT -s CIDR -o net1 -j SNAT --to-source EIP [--random-fully]``.
- share DNAT (nftables): table ``ip kube-ovn``, base chain ``prerouting`` (nat hook) with
  ``ip daddr . meta l4proto . th dport vmap @service-ips``; each element of the verdict map
  ``service-ips`` is ``EIP . PROTO . PORT : goto dnat-<hash>`` and that chain holds the DNAT rule.

The parsers read ``iptables-save -t nat`` text (legacy and nft backends print the same format)
and ``nft -j list table ip kube-ovn`` JSON. They never raise on unknown lines: rules we do not
recognise are ignored, because the view only answers "which EIPs have which kinds installed".
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address

NAT_CHAINS = ("EXCLUSIVE_DNAT", "SHARED_DNAT", "EXCLUSIVE_SNAT", "SHARED_SNAT")
#: The chains nat-gateway.sh's ``check_inited`` looks for.
INIT_CHAINS = ("SNAT_FILTER", "SHARED_SNAT")
NFT_TABLE = "kube-ovn"
NFT_BASE_CHAIN = "prerouting"
NFT_SERVICES_MAP = "service-ips"


class NatParseError(ValueError):
    """The input is not iptables-save text or nft JSON at all."""


class RuleKind(enum.StrEnum):
    FIP = "fip"
    DNAT = "dnat"
    SNAT = "snat"
    SHARE_DNAT = "share-dnat"


@dataclass(frozen=True, slots=True)
class NatView:
    """Which EIP addresses have which NAT rule kinds installed in the gateway."""

    #: ``legacy`` or ``nft`` (the iptables backend the chains were read from), or ``none``.
    backend: str
    #: EIP -> complete rule kinds installed for it.
    rules: Mapping[IPv4Address, frozenset[RuleKind]] = field(default_factory=dict)
    #: EIPs with only one half of a FIP (DNAT without SNAT or the reverse): not counted as installed.
    partial: frozenset[IPv4Address] = frozenset()
    #: True when nat-gateway.sh's ``init`` chains exist (SNAT_FILTER, SHARED_SNAT).
    initialized: bool = False

    def installed(self) -> frozenset[IPv4Address]:
        return frozenset(addr for addr, kinds in self.rules.items() if kinds)

    def kinds(self, address: object) -> frozenset[RuleKind]:
        if not isinstance(address, IPv4Address):
            return frozenset()
        return self.rules.get(address, frozenset())

    def digest(self) -> str:
        """Stable hash of the content, for cheap change detection between two reads."""
        parts = [self.backend, str(self.initialized)]
        parts += [f"{a}={','.join(sorted(k))}" for a, k in sorted(self.rules.items())]
        parts += [f"partial={a}" for a in sorted(self.partial)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "initialized": self.initialized,
            "rules": {str(a): sorted(k) for a, k in sorted(self.rules.items())},
            "partial": sorted(str(a) for a in self.partial),
        }


@dataclass(frozen=True, slots=True)
class IptablesNat:
    """The parts of one ``iptables-save -t nat`` dump that matter to us."""

    chains: frozenset[str]
    #: EIP -> internal IPs it is DNATed to (EXCLUSIVE_DNAT).
    exclusive_dnat: Mapping[IPv4Address, frozenset[str]]
    #: EIP -> internal sources SNATed to it (EXCLUSIVE_SNAT).
    exclusive_snat: Mapping[IPv4Address, frozenset[str]]
    shared_dnat: frozenset[IPv4Address]
    shared_snat: frozenset[IPv4Address]

    @property
    def initialized(self) -> bool:
        return all(chain in self.chains for chain in INIT_CHAINS)


def _address(text: str) -> IPv4Address | None:
    """``203.0.113.7``, ``203.0.113.7/32``, ``203.0.113.7:80`` or a range's first address."""
    head = re.split(r"[/:-]", text, maxsplit=1)[0]
    try:
        value = ip_address(head)
    except ValueError:
        return None
    return value if isinstance(value, IPv4Address) else None


def _host(text: str) -> IPv4Address | None:
    """A match like ``-d 203.0.113.7/32``: only a single host counts as an EIP match."""
    try:
        network = IPv4Network(text, strict=False)
    except ValueError:
        return None
    return network.network_address if network.prefixlen == 32 else None


def _options(tokens: list[str]) -> dict[str, str]:
    """Option -> value for the options we read (the last occurrence wins)."""
    wanted = {"-d", "-s", "-j", "--to-destination", "--to-source", "-o", "-p", "--dport"}
    found: dict[str, str] = {}
    for index, token in enumerate(tokens[:-1]):
        if token in wanted:
            found[token] = tokens[index + 1]
    return found


def parse_iptables_save(text: str) -> IptablesNat:
    """Parse ``iptables-save -t nat`` output (either backend). Raises :class:`NatParseError`
    when the text has no ``*nat`` table at all."""
    chains: set[str] = set()
    excl_dnat: dict[IPv4Address, set[str]] = {}
    excl_snat: dict[IPv4Address, set[str]] = {}
    shared_dnat: set[IPv4Address] = set()
    shared_snat: set[IPv4Address] = set()
    in_nat = seen_nat = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_nat = line == "*nat"
            seen_nat = seen_nat or in_nat
            continue
        if not in_nat:
            continue
        if line.startswith(":"):
            chains.add(line[1:].split()[0])
            continue
        if not line.startswith("-A "):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        chain = tokens[1]
        if chain not in NAT_CHAINS:
            continue
        opts = _options(tokens)
        target = opts.get("-j")
        if chain == "EXCLUSIVE_DNAT" and target == "DNAT":
            eip = _host(opts.get("-d", ""))
            if eip is not None and "--to-destination" in opts:
                excl_dnat.setdefault(eip, set()).add(opts["--to-destination"])
        elif chain == "EXCLUSIVE_SNAT" and target == "SNAT":
            eip = _address(opts.get("--to-source", ""))
            if eip is not None and "-s" in opts:
                excl_snat.setdefault(eip, set()).add(opts["-s"].removesuffix("/32"))
        elif chain == "SHARED_DNAT" and target == "DNAT":
            eip = _host(opts.get("-d", ""))
            if eip is not None and "--to-destination" in opts:
                shared_dnat.add(eip)
        elif chain == "SHARED_SNAT" and target == "SNAT":
            eip = _address(opts.get("--to-source", ""))
            if eip is not None:
                shared_snat.add(eip)
    if not seen_nat and text.strip():
        raise NatParseError("no *nat table in the iptables-save output")
    return IptablesNat(
        chains=frozenset(chains),
        exclusive_dnat={k: frozenset(v) for k, v in excl_dnat.items()},
        exclusive_snat={k: frozenset(v) for k, v in excl_snat.items()},
        shared_dnat=frozenset(shared_dnat),
        shared_snat=frozenset(shared_snat),
    )


def _chains_with_rules(objects: Iterable[Mapping[str, object]]) -> tuple[set[str], set[str], bool]:
    """(chains that exist, chains holding a dnat statement, base chain hooked with the vmap rule)."""
    chains: set[str] = set()
    dnat_chains: set[str] = set()
    base_hooked = False
    base_vmap = False
    for obj in objects:
        chain = obj.get("chain")
        if isinstance(chain, dict) and chain.get("table") == NFT_TABLE:
            chains.add(str(chain.get("name")))
            if chain.get("name") == NFT_BASE_CHAIN and chain.get("hook") == "prerouting":
                base_hooked = chain.get("type") == "nat"
        rule = obj.get("rule")
        if isinstance(rule, dict) and rule.get("table") == NFT_TABLE:
            text = json.dumps(rule.get("expr", []))
            if rule.get("chain") == NFT_BASE_CHAIN and f'"@{NFT_SERVICES_MAP}"' in text:
                base_vmap = True
            if '"dnat"' in text:
                dnat_chains.add(str(rule.get("chain")))
    return chains, dnat_chains, base_hooked and base_vmap


def parse_nft_share(text: str) -> frozenset[IPv4Address]:
    """EIPs with an installed share DNAT in ``nft -j list table ip kube-ovn`` output.

    An element counts only when the whole path exists: the hooked base chain with the vmap rule,
    the map element, and its target chain holding a DNAT rule. Empty text means "no table".
    Raises :class:`NatParseError` on text that is not nft JSON."""
    if not text.strip():
        return frozenset()
    try:
        document = json.loads(text)
        objects = document["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise NatParseError(f"not nft JSON output: {exc}") from None
    if not isinstance(objects, list):
        raise NatParseError("not nft JSON output: 'nftables' is not a list")
    objects = [o for o in objects if isinstance(o, dict)]
    chains, dnat_chains, hooked = _chains_with_rules(objects)
    if not hooked:
        return frozenset()
    found: set[IPv4Address] = set()
    for obj in objects:
        vmap = obj.get("map")
        if (
            not isinstance(vmap, dict)
            or vmap.get("table") != NFT_TABLE
            or vmap.get("name") != NFT_SERVICES_MAP
        ):
            continue
        for element in vmap.get("elem", []) or []:
            if not isinstance(element, list) or len(element) != 2:
                continue
            key, verdict = element
            concat = key.get("concat") if isinstance(key, dict) else None
            if not isinstance(concat, list) or not concat or not isinstance(verdict, dict):
                continue
            jump = verdict.get("goto") or verdict.get("jump")
            target = jump.get("target") if isinstance(jump, dict) else None
            eip = _address(str(concat[0]))
            if eip is not None and target in chains and target in dnat_chains:
                found.add(eip)
    return frozenset(found)


def build_view(
    *, backend: str, iptables: IptablesNat | None, share_dnat: Iterable[IPv4Address] = ()
) -> NatView:
    rules: dict[IPv4Address, set[RuleKind]] = {}
    partial: set[IPv4Address] = set()
    if iptables is not None:
        for eip, internals in iptables.exclusive_dnat.items():
            if internals & iptables.exclusive_snat.get(eip, frozenset()):
                rules.setdefault(eip, set()).add(RuleKind.FIP)
            else:
                partial.add(eip)
        partial.update(eip for eip in iptables.exclusive_snat if eip not in iptables.exclusive_dnat)
        for eip in iptables.shared_dnat:
            rules.setdefault(eip, set()).add(RuleKind.DNAT)
        for eip in iptables.shared_snat:
            rules.setdefault(eip, set()).add(RuleKind.SNAT)
    for eip in share_dnat:
        rules.setdefault(eip, set()).add(RuleKind.SHARE_DNAT)
    return NatView(
        backend=backend,
        rules={eip: frozenset(kinds) for eip, kinds in rules.items()},
        partial=frozenset(partial),
        initialized=iptables.initialized if iptables is not None else False,
    )


def parse(*, backend: str, iptables_save: str, nft_json: str = "") -> NatView:
    """Both reads of one gateway into one view."""
    return build_view(
        backend=backend,
        iptables=parse_iptables_save(iptables_save),
        share_dnat=parse_nft_share(nft_json),
    )
