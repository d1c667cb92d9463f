"""Where and as whom ExaBGP and its relay run: the private runtime directory, the unprivileged
user, and commands that user can actually execute.

ExaBGP never runs as root. When we are root, the runtime directory and the files in it belong
to the unprivileged user (ExaBGP must read its config, the relay must reach the socket), and
both ExaBGP and the relay must be executable by that user: a virtualenv whose interpreter lives
in a private home directory (pyenv under /root) is not, so defaults fall back to a system
python3 (any Python 3 runs the stdlib-only relay and the pure-Python exabgp package).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import pwd
import sys
from collections.abc import Sequence
from pathlib import Path

from bgp_speaker.adapters.exabgp import relay
from bgp_speaker.errors import ConfigError

logger = logging.getLogger(__name__)


def default_command() -> tuple[str, ...]:
    """The ``exabgp`` installed beside this Python."""
    return (str(Path(sys.executable).with_name("exabgp")),)


def default_relay_command(socket_path: Path, *, python: str | None = None) -> tuple[str, ...]:
    """Run the relay file directly: stdlib only, so ``-I -S`` keeps its start fast and it needs
    no installed package. ExaBGP runs it as the unprivileged user, so ``python`` (default: this
    interpreter) must be executable by that user."""
    interpreter = python or sys.executable
    return (interpreter, "-I", "-S", str(Path(relay.__file__).resolve()), "--socket", str(socket_path))


def _exabgp_site() -> str | None:
    spec = importlib.util.find_spec("exabgp")
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).resolve().parents[1])


def unprivileged_ids(user: str) -> tuple[int, int] | None:
    """(uid, gid) to run ExaBGP as, or None when we are not root (it then runs as us)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"exabgp.user: no such user {user!r}") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ConfigError(f"exabgp.user: {user!r} has uid or gid 0; ExaBGP must not run as root")
    return entry.pw_uid, entry.pw_gid


def prepare_runtime_dir(path: Path, *, owner: tuple[int, int] | None) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if owner is not None:
        os.chown(path, *owner)


def write_private(path: Path, text: str, *, owner: tuple[int, int] | None) -> None:
    """Write ``text`` to ``path`` readable only by its owner (the ExaBGP user when root)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


async def check_runnable(argv: Sequence[str], *, owner: tuple[int, int] | None, what: str) -> None:
    """Run ``argv`` as the ExaBGP user; raise ConfigError with its output when that fails."""
    kwargs: dict[str, object] = {}
    if owner is not None:
        kwargs = {"user": owner[0], "group": owner[1], "extra_groups": []}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd="/",
            **kwargs,  # type: ignore[arg-type]
        )
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    except (OSError, TimeoutError) as exc:
        output, code = str(exc).encode(), -1
    else:
        code = proc.returncode if proc.returncode is not None else -1
    if code != 0:
        who = f"uid {owner[0]}" if owner else "our user"
        tail = output.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise ConfigError(
            f"{what} cannot run as {who} ({argv[0]}: exit {code}: {tail[0]}); the interpreter and the "
            "packages must be readable and executable by that user (exabgp.command, exabgp.user)"
        )


RELAY_PROBE = ("-I", "-S", "-c", "import _socket, posix, select")
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


async def _first_runnable(
    candidates: Sequence[Sequence[str]], *, owner: tuple[int, int] | None, what: str
) -> int:
    """Index of the first argv that runs as the user; ConfigError (of the first) when none does."""
    first: ConfigError | None = None
    for index, argv in enumerate(candidates):
        try:
            await check_runnable(argv, owner=owner, what=what)
        except ConfigError as exc:
            first = first or exc
            continue
        return index
    assert first is not None
    raise first


async def resolve_commands(
    *,
    exabgp_command: tuple[str, ...],
    exabgp_explicit: bool,
    relay_python: str,
    relay_explicit: bool,
    owner: tuple[int, int] | None,
) -> tuple[tuple[str, ...], str]:
    """(ExaBGP argv prefix, relay interpreter) that the unprivileged user can run.

    Defaults that the user cannot execute (an interpreter in a private home directory, as with
    pyenv under /root) fall back to a system python3: any Python 3 runs the stdlib-only relay,
    and runs the pure-Python exabgp package from its installed location. Explicit settings are
    only checked. Raises ConfigError."""
    pythons = [p for p in SYSTEM_PYTHONS if p != relay_python and os.access(p, os.X_OK)]
    relays = [relay_python] if relay_explicit else [relay_python, *pythons]
    index = await _first_runnable(
        [[p, *RELAY_PROBE] for p in relays], owner=owner, what="the relay's interpreter"
    )
    if index:
        logger.warning("relay runs with a system python", extra={"python": relays[index]})
    site = _exabgp_site()
    commands = [exabgp_command]
    if not exabgp_explicit and site is not None:
        commands += [("/usr/bin/env", f"PYTHONPATH={site}", p, "-m", "exabgp") for p in pythons]
    chosen = await _first_runnable([[*c, "version"] for c in commands], owner=owner, what="ExaBGP")
    if chosen:
        logger.warning("exabgp runs with a system python", extra={"command": " ".join(commands[chosen])})
    return commands[chosen], relays[index]
