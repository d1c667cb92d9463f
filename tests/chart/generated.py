"""The command line both chart generators share: write the generated file, or check it is current."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def write_or_check(path: Path, text: str, *, argv: Sequence[str], root: Path, module: str) -> int:
    """Write ``text`` to ``path`` (exit code 0).

    With ``--check`` in ``argv``, write nothing: 0 when ``path`` holds ``text``, else 1 and a line on
    stderr naming the stale file (relative to ``root``) and the command that regenerates it.
    """
    if "--check" not in argv:
        path.write_text(text, encoding="utf-8")
        return 0
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return 0
    print(f"{path.relative_to(root)} is stale: run python -m {module}", file=sys.stderr)
    return 1
