"""Kube-OVN objects shaped exactly as kube-ovn-controller writes them, and a scripted controller.

Shapes (group ``kubeovn.io/v1``, all cluster-scoped, status subresource):

- IptablesEIP: spec ``v4ip``/``v6ip``/``macAddress``/``natGwDp``/``qosPolicy``/``externalSubnet``/
  ``namespace``; status ``ready``/``ip``/``nat``/``redo``/``qosPolicy``/``conditions`` (never set);
  labels ``ovn.kubernetes.io/subnet``, ``ovn.kubernetes.io/eip_v4_ip``,
  ``ovn.kubernetes.io/vpc-nat-gw-name`` (+ ``ovn.kubernetes.io/qos``).
- FIP/SNAT/DNAT rules: spec ``eip`` + kind fields; status ``ready``/``v4ip``/``v6ip``/``natGwDp``/
  ``redo`` + kind fields; labels ``ovn.kubernetes.io/vpc-nat-gw-name``,
  ``ovn.kubernetes.io/eip_v4_ip`` (DNAT also ``ovn.kubernetes.io/vpc_dnat_eport``); annotation
  ``ovn.kubernetes.io/vpc_eip=<eip name>``.
- every kind carries the finalizer ``kubeovn.io/kube-ovn-controller``.
- ``status.nat`` is a comma list of the rule kinds using the EIP, in the order dnat, fip, snat.
- ``status.redo`` is a timestamp in Go's ``2006-01-02T15:04:05`` layout.

:class:`Controller` replays the controller's write order, including the fact that a rule is
marked ``status.ready=true`` *before* its labels are written, and the redo cycle
(``ready=false`` with a new ``redo``, then ``ready=true``) after a gateway pod restart.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from tests.kubeapi.server import ApiServer

Obj = dict[str, Any]

API_VERSION = "kubeovn.io/v1"
FINALIZER = "kubeovn.io/kube-ovn-controller"
LABEL_GW = "ovn.kubernetes.io/vpc-nat-gw-name"
LABEL_EIP_V4 = "ovn.kubernetes.io/eip_v4_ip"
LABEL_SUBNET = "ovn.kubernetes.io/subnet"
LABEL_QOS = "ovn.kubernetes.io/qos"
LABEL_VPC = "ovn.kubernetes.io/vpc"
LABEL_DNAT_EPORT = "ovn.kubernetes.io/vpc_dnat_eport"
ANNOTATION_VPC_EIP = "ovn.kubernetes.io/vpc_eip"
ANNOTATION_BGP = "ovn.kubernetes.io/bgp"
DEFAULT_EXTERNAL_SUBNET = "ovn-vpc-external-network"
NAT_ORDER = ("dnat", "fip", "snat")

KIND_OF = {"fip": "IptablesFIPRule", "snat": "IptablesSnatRule", "dnat": "IptablesDnatRule"}
PLURAL_OF = {"fip": "iptables-fip-rules", "snat": "iptables-snat-rules", "dnat": "iptables-dnat-rules"}


def redo_stamp(when: datetime.datetime | None = None) -> str:
    return (when or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S")


def nat_list(kinds: set[str]) -> str:
    return ",".join(k for k in NAT_ORDER if k in kinds)


def gateway(
    name: str,
    *,
    vpc: str = "vpc1",
    subnet: str = "vpc1-subnet1",
    lan_ip: str = "10.0.1.254",
    external_subnet: str = DEFAULT_EXTERNAL_SUBNET,
    ready: bool = True,
) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "VpcNatGateway",
        "metadata": {
            "name": name,
            "finalizers": [FINALIZER],
            "labels": {LABEL_SUBNET: subnet, LABEL_VPC: vpc},
        },
        "spec": {
            "namespace": "kube-system",
            "vpc": vpc,
            "subnet": subnet,
            "lanIp": lan_ip,
            "externalSubnets": [external_subnet],
            "replicas": 1,
            "selector": [],
            "tolerations": [],
            "affinity": {},
            "qosPolicy": "",
            "bgpSpeaker": {"enabled": False},
            "bfd": {"enabled": False, "minRX": 1000, "minTX": 1000, "multiplier": 3},
            "noDefaultEIP": False,
        },
        "status": {
            "ready": ready,
            "lanIp": lan_ip,
            "externalSubnets": [external_subnet],
            "replicas": 1,
            "qosPolicy": "",
            "selector": [],
            "workload": {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": f"vpc-nat-gw-{name}",
                "nodes": ["node-1"],
            },
        },
    }


def eip(
    name: str,
    *,
    gateway: str,
    v4ip: str = "",
    v6ip: str = "",
    ready: bool = True,
    nat: str = "",
    redo: str = "",
    external_subnet: str = DEFAULT_EXTERNAL_SUBNET,
    annotations: dict[str, str] | None = None,
    labelled: bool = True,
    label_gateway: str | None = None,
    mac: str = "00:00:00:8e:6a:01",
) -> Obj:
    """An IptablesEIP in its final, controller-written state (``labelled=False``: before labels)."""
    labels: dict[str, str] = {}
    if labelled:
        labels = {
            LABEL_SUBNET: external_subnet,
            LABEL_EIP_V4: v4ip,
            LABEL_GW: gateway if label_gateway is None else label_gateway,
        }
    return {
        "apiVersion": API_VERSION,
        "kind": "IptablesEIP",
        "metadata": {
            "name": name,
            "finalizers": [FINALIZER],
            "labels": labels,
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "v4ip": v4ip,
            "v6ip": v6ip,
            "macAddress": mac,
            "natGwDp": gateway,
            "qosPolicy": "",
            "externalSubnet": external_subnet,
            "namespace": "kube-system",
        },
        "status": {"ready": ready, "ip": v4ip, "nat": nat, "redo": redo, "qosPolicy": ""},
    }


def rule(
    kind: str,
    name: str,
    *,
    eip_name: str,
    gateway: str,
    v4ip: str,
    v6ip: str = "",
    ready: bool = True,
    labelled: bool = True,
    redo: str = "",
    internal: str = "192.168.0.10",
    external_port: str = "8080",
    protocol: str = "tcp",
    internal_port: str = "80",
) -> Obj:
    """A FIP/SNAT/DNAT rule as the controller leaves it (``labelled=False``: ready, no labels yet)."""
    spec: Obj = {"eip": eip_name}
    status: Obj = {"ready": ready, "v4ip": v4ip, "v6ip": v6ip, "natGwDp": gateway, "redo": redo}
    labels: dict[str, str] = {LABEL_GW: gateway, LABEL_EIP_V4: v4ip} if labelled else {}
    if kind == "fip":
        spec["internalIp"] = internal
        status["internalIp"] = internal
    elif kind == "snat":
        cidr = internal if "/" in internal else f"{internal}/32"
        spec["internalCIDR"] = cidr
        status["internalCIDR"] = cidr
    elif kind == "dnat":
        spec.update(
            externalPort=external_port,
            protocol=protocol,
            internalIp=internal,
            internalPort=internal_port,
            type="exclusive",
        )
        status.update(
            externalPort=external_port, protocol=protocol, internalIp=internal, internalPort=internal_port
        )
        if labelled:
            labels[LABEL_DNAT_EPORT] = external_port
    else:
        raise ValueError(f"unknown rule kind {kind!r}")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_OF[kind],
        "metadata": {
            "name": name,
            "finalizers": [FINALIZER],
            "labels": labels,
            "annotations": {ANNOTATION_VPC_EIP: eip_name} if labelled else {},
        },
        "spec": spec,
        "status": status,
    }


class Controller:
    """Replays kube-ovn-controller's writes, in its order, against an :class:`ApiServer`.

    ``pause`` seconds are slept between the individual writes of one operation so that a
    watcher can observe every intermediate state.
    """

    def __init__(self, server: ApiServer, *, pause: float = 0.0) -> None:
        self.server = server
        self.pause = pause
        self.redo = redo_stamp()

    async def _step(self) -> None:
        await asyncio.sleep(self.pause)

    async def create_gateway(self, name: str, **kwargs: Any) -> None:
        self.server.apply(gateway(name, **kwargs))

    async def create_eip(
        self,
        name: str,
        *,
        gateway: str,
        v4ip: str = "",
        v6ip: str = "",
        annotations: dict[str, str] | None = None,
    ) -> None:
        """User creates the EIP; the controller adds its finalizer, fills spec and labels, then
        readies it. A v6-only EIP is never made ready (the iptables NAT gateway has no NATv6)."""
        final = eip(name, gateway=gateway, v4ip=v4ip, v6ip=v6ip, annotations=annotations, redo=self.redo)
        user = {
            "apiVersion": API_VERSION,
            "kind": "IptablesEIP",
            "metadata": {"name": name, "annotations": dict(annotations or {})},
            "spec": {
                "natGwDp": gateway,
                "externalSubnet": DEFAULT_EXTERNAL_SUBNET,
                "v4ip": v4ip,
                "v6ip": v6ip,
            },
        }
        self.server.create(user, keep_status=False)
        await self._step()
        self.server.patch(
            "iptables-eips", name, {"metadata": {"finalizers": [FINALIZER]}, "spec": final["spec"]}
        )
        await self._step()
        self.server.patch("iptables-eips", name, {"metadata": {"labels": final["metadata"]["labels"]}})
        await self._step()
        ready = bool(v4ip)
        status = {**final["status"], "ready": ready}
        self.server.patch("iptables-eips", name, {"status": status}, status=True)

    async def create_rule(self, kind: str, name: str, *, eip_name: str, **kwargs: Any) -> None:
        """User creates the rule; the controller readies it, THEN writes labels and annotation,
        THEN records the kind in the EIP's ``status.nat``."""
        target = self.server.get("iptables-eips", eip_name)
        gw = target["spec"]["natGwDp"]
        v4ip = target["spec"].get("v4ip", "")
        final = rule(kind, name, eip_name=eip_name, gateway=gw, v4ip=v4ip, redo=self.redo, **kwargs)
        self.server.create(
            {
                "apiVersion": API_VERSION,
                "kind": KIND_OF[kind],
                "metadata": {"name": name},
                "spec": final["spec"],
            },
            keep_status=False,
        )
        await self._step()
        self.server.patch(PLURAL_OF[kind], name, {"metadata": {"finalizers": [FINALIZER]}})
        await self._step()
        self.server.patch(PLURAL_OF[kind], name, {"status": final["status"]}, status=True)
        await self._step()
        meta = final["metadata"]
        self.server.patch(
            PLURAL_OF[kind],
            name,
            {"metadata": {"labels": meta["labels"], "annotations": meta["annotations"]}},
        )
        await self._step()
        self._refresh_nat(eip_name)

    async def delete_rule(self, kind: str, name: str) -> None:
        """User deletes the rule; the controller removes it from the gateway, refreshes the
        EIP's ``status.nat``, then drops its finalizer (the object disappears)."""
        eip_name = self.server.get(PLURAL_OF[kind], name)["spec"]["eip"]
        self.server.delete(PLURAL_OF[kind], name)
        await self._step()
        self.server.patch(PLURAL_OF[kind], name, {"metadata": {"finalizers": None}})
        await self._step()
        self._refresh_nat(eip_name)

    async def delete_eip(self, name: str) -> None:
        self.server.delete("iptables-eips", name)
        await self._step()
        self.server.patch("iptables-eips", name, {"metadata": {"finalizers": None}})

    def _refresh_nat(self, eip_name: str) -> None:
        kinds = {
            kind
            for kind, plural in PLURAL_OF.items()
            for obj in self.server.list(plural)
            if obj["spec"].get("eip") == eip_name and not obj["metadata"].get("deletionTimestamp")
        }
        try:
            self.server.patch("iptables-eips", eip_name, {"status": {"nat": nat_list(kinds)}}, status=True)
        except Exception:  # the EIP may be gone already
            pass

    async def redo_cycle(self, gateway: str, *, unready_for: float = 0.0) -> str:
        """Gateway pod re-created: every EIP and rule of it goes ``ready=false`` with a new
        ``redo``, is re-applied, then goes ``ready=true`` again. Returns the new stamp."""
        self.redo = redo_stamp(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1))
        touched: list[tuple[str, str]] = []
        for plural in ("iptables-eips", *PLURAL_OF.values()):
            for obj in self.server.list(plural):
                owner = (
                    obj["spec"].get("natGwDp") if plural == "iptables-eips" else obj["status"].get("natGwDp")
                )
                if owner == gateway:
                    self.server.patch(
                        plural,
                        obj["metadata"]["name"],
                        {"status": {"ready": False, "redo": self.redo}},
                        status=True,
                    )
                    touched.append((plural, obj["metadata"]["name"]))
        await asyncio.sleep(unready_for)
        for plural, name in touched:
            if plural == "iptables-eips" and not self.server.get(plural, name)["spec"].get("v4ip"):
                continue  # a v6-only EIP never becomes ready
            self.server.patch(plural, name, {"status": {"ready": True}}, status=True)
        return self.redo
