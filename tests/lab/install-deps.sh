#!/usr/bin/env bash
# Install the Debian packages the network-namespace lab, the integration tests, the demo and the
# benchmarks need. Idempotent: when everything is present it prints one line and does nothing.
#
#   bash tests/lab/install-deps.sh          # routers and network tools
#   bash tests/lab/install-deps.sh python   # only python3-venv and python3-pip (for `make venv`)
#
# Non-interactive (works without stdin, e.g. in CI). The packages' services are kept from starting
# during the install, and any bird/frr/gobgpd daemon the install started anyway is stopped afterwards.
set -euo pipefail

LAB_PACKAGES=(bird2 frr gobgpd iproute2 iptables nftables tcpdump iputils-ping socat procps libcap2-bin conntrack)
PYTHON_PACKAGES=(python3-venv python3-pip)
DAEMONS=(bird bird6 watchfrr zebra bgpd staticd mgmtd gobgpd)
UNITS=(bird.service frr.service gobgpd.service)

case "${1:-lab}" in
    lab) packages=("${LAB_PACKAGES[@]}") ;;
    python) packages=("${PYTHON_PACKAGES[@]}") ;;
    *) echo "usage: $0 [python]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present (${packages[*]})"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run this as root (e.g. sudo make sysdeps)" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"

# The root network namespace: init's, or ours when init's cannot be read (some containers).
root_netns="$(readlink /proc/1/ns/net 2>/dev/null || readlink /proc/self/ns/net)"

# Daemons that run before the install are not ours to stop afterwards.
daemon_pids() {
    local name pid
    for name in "${DAEMONS[@]}"; do
        for pid in $(pgrep -x "$name" 2>/dev/null || true); do
            echo "$pid"
        done
    done
}
before="$(daemon_pids | sort -n | tr '\n' ' ')"

policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary: keep services from starting during package installation\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update </dev/null
apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null

cleanup
created_policy=0

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for unit in "${UNITS[@]}"; do
        if systemctl cat "$unit" >/dev/null 2>&1; then
            systemctl stop "$unit" >/dev/null 2>&1 || true
            systemctl disable "$unit" >/dev/null 2>&1 || true
        fi
    done
else
    # No systemd: kill only daemons the install started, i.e. new ones in the root network namespace
    # whose parent is init. Daemons inside other namespaces (labs, containers) are never touched.
    stray=()
    for pid in $(daemon_pids); do
        case " $before " in *" $pid "*) continue ;; esac
        [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$root_netns" ] || continue
        [ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" = "1" ] || continue
        echo "install-deps: stopping $(cat "/proc/$pid/comm" 2>/dev/null) (pid $pid) started by the install"
        kill -TERM "$pid" 2>/dev/null || true
        stray+=("$pid")
    done
    for pid in "${stray[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.3
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
fi

echo "install-deps: done"
