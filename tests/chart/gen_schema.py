"""Generate charts/bgp-speaker/values.schema.json from the chart's own values and our pydantic Settings.

The speaker's configuration parts of the chart (``config.defaults`` and each
``config.gateways.<name>``) are overlays of :class:`bgp_speaker.settings.Settings`: the same
JSON Schema pydantic derives from the model, with nothing required at the top level. So the
chart rejects at install time what the speaker would reject at run time, and the test suite
fails when the model and the committed schema drift apart.

Usage: python -m tests.chart.gen_schema [--check]
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from bgp_speaker.settings import Settings
from tests.chart.generated import write_or_check

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "charts" / "bgp-speaker" / "values.schema.json"

DNS_LABEL = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
SECRET_KEY = "^[-._a-zA-Z0-9]{1,253}$"


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _object(description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": properties,
        **extra,
    }


def settings_overlay() -> tuple[dict[str, Any], dict[str, Any]]:
    """(overlay schema, its $defs): Settings' schema with no top-level required keys."""
    schema = copy.deepcopy(Settings.model_json_schema())
    defs = schema.pop("$defs")
    schema.pop("required", None)
    schema["title"] = "SettingsOverlay"
    schema["description"] = (
        "Part of the speaker's configuration (see config/reference.md): merged over what the "
        "gateway's own arguments give, mappings key by key, lists replaced whole."
    )
    return schema, defs


def build() -> dict[str, Any]:
    overlay, defs = settings_overlay()
    defs = {**defs, "SettingsOverlay": overlay}
    ref = {"$ref": "#/$defs/SettingsOverlay"}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "bgp-speaker chart values",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "nameOverride": _string("Replaces the chart name in object names."),
            "fullnameOverride": _string("Replaces the whole base name of cluster-wide objects."),
            "commonLabels": {
                "type": "object",
                "description": "Labels added to every object.",
                "additionalProperties": {"type": "string"},
            },
            "image": _object(
                "The speaker image (printed in NOTES for ovn-vpc-nat-config; the chart runs no pod).",
                {
                    "repository": _string("Image repository.", minLength=1),
                    "tag": _string("Image tag; empty: the chart's appVersion."),
                },
                required=["repository"],
            ),
            "kubeOvn": _object(
                "Where Kube-OVN lives (read only: the chart never changes Kube-OVN's objects).",
                {
                    "namespace": _string("Namespace of ConfigMap ovn-vpc-nat-config.", pattern=DNS_LABEL),
                    "upstreamSpeakerImage": _string("Kube-OVN's own speaker image, for switching back."),
                },
            ),
            "serviceAccount": _object(
                "The ServiceAccount Kube-OVN gives NAT gateway pods.",
                {
                    "name": _string("Its name (Kube-OVN uses vpc-nat-gw).", pattern=DNS_SUBDOMAIN),
                    "create": {"type": "boolean", "description": "Create it (only if Kube-OVN did not)."},
                },
            ),
            "rbac": _object(
                "Roles for the speaker on top of Kube-OVN's system:vpc-nat-gw.",
                {"create": {"type": "boolean", "description": "Create the roles and bindings."}},
            ),
            "configMap": _object(
                "The ConfigMap the speakers read through the API.",
                {"name": _string("Its name.", pattern=DNS_SUBDOMAIN)},
            ),
            "config": _object(
                "Speaker configuration overlays, rendered into the ConfigMap.",
                {
                    "defaults": ref,
                    "gateways": {
                        "type": "object",
                        "description": "Per-gateway overlays, keyed by VpcNatGateway name.",
                        "propertyNames": {"pattern": DNS_LABEL},
                        "additionalProperties": ref,
                    },
                },
            ),
            "secret": _object(
                "TCP-MD5 passwords, read by the speakers through the API.",
                {
                    "create": {"type": "boolean", "description": "Create the Secret from `passwords`."},
                    "name": _string(
                        "Name of the Secret (created or existing); empty: none, or a default when created.",
                        pattern=f"^({DNS_SUBDOMAIN[1:-1]})?$",
                    ),
                    "path": _string(
                        "Directory where a speaker puts each key as a 0600 file.", pattern="^/.+"
                    ),
                    "passwords": {
                        "type": "object",
                        "description": "Key -> password (1-80 printable characters, no double quote).",
                        "propertyNames": {"pattern": SECRET_KEY},
                        "additionalProperties": {"type": "string", "pattern": "^[ !#-~]{1,80}$"},
                    },
                },
            ),
        },
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(SCHEMA_PATH, render(), argv=argv, root=ROOT, module="tests.chart.gen_schema")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
