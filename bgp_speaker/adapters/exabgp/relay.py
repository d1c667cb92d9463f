"""The helper ExaBGP starts from its ``process`` block: a byte pump to the daemon's API socket.

``python -m bgp_speaker.adapters.exabgp.relay --socket PATH`` connects to the Unix socket the daemon
serves (retrying for a while, the daemon may still be starting), then copies ExaBGP's replies and
events (our stdin) to the socket and the daemon's commands (from the socket) to our stdout.

Rules it keeps, because ExaBGP writes to our stdin with blocking writes (a helper that stops
reading freezes ExaBGP's whole reactor):

- stdin is always drained; when the socket cannot take more, the bytes are buffered in memory
  (bounded by what the daemon's reader lets pile up), never left in the pipe;
- stdlib only and no package imports, so that a respawn is quick;
- exit on EOF of either side: ExaBGP gone (stdin EOF) or daemon gone (socket EOF). ExaBGP then
  respawns us and the daemon sees a new connection.
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import socket
import sys
import time

CHUNK = 65536
CONNECT_RETRY_SECONDS = 10.0


def _connect(path: str, *, deadline: float) -> socket.socket:
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
            continue
        return sock


def pump(stdin_fd: int, stdout_fd: int, sock: socket.socket) -> str:
    """Copy both ways until one side closes. Returns which side ended the pump."""
    sock.setblocking(False)
    os.set_blocking(stdin_fd, False)
    to_socket = bytearray()
    to_stdout = bytearray()
    sel = selectors.DefaultSelector()
    sel.register(stdin_fd, selectors.EVENT_READ, "stdin")
    sel.register(sock, selectors.EVENT_READ, "socket")
    stdout_registered = False
    socket_events = selectors.EVENT_READ
    try:
        while True:
            want_socket = selectors.EVENT_READ | (selectors.EVENT_WRITE if to_socket else 0)
            if want_socket != socket_events:
                sel.modify(sock, want_socket, "socket")
                socket_events = want_socket
            if to_stdout and not stdout_registered:
                sel.register(stdout_fd, selectors.EVENT_WRITE, "stdout")
                stdout_registered = True
            elif not to_stdout and stdout_registered:
                sel.unregister(stdout_fd)
                stdout_registered = False
            for key, events in sel.select():
                if key.data == "stdin":
                    try:
                        data = os.read(stdin_fd, CHUNK)
                    except BlockingIOError:
                        continue
                    if not data:
                        return "stdin"
                    to_socket += data
                elif key.data == "socket":
                    if events & selectors.EVENT_READ:
                        try:
                            data = sock.recv(CHUNK)
                        except BlockingIOError:
                            data = None
                        except ConnectionResetError:
                            return "socket"
                        if data == b"":
                            return "socket"
                        if data:
                            to_stdout += data
                    if events & selectors.EVENT_WRITE and to_socket:
                        try:
                            sent = sock.send(to_socket)
                        except BlockingIOError:
                            sent = 0
                        except (BrokenPipeError, ConnectionResetError):
                            return "socket"
                        del to_socket[:sent]
                elif key.data == "stdout" and to_stdout:
                    try:
                        written = os.write(stdout_fd, to_stdout)
                    except BlockingIOError:
                        written = 0
                    except BrokenPipeError:
                        return "stdout"
                    del to_stdout[:written]
    finally:
        sel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Relay between ExaBGP's process API and a Unix socket.")
    parser.add_argument("--socket", required=True, help="Unix socket served by the daemon")
    parser.add_argument("--connect-timeout", type=float, default=CONNECT_RETRY_SECONDS)
    args = parser.parse_args(argv)
    try:
        sock = _connect(args.socket, deadline=time.monotonic() + args.connect_timeout)
    except OSError as exc:
        sys.stderr.write(f"bgp-speaker relay: cannot connect to {args.socket}: {exc}\n")
        return 1
    try:
        os.set_blocking(sys.stdout.fileno(), False)
        ended = pump(sys.stdin.fileno(), sys.stdout.fileno(), sock)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            sys.stderr.write(f"bgp-speaker relay: {exc}\n")
        return 1
    finally:
        sock.close()
    return 0 if ended == "stdin" else 1


if __name__ == "__main__":
    sys.exit(main())
