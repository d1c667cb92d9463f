"""The password Secret on disk: each of its keys as a 0600 file in a 0700 directory.

:class:`bgp_speaker.adapters.kube.configwatch.ConfigWatch` follows the Secret the ConfigMap names
and hands its ``data`` here: :func:`decode` keeps the keys that can be file names and whose
values are base64, and :class:`PasswordFiles` makes the directory hold exactly those keys
(written atomically, rewritten only when the content changed; files of keys that disappear are
removed), so that ``peers[].password_file`` can point there. Values are never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class PasswordFiles:
    """The files written for the keys of one Secret, and the last write error."""

    def __init__(self) -> None:
        self._written: dict[str, Path] = {}
        #: Why the last write failed; None after a good one.
        self.error: str | None = None

    @property
    def names(self) -> list[str]:
        """The keys that have a file, sorted."""
        return sorted(self._written)

    def write(self, path: Path, values: Mapping[str, bytes]) -> bool:
        """Make ``path`` hold exactly ``values`` as 0600 files; True when any file changed."""
        changed = self.remove(keep=set(values))
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
            for key, value in values.items():
                target = path / key
                if key in self._written and _same(target, value):
                    continue
                _write_private(target, value)
                self._written[key] = target
                changed = True
            self.error = None
        except OSError as exc:
            self.error = f"cannot write password files in {path}: {exc.strerror}"
            logger.error("cannot write password files", extra={"path": str(path), "reason": exc.strerror})
            return True
        return changed

    def remove(self, *, keep: set[str]) -> bool:
        """Remove the files of every key not in ``keep``; True when there was any."""
        removed = False
        for key in [k for k in self._written if k not in keep]:
            try:
                self._written.pop(key).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("cannot remove a password file", extra={"key": key, "reason": exc.strerror})
            removed = True
        return removed


def decode(raw: object, *, secret: str) -> dict[str, bytes]:
    """A Secret's ``data``: the values of the keys that can be file names, base64-decoded."""
    values: dict[str, bytes] = {}
    if not isinstance(raw, dict):
        return values
    for key, encoded in raw.items():
        if not isinstance(key, str) or not _SECRET_KEY.match(key) or key in (".", ".."):
            logger.warning("skipped a Secret key that cannot be a file name", extra={"secret": secret})
            continue
        try:
            values[key] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            logger.warning("skipped a Secret value that is not base64", extra={"secret": secret, "key": key})
    return values


def _same(path: Path, value: bytes) -> bool:
    try:
        return path.read_bytes() == value
    except OSError:
        return False


def _write_private(path: Path, value: bytes) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, value)
    finally:
        os.close(fd)
    os.replace(scratch, path)
