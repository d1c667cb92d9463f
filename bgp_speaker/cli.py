"""Command line: ``bgp-speaker run|check|render-exabgp|status|kube-ovn-compat``.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from ipaddress import IPv4Address, ip_network
from pathlib import Path

from bgp_speaker import __version__, logs, settings
from bgp_speaker.errors import BgpSpeakerError, ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
DEFAULT_CONFIG = os.environ.get("BGP_SPEAKER_CONFIG", "/etc/bgp-speaker/config.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgp-speaker",
        description="Announce Kube-OVN VPC NAT gateway EIPs to core routers over BGP (ExaBGP inside).",
    )
    parser.add_argument("--version", action="version", version=f"bgp-speaker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            type=Path,
            default=Path(DEFAULT_CONFIG),
            help=f"config file (default {DEFAULT_CONFIG})",
        )

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)

    check = sub.add_parser("check", help="validate the config (and the EIP file); print every error")
    with_config(check)

    render = sub.add_parser("render-exabgp", help="print the ExaBGP config the daemon would run")
    with_config(render)
    render.add_argument("--router-id", type=IPv4Address, help="router id to use if the config has none")
    render.add_argument(
        "--show-secrets", action="store_true", help="print MD5 passwords instead of a placeholder"
    )

    status = sub.add_parser("status", help="show peers, routes and refusals of a running speaker")
    status.add_argument(
        "--url",
        default=os.environ.get("BGP_SPEAKER_STATUS_URL", "http://127.0.0.1:10667"),
        help="base URL of the speaker's HTTP endpoint (default http://127.0.0.1:10667)",
    )
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    sub.add_parser(
        "kube-ovn-compat",
        help="drop-in for kube-ovn-speaker: accepts Kube-OVN's flags (--nat-gw-mode ...); "
        "--print-config shows the resulting config",
    )
    return parser


def _load(path: Path) -> settings.Settings:
    return settings.load(path)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    logs.setup(level=config.logging.level, fmt=config.logging.format)
    for peer in config.peers:
        peer.read_password()  # fail fast, with the field named, before anything starts
    from bgp_speaker import app

    if config.source.kind == "kubernetes":
        # The ConfigMap's overlays go over the file as written (not over its defaults).
        import yaml

        raw = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        return asyncio.run(app.run_live(raw, origin=str(args.config), environ=dict(os.environ)))
    return asyncio.run(app.run(config))


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    problems = []
    for peer in config.peers:
        try:
            peer.read_password()
        except ConfigError as exc:
            problems.append(str(exc))
    summary = [
        f"local AS {config.local_as}, {len(config.peers)} peer(s): "
        + ", ".join(f"{p.address} AS{p.asn}" for p in config.peers),
        "pools: " + ", ".join(config.pools),
        f"source: {config.source.kind}",
    ]
    if config.source.kind == "file" and config.source.file is not None:
        from bgp_speaker.adapters.filesource import load_file
        from bgp_speaker.core import desired

        result = load_file(config.source.file.path)
        if result.error:
            problems.append(result.error)
        else:
            pools = tuple(ip_network(p) for p in config.pools)
            outside = [
                c
                for c in result.candidates
                if not any(c.address in p for p in pools if p.version == c.address.version)
            ]
            summary.append(
                f"EIP file {config.source.file.path}: {len(result.candidates)} address(es), "
                f"{len(result.refusals)} malformed, {len(outside)} outside the pools"
            )
            for refusal in result.refusals:
                problems.append(f"{refusal.origin}: {refusal.reason}")
            for candidate in sorted(outside, key=lambda c: desired.prefix_sort_key(ip_network(c.address))):
                print(
                    f"warning: {candidate.origin}: {candidate.address} is outside the allowed pools; "
                    "it will be refused"
                )
    for line in summary:
        print(line)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.config}: OK")
    return EXIT_OK


def cmd_render_exabgp(args: argparse.Namespace) -> int:
    from bgp_speaker.adapters.exabgp.session_config import render_config

    config = _load(args.config)
    router_id = config.router_id or args.router_id or config.interconnect.next_hop_ipv4
    if router_id is None:
        raise ConfigError(
            "router_id: not set in the config; pass --router-id (the daemon derives it from the interconnect "
            f"interface {config.interconnect.interface} at start)"
        )
    sys.stdout.write(render_config(config, router_id=router_id, redact_secrets=not args.show_secrets))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from bgp_speaker.adapters.http import fetch_status
    from bgp_speaker.core import statusview

    document = asyncio.run(fetch_status(args.url, timeout=args.timeout))
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        sys.stdout.write(statusview.render(document))
    return EXIT_OK


def cmd_kube_ovn_compat(argv: Sequence[str]) -> int:
    """Drop-in for kube-ovn-speaker: Kube-OVN's argv (Go flag syntax) -> our config -> run."""
    import logging
    import shutil
    import tempfile

    from bgp_speaker import compat

    args = list(argv)
    print_config = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    runtime_dir = Path(tempfile.mkdtemp(prefix="bgp-speaker-compat-"))
    try:
        result = compat.parse_kube_ovn_speaker_args(args, environ=os.environ, runtime_dir=runtime_dir)
        if print_config:
            sys.stdout.write(compat.render_compat_config(result))
            return EXIT_OK
        config = settings.from_mapping(
            result.settings_mapping, origin=compat.ORIGIN, environ=dict(os.environ)
        )
        logs.setup(level=config.logging.level, fmt=config.logging.format)
        log = logging.getLogger("bgp_speaker.compat")
        for warning in result.warnings:
            log.warning("kube-ovn-speaker flag", extra={"detail": warning})
        log.info("kube-ovn-speaker compatible mode", extra={"policy": result.policy})
        from bgp_speaker import app

        return asyncio.run(
            app.run_live(
                result.settings_mapping,
                origin=compat.ORIGIN,
                environ=dict(os.environ),
                upstream_metrics=True,
            )
        )
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "render-exabgp": cmd_render_exabgp,
    "status": cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        if raw[:1] == ["kube-ovn-compat"]:
            # Go flag syntax (-v5, --flag=value): argparse would mangle it.
            return cmd_kube_ovn_compat(raw[1:])
        args = _parser().parse_args(raw)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BgpSpeakerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
