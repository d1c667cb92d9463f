"""pyroute2 without its package ``__init__``, which imports every part of the library.

Importing any ``pyroute2.*`` module first runs ``pyroute2/__init__.py``, and that imports IPDB,
NDB, conntrack, nftables, ipset, wireguard, nl80211, plan9 and the rest: ~12 MiB of resident
memory and ~100 ms of start-up, of which the rtnetlink client we use (``pyroute2.iproute.linux``)
needs about half. :func:`install` registers the package as an empty module whose ``__path__``
is the real one, so submodules import normally; a top-level name is then served lazily:

- names in :data:`LIGHT` come from their own submodule (``from pyroute2 import AsyncIPRoute``),
  submodules are imported as such (``from pyroute2 import config``);
- any other name runs the real ``__init__`` into that same module object, once, so code that
  uses the package the usual way (``from pyroute2 import IPRoute``) keeps working unchanged.

It changes nothing when ``pyroute2`` is already imported, and must run before the first import
of it to have an effect (the netlink adapter installs it when it is imported).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

PACKAGE = "pyroute2"
#: Top-level names served from the submodule that defines them.
LIGHT = {"AsyncIPRoute": "pyroute2.iproute.linux"}


def install() -> bool:
    """Register the light package. True when it is in place (now or before), False when the
    package was already imported the usual way or cannot be found."""
    present = sys.modules.get(PACKAGE)
    if present is not None:
        return bool(getattr(present, "__light__", False))
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> Any:  # PEP 562: called for names the module does not have
        home = LIGHT.get(name)
        if home is not None:
            return getattr(importlib.import_module(home), name)
        if importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            # ``from pyroute2 import config``: a submodule, as the import system would load it.
            return importlib.import_module(f"{PACKAGE}.{name}")
        # Anything else: the full package, loaded into this module object once.
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = __getattr__
    package.__dict__["__light__"] = True
    sys.modules[PACKAGE] = package
    return True
