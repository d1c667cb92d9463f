"""Our per-EIP attribute annotations on an IptablesEIP, parsed into :class:`AttributeOverrides`.

Keys live under a configurable prefix (``source.kubernetes.annotation_prefix``, default
``bgp-speaker.kubeovn.io/``): ``communities`` and ``large-communities`` (comma-separated),
``med``, ``local-preference`` and ``as-path-prepend`` (0-16). Pure: an invalid value or an
unknown key under the prefix raises ValueError naming key and value, and
:func:`bgp_speaker.core.kubeovn.select` refuses the EIP with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping

from bgp_speaker.core.model import AttributeOverrides

ATTRIBUTE_KEYS = ("communities", "large-communities", "med", "local-preference", "as-path-prepend")
MAX_PREPEND = 16
_U32 = 0xFFFFFFFF
_NONE = AttributeOverrides()


def _community(text: str, *, parts: int, limit: int, label: str) -> str:
    pieces = text.split(":")
    if len(pieces) != parts or not all(p.isdigit() and int(p) <= limit for p in pieces):
        shape = "ASN:VALUE" if parts == 2 else "GLOBAL:LOCAL1:LOCAL2"
        raise ValueError(f"{text!r} is not a {label} ({shape}, each part 0-{limit})")
    return ":".join(str(int(p)) for p in pieces)


def _integer(text: str, *, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"not an integer {low}-{high}")
    return int(text)


def parse_overrides(annotations: Mapping[str, object], *, prefix: str) -> AttributeOverrides:
    """Our per-EIP attribute annotations. Raises ValueError naming the key and the value."""
    if not any(key.startswith(prefix) for key in annotations):
        return _NONE
    found: dict[str, object] = {}
    for key, raw in sorted(annotations.items()):
        if not key.startswith(prefix):
            continue
        short = key[len(prefix) :]
        value = raw.strip() if isinstance(raw, str) else ""
        try:
            if short not in ATTRIBUTE_KEYS:
                raise ValueError(f"unknown key (known: {', '.join(ATTRIBUTE_KEYS)})")
            if short in ("communities", "large-communities"):
                large = short == "large-communities"
                items = [item.strip() for item in value.split(",") if item.strip()]
                found[short] = tuple(
                    _community(
                        item,
                        parts=3 if large else 2,
                        limit=_U32 if large else 0xFFFF,
                        label="large community" if large else "standard community",
                    )
                    for item in items
                )
            elif short == "as-path-prepend":
                found[short] = _integer(value, low=0, high=MAX_PREPEND)
            else:
                found[short] = _integer(value, low=0, high=_U32)
        except ValueError as exc:
            raise ValueError(f"invalid annotation {key}={raw!r}: {exc}") from None

    def ints(name: str) -> int | None:
        value = found.get(name)
        return value if isinstance(value, int) else None

    def strs(name: str) -> tuple[str, ...] | None:
        value = found.get(name)
        return tuple(str(v) for v in value) if isinstance(value, tuple) else None

    return AttributeOverrides(
        communities=strs("communities"),
        large_communities=strs("large-communities"),
        med=ints("med"),
        local_preference=ints("local-preference"),
        as_path_prepend=ints("as-path-prepend"),
    )
