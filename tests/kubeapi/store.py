"""The object store behind the API server double: resources, resourceVersions, history.

It behaves like kube-apiserver over etcd where tests can observe it:

- one cluster-wide, monotonically increasing resourceVersion; every write bumps it;
- a bounded history of change events per write, so that a watch can resume from any
  retained resourceVersion; :meth:`Store.compact` drops the history and makes every older
  resourceVersion "too old" (410 Gone), exactly like an etcd compaction;
- finalizers: deleting an object that has finalizers only sets ``deletionTimestamp``;
  the object goes away when the last finalizer is removed;
- the ``status`` subresource: writes to the main resource keep the stored status, writes
  to ``/status`` keep everything else (only for kinds that declare the subresource).
"""

from __future__ import annotations

import copy
import datetime
import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KUBEOVN = "kubeovn.io"
RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType(KUBEOVN, "v1", "iptables-eips", "IptablesEIP", False, True),
    ResourceType(KUBEOVN, "v1", "iptables-fip-rules", "IptablesFIPRule", False, True),
    ResourceType(KUBEOVN, "v1", "iptables-snat-rules", "IptablesSnatRule", False, True),
    ResourceType(KUBEOVN, "v1", "iptables-dnat-rules", "IptablesDnatRule", False, True),
    ResourceType(KUBEOVN, "v1", "vpc-nat-gateways", "VpcNatGateway", False, True),
    ResourceType(KUBEOVN, "v1", "subnets", "Subnet", False, True),
    ResourceType("", "v1", "events", "Event", True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True),
    ResourceType("", "v1", "secrets", "Secret", True),
)


class ApiError(Exception):
    """Rendered by the server as a ``Status`` object with this code and reason."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def gone(rv: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {rv} ({oldest})")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors ----------------------------------------------------------------------------------


def _path_value(obj: Obj, dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def field_matcher(selector: str | None) -> Callable[[Obj], bool]:
    """``a.b=x,c!=y`` (also ``==``): equality on dotted paths, as the API server does."""
    terms: list[tuple[str, str, bool]] = []
    for raw in (selector or "").split(","):
        raw = raw.strip()
        if not raw:
            continue
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), value.strip(), False))
        else:
            key, value = raw.replace("==", "=").split("=", 1)
            terms.append((key.strip(), value.strip(), True))
    return lambda obj: all((_path_value(obj, k) == v) is eq for k, v, eq in terms)


def label_matcher(selector: str | None) -> Callable[[Obj], bool]:
    """``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    text = selector or ""
    # Split on commas that are not inside parentheses.
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        if " notin " in raw or " in " in raw:
            negate = " notin " in raw
            key, values = raw.split(" notin " if negate else " in ", 1)
            allowed = {v.strip() for v in values.strip().strip("()").split(",")}
            k = key.strip()
            checks.append(lambda labels, k=k, a=allowed, n=negate: (labels.get(k) in a) != n)
        elif "!=" in raw:
            k, v = (s.strip() for s in raw.split("!=", 1))
            checks.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in raw:
            k, v = (s.strip() for s in raw.replace("==", "=").split("=", 1))
            checks.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif raw.startswith("!"):
            k = raw[1:].strip()
            checks.append(lambda labels, k=k: k not in labels)
        else:
            checks.append(lambda labels, k=raw: k in labels)

    def match(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return match


# --- patches ------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge: our kinds have no lists to merge)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902: add, replace, remove, test (enough for what clients send)."""
    doc = copy.deepcopy(target)
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
    return doc


# --- the store ----------------------------------------------------------------------------------


@dataclass
class Change:
    rv: int
    rtype: ResourceType
    type: str  # ADDED / MODIFIED / DELETED
    obj: Obj
    old: Obj | None


Listener = Callable[[Change], None]


@dataclass
class Store:
    types: dict[str, ResourceType] = field(default_factory=lambda: {t.plural: t for t in RESOURCE_TYPES})
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    history: list[Change] = field(default_factory=list)
    history_limit: int = 100_000
    rv: int = 1
    #: Watches and exact lists from below this resourceVersion get 410 Gone.
    oldest_rv: int = 1
    listeners: set[Listener] = field(default_factory=set)
    _uids: Iterator[int] = field(default_factory=itertools.count)

    def rtype(self, plural: str) -> ResourceType:
        try:
            return self.types[plural]
        except KeyError:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({plural})"
            ) from None

    # -- reads --

    def items(self, rtype: ResourceType, namespace: str | None = None) -> list[Obj]:
        return [
            obj
            for (plural, ns, _), obj in self.objects.items()
            if plural == rtype.plural and (namespace is None or ns == namespace)
        ]

    def get(self, rtype: ResourceType, name: str, namespace: str = "") -> Obj:
        obj = self.objects.get((rtype.plural, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rtype.plural}.{rtype.group or "core"} "{name}" not found')
        return obj

    def changes_since(self, rtype: ResourceType, rv: int) -> list[Change]:
        if rv < self.oldest_rv:
            raise gone(rv, self.oldest_rv)
        return [c for c in self.history if c.rv > rv and c.rtype == rtype]

    # -- writes --

    def _commit(self, rtype: ResourceType, kind: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        key = (rtype.plural, meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        change = Change(self.rv, rtype, kind, copy.deepcopy(obj), old)
        self.history.append(change)
        if len(self.history) > self.history_limit:
            dropped = self.history[: len(self.history) - self.history_limit]
            del self.history[: len(dropped)]
            self.oldest_rv = dropped[-1].rv
        for listener in list(self.listeners):
            listener(change)
        return copy.deepcopy(obj)

    def create(
        self, rtype: ResourceType, body: Obj, *, namespace: str = "", keep_status: bool = False
    ) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name: Required value")
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        if rtype.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        key = (rtype.plural, meta.get("namespace", ""), meta["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{rtype.plural} "{meta["name"]}" already exists')
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        meta["uid"] = str(uuid.UUID(int=next(self._uids) + 1))
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        if rtype.status_subresource and not keep_status:
            obj.pop("status", None)
        return self._commit(rtype, "ADDED", obj, None)

    def replace(
        self, rtype: ResourceType, name: str, body: Obj, *, namespace: str = "", subresource: str = ""
    ) -> Obj:
        old = self.get(rtype, name, namespace)
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )
        new = copy.deepcopy(body)
        if rtype.status_subresource and subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif rtype.status_subresource and subresource != "all":
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for key in ("name", "uid", "creationTimestamp", "deletionTimestamp", "namespace"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        generation = old_meta.get("generation", 1)
        meta["generation"] = generation + 1 if new.get("spec") != old.get("spec") else generation
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._commit(rtype, "DELETED", new, copy.deepcopy(old))
        return self._commit(rtype, "MODIFIED", new, copy.deepcopy(old))

    def patch(
        self,
        rtype: ResourceType,
        name: str,
        patch: Any,
        *,
        content_type: str,
        namespace: str = "",
        subresource: str = "",
    ) -> Obj:
        old = self.get(rtype, name, namespace)
        if content_type.startswith("application/json-patch+json"):
            new = json_patch(old, patch)
        else:
            new = merge_patch(old, patch)
        new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.replace(rtype, name, new, namespace=namespace, subresource=subresource)

    def delete(self, rtype: ResourceType, name: str, *, namespace: str = "") -> Obj:
        old = self.get(rtype, name, namespace)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(old)
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            return self._commit(rtype, "MODIFIED", new, copy.deepcopy(old))
        return self._commit(rtype, "DELETED", copy.deepcopy(old), copy.deepcopy(old))

    def compact(self) -> None:
        """Forget all history: any resourceVersion a client holds now is too old (410)."""
        self.rv += 1  # the compaction itself is a revision, as in etcd
        self.history.clear()
        self.oldest_rv = self.rv
