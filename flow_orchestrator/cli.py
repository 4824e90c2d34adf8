"""The ``flow-orchestrator`` command line (also ``python -m flow_orchestrator``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

_EPILOG = """examples:
  flow-orchestrator demo                 run a numpy batch workflow, then order a 1,000,000-node DAG
  flow-orchestrator demo --workers 4     the same with 4 worker threads
  flow-orchestrator demo --layers 100    order a 100,000-node DAG instead
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flow-orchestrator",
        description="An embeddable workflow engine for Python with a Cython core.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run a numpy batch workflow, then build and order a large generated DAG",
        description="Run a CPU-bound numpy batch workflow (a few hundred nodes) with a progress "
                    "line and print its summary; then generate a layered DAG (each node depends on "
                    "DEPS random nodes of the previous layer), build it with the compiled core and "
                    "print timings and memory.",
    )
    demo.add_argument("--workers", type=int, default=None, help="worker threads (default: CPU count)")
    demo.add_argument("--layers", type=int, default=1000, help="number of layers (default 1000)")
    demo.add_argument("--width", type=int, default=1000, help="nodes per layer (default 1000)")
    demo.add_argument("--deps", type=int, default=3, help="dependencies per node (default 3)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .batch_demo import run_batch_demo
        from .demo import format_figures, run_demo

        if min(args.layers, args.width, args.deps) < 1 or (args.workers is not None and args.workers < 1):
            print("flow-orchestrator demo: --layers, --width, --deps and --workers must be >= 1",
                  file=sys.stderr)
            return 2
        result = run_batch_demo(args.workers)
        if not result.ok:
            return 1
        sys.stdout.write("\n")
        sys.stdout.write(format_figures(run_demo(args.layers, args.width, args.deps)) + "\n")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
