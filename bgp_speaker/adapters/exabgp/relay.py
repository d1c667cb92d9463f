"""The helper ExaBGP starts from its ``process`` block: a byte pump to the daemon's API socket.

``python -m bgp_speaker.adapters.exabgp.relay --socket PATH`` connects to the Unix socket the daemon
serves (retrying for a while, the daemon may still be starting), then copies ExaBGP's replies and
events (our stdin) to the socket and the daemon's commands (from the socket) to our stdout.

Rules it keeps, because ExaBGP writes to our stdin with blocking writes (a helper that stops
reading freezes ExaBGP's whole reactor):

- stdin is always drained; when the socket cannot take more, the bytes are buffered in memory
  (bounded by what the daemon's reader lets pile up), never left in the pipe;
- built-in modules only and no package imports, so that a respawn is quick and small;
- exit on EOF of either side: ExaBGP gone (stdin EOF) or daemon gone (socket EOF). ExaBGP then
  respawns us and the daemon sees a new connection.
"""

from __future__ import annotations

# Built-in modules only (no ``os``, ``socket``, ``selectors``, ``argparse``: each pulls in more of
# the standard library): with ``-I -S`` the relay stays at the interpreter's own footprint.
import _socket
import posix
import select
import sys
import time

CHUNK = 65536
CONNECT_RETRY_SECONDS = 10.0
USAGE = "usage: relay.py --socket PATH [--connect-timeout SECONDS]"
_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def _connect(path: str, *, deadline: float) -> _socket.socket:
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
            continue
        return sock


def pump(stdin_fd: int, stdout_fd: int, sock: _socket.socket) -> str:
    """Copy both ways until one side closes. Returns which side ended the pump."""
    sock.setblocking(False)
    posix.set_blocking(stdin_fd, False)
    sock_fd = sock.fileno()
    to_socket = bytearray()
    to_stdout = bytearray()
    poller = select.poll()
    poller.register(stdin_fd, _READ)
    poller.register(sock_fd, _READ)
    socket_events = _READ
    stdout_registered = False
    while True:
        want_socket = _READ | (_WRITE if to_socket else 0)
        if want_socket != socket_events:
            poller.modify(sock_fd, want_socket)
            socket_events = want_socket
        if to_stdout and not stdout_registered:
            poller.register(stdout_fd, _WRITE)
            stdout_registered = True
        elif not to_stdout and stdout_registered:
            poller.unregister(stdout_fd)
            stdout_registered = False
        for fd, events in poller.poll():
            if fd == stdin_fd:
                try:
                    data = posix.read(stdin_fd, CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    return "stdin"
                to_socket += data
            elif fd == sock_fd:
                if events & (_READ | _GONE):
                    try:
                        received = sock.recv(CHUNK)
                    except BlockingIOError:
                        received = None
                    except ConnectionResetError:
                        return "socket"
                    if received == b"":
                        return "socket"
                    if received:
                        to_stdout += received
                if events & _WRITE and to_socket:
                    try:
                        sent = sock.send(to_socket)
                    except BlockingIOError:
                        sent = 0
                    except (BrokenPipeError, ConnectionResetError):
                        return "socket"
                    del to_socket[:sent]
            elif fd == stdout_fd and to_stdout:
                if events & _GONE and not events & _WRITE:
                    return "stdout"
                try:
                    written = posix.write(stdout_fd, to_stdout)
                except BlockingIOError:
                    written = 0
                except BrokenPipeError:
                    return "stdout"
                del to_stdout[:written]


def _arguments(argv: list[str]) -> tuple[str, float]:
    """(socket path, connect timeout) from ``--socket PATH [--connect-timeout SECONDS]``."""
    options = {"--socket": "", "--connect-timeout": str(CONNECT_RETRY_SECONDS)}
    words = iter(argv)
    for word in words:
        name, equals, value = word.partition("=")
        if name not in options:
            raise ValueError(f"unknown argument {word!r}")
        options[name] = value if equals else next(words, "")
    if not options["--socket"]:
        raise ValueError("--socket is required")
    return options["--socket"], float(options["--connect-timeout"])


def main(argv: list[str] | None = None) -> int:
    try:
        path, timeout = _arguments(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.stderr.write(f"bgp-speaker relay: {exc}\n{USAGE}\n")
        return 2
    try:
        sock = _connect(path, deadline=time.monotonic() + timeout)
    except OSError as exc:
        sys.stderr.write(f"bgp-speaker relay: cannot connect to {path}: {exc}\n")
        return 1
    try:
        posix.set_blocking(sys.stdout.fileno(), False)
        ended = pump(sys.stdin.fileno(), sys.stdout.fileno(), sock)
    except BrokenPipeError:
        return 1
    except OSError as exc:
        sys.stderr.write(f"bgp-speaker relay: {exc}\n")
        return 1
    finally:
        sock.close()
    return 0 if ended == "stdin" else 1


if __name__ == "__main__":
    sys.exit(main())
