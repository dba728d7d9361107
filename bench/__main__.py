"""`python -m bench [--quick] [--only GROUP...]`: start the stack, run every scenario, report."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.limits import raise_nofile
from bench.load import LoadGenerator
from bench.report import Figure, document, table, write_json
from bench.scenarios import Context
from bench.stack import REPO, Stack

# memory first: RSS deltas are only clean on a gateway that has not freed memory yet.
SCENARIOS = (
    "memory", "hop", "peers", "propagation", "upstream", "credentials", "orphans", "failover",
)  # fmt: skip
OUTPUT = REPO / ".latchkey" / "bench.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (under 2 minutes)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM (e.g. from `timeout`) must still run the `finally` below that stops the stack,
    # whose processes live in their own sessions and would otherwise be orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_nofile()
    started = time.monotonic()
    figures: list[Figure] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="latchkey-bench-") as tmp:
        stack = Stack(Path(tmp), quick=args.quick)
        load: LoadGenerator | None = None
        try:
            print("starting consul, postgres, OpenBao, the gateway and the floor ...", flush=True)
            stack.start()
            load = LoadGenerator(processes=2)
            ctx = Context(stack=stack, load=load, quick=args.quick)
            for name in args.only or SCENARIOS:
                t0 = time.monotonic()
                print(f"running {name} ...", flush=True)
                try:
                    module = importlib.import_module(f"bench.scenarios.{name}")
                    figures.extend(module.run(ctx))
                except Exception:
                    errors.append(f"{name}: {traceback.format_exc(limit=4)}")
                    print(f"scenario {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
                print(f"  {name} took {time.monotonic() - t0:.0f}s", flush=True)
        finally:
            if load is not None:
                load.close()
            settings = {"gateway": stack.settings}
            stack.stop()
    elapsed = time.monotonic() - started
    doc = document(figures, quick=args.quick, settings=settings, elapsed=elapsed, errors=errors)
    write_json(args.output, doc)
    m = doc["machine"]
    print(
        f"\nlatchkey bench ({'quick' if args.quick else 'full'}) on {m['cpu_count']} CPUs "
        f"({m['cpu_model']}), Python {m['python']}, grpc {m['grpc']}; {elapsed:.0f}s; "
        f"gateway settings {stack.settings}\n"
    )
    print(table(figures))
    print(f"\nwrote {args.output}")
    if errors:
        print(f"{len(errors)} scenario(s) failed: see above", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
