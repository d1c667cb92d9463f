"""Build the container image's install layout into a directory, without a container engine.

The steps mirror the Dockerfile one for one: a venv at ``<root>/opt/bgp-speaker`` with the
pinned dependencies of ``image/constraints.txt`` and then the package without dependencies
(from a copy of exactly the files the Dockerfile copies), ``pip check``, the Kube-OVN wrapper
at ``<root>/kube-ovn/kube-ovn-speaker`` and the runtime directory ``<root>/run/bgp-speaker``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path("opt/bgp-speaker")
WRAPPER = Path("kube-ovn/kube-ovn-speaker")
RUNTIME = Path("run/bgp-speaker")
#: What the Dockerfile copies into the build stage besides image/constraints.txt.
PACKAGE_FILES = ("pyproject.toml", "README.md", "bgp_speaker")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / VENV / "bin"

    @property
    def wrapper(self) -> Path:
        return self.root / WRAPPER

    @property
    def runtime(self) -> Path:
        return self.root / RUNTIME

    def env(self, **extra: str) -> dict[str, str]:
        """The image's environment (PATH, TMPDIR, ...), plus ``extra``."""
        return {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "TMPDIR": str(self.runtime),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            **extra,
        }


def _run(*argv: str | Path) -> None:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )


def build(root: Path, *, python: str = sys.executable) -> Layout:
    layout = Layout(root)
    venv = root / VENV
    _run(python, "-m", "venv", venv)
    pip = (venv / "bin" / "pip", "--disable-pip-version-check", "--quiet")
    _run(*pip, "install", "--require-virtualenv", "-r", ROOT / "image" / "constraints.txt")
    src = root / "src"
    src.mkdir()
    for name in PACKAGE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    _run(*pip, "install", "--require-virtualenv", "--no-deps", src)
    _run(*pip, "check")
    shutil.rmtree(src)
    layout.wrapper.parent.mkdir(parents=True)
    shutil.copy2(ROOT / "image" / "kube-ovn-speaker", layout.wrapper)
    os.chmod(layout.wrapper, 0o755)
    layout.runtime.mkdir(parents=True, mode=0o700)
    return layout
