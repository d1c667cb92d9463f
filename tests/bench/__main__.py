"""``python -m tests.bench [--quick] [--only NAME]``: run the benchmarks, print and save markdown tables.

Every benchmark module exposes ``run(*, quick: bool) -> list[(title, header, rows)]``. The tables and
the machine facts go to stdout and to ``bench-results/results.md``. The benchmarks measure; they never
pass or fail on a number.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tests.bench import common

#: name -> module, in run order. A module that is not there (yet) is skipped with a note.
MODULES = {"speaker": "tests.bench.bench_speaker", "kube": "tests.bench.bench_kube"}
RESULTS = Path("bench-results") / "results.md"

Runner = Callable[..., list[common.Table]]


def _load(module: str) -> Runner | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    runner: Runner = mod.run
    return runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter idle windows")
    parser.add_argument("--only", choices=sorted(MODULES), action="append", help="run only this benchmark")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown file (default {RESULTS})")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every lab is torn down.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    exabgp = Path(sys.executable).with_name("exabgp")
    facts = common.machine_facts(exabgp=exabgp)
    started = time.monotonic()
    sections: list[str] = []
    failed = False
    for name, module in MODULES.items():
        if args.only and name not in args.only:
            continue
        runner = _load(module)
        if runner is None:
            sections.append(f"## {name}\n\n(not run: {module} is not present)\n")
            continue
        t0 = time.monotonic()
        print(f"[bench] == {name}", file=sys.stderr, flush=True)
        try:
            tables = runner(quick=args.quick)
        except Exception:  # one broken benchmark must not hide the others' figures
            failed = True
            text = traceback.format_exc()
            print(text, file=sys.stderr)
            sections.append(f"## {name}\n\nFAILED:\n\n```\n{text}```\n")
            continue
        body = "\n".join(common.markdown(t) for t in tables)
        sections.append(f"## {name} ({time.monotonic() - t0:.0f} s)\n\n{body}")
        print(body, flush=True)

    facts.append(("Mode", "quick" if args.quick else "full"))
    facts.append(("Total time", f"{time.monotonic() - started:.0f} s"))
    head = "# bgp-speaker benchmarks\n\n| machine | |\n|---|---|\n"
    head += "".join(f"| {k} | {v} |\n" for k, v in facts)
    document = head + "\n" + "\n".join(sections)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(document)
    print(head, flush=True)
    print(f"[bench] saved {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
