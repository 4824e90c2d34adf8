"""A numpy map-reduce on threads: GIL-releasing work in parallel chunks, merged exactly.

What it shows
    numpy releases the GIL inside its heavy loops (sorting, ufuncs on large arrays), so
    plain worker threads run chunks of numpy work in parallel, with no process pool
    and no copying of data between processes.  The workflow::

        load[c] ──▶ transform[c] ──▶ stats[c] ──┐
        (x CHUNKS)                              ├──▶ merge ──▶ report
                                                ┘

    ``load`` makes (or would read) a chunk of samples, ``transform`` sorts it and
    applies an element-wise transform, ``stats`` reduces the chunk to mergeable
    partial statistics (count, mean, sum of squared deviations, min, max, a fixed-bin
    histogram), ``merge`` combines the partials exactly (Chan's parallel variance
    formula) and ``report`` derives the final figures.  The result is checked against
    a direct computation on the whole array, and the same workflow is timed on the
    serial executor (one thread) and on ``--workers`` threads.

Run it::

    python examples/numpy_pipeline.py                      # 32 chunks of 200,000 samples
    python examples/numpy_pipeline.py --chunks 64 --size 1000000 --workers 8

The speed-up depends on the machine's free cores (1.8-1.9x on an idle two-core VM).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import flow_orchestrator as fo

BINS = 32
RANGE = (-1.0, 1.0)  # the transform below maps every sample into [-1, 1]


def load(seed: int, size: int) -> np.ndarray:
    """Chunk ``seed`` of the input: ``size`` samples of a heavy-tailed distribution."""
    return np.random.default_rng(seed).standard_t(df=5, size=size)


def transform(samples: np.ndarray) -> np.ndarray:
    """The per-chunk work: sort, then a smooth element-wise transform (both release the GIL)."""
    ordered = np.sort(samples)
    return np.tanh(ordered) * np.sqrt(np.abs(ordered) / (1.0 + np.abs(ordered)))


def partial_stats(values: np.ndarray) -> dict[str, Any]:
    """Mergeable statistics of one chunk."""
    mean = float(values.mean())
    return {"n": int(values.size), "mean": mean, "m2": float(np.sum((values - mean) ** 2)),
            "min": float(values.min()), "max": float(values.max()),
            "hist": np.histogram(values, bins=BINS, range=RANGE)[0]}


def merge_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine partial statistics exactly (Chan et al.'s pairwise update of mean and M2)."""
    n, mean, m2 = 0, 0.0, 0.0
    for p in parts:
        total = n + p["n"]
        delta = p["mean"] - mean
        mean += delta * p["n"] / total
        m2 += p["m2"] + delta * delta * n * p["n"] / total
        n = total
    return {"n": n, "mean": mean, "m2": m2, "min": min(p["min"] for p in parts),
            "max": max(p["max"] for p in parts), "hist": np.sum([p["hist"] for p in parts], axis=0)}


def final_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """The figures reported: count, mean, standard deviation, range and histogram."""
    return {"n": stats["n"], "mean": stats["mean"], "std": float(np.sqrt(stats["m2"] / stats["n"])),
            "min": stats["min"], "max": stats["max"], "hist": stats["hist"]}


# -- the nodes' actions (module-level functions, called with the run context) ---------------------


def load_node(ctx: Any) -> np.ndarray:
    """``load[c]``: chunk ``c`` (its index is the number in the node's name)."""
    chunk = int(ctx.node[len("load["):-1])
    return load(ctx.data["seed"] + chunk, ctx.data["size"])


def transform_node(ctx: Any) -> np.ndarray:
    """``transform[c]``."""
    (samples,) = ctx.inputs.values()
    return transform(samples)


def stats_node(ctx: Any) -> dict[str, Any]:
    """``stats[c]``."""
    (values,) = ctx.inputs.values()
    return partial_stats(values)


def merge_node(ctx: Any) -> dict[str, Any]:
    """``merge``: every chunk's statistics, in chunk order (the merge is exact in any order)."""
    return merge_stats([ctx.inputs[name] for name in sorted(ctx.inputs, key=_chunk_index)])


def report_node(ctx: Any) -> dict[str, Any]:
    """``report``."""
    return final_figures(ctx.input("merge"))


def _chunk_index(name: str) -> int:
    return int(name[name.index("[") + 1:-1])


def build(chunks: int) -> fo.Workflow:
    """The pipeline over ``chunks`` chunks: ``3 * chunks + 2`` nodes."""
    flow = fo.WorkflowBuilder("numpy-pipeline")
    for c in range(chunks):
        flow.add(f"load[{c}]", load_node, tags={"io"})
        flow.add(f"transform[{c}]", transform_node, depends_on=f"load[{c}]")
        flow.add(f"stats[{c}]", stats_node, depends_on=f"transform[{c}]")
    flow.add("merge", merge_node, depends_on=[f"stats[{c}]" for c in range(chunks)])
    flow.add("report", report_node, depends_on="merge")
    return flow.build()


def direct(chunks: int, size: int, seed: int) -> dict[str, Any]:
    """The same figures computed directly, on the whole array at once."""
    values = np.concatenate([transform(load(seed + c, size)) for c in range(chunks)])
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "hist": np.histogram(values, bins=BINS, range=RANGE)[0]}


def check(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The figures of ``got`` that differ from ``want`` (floats to 1e-9 relative)."""
    bad = [key for key in ("mean", "std", "min", "max") if not np.isclose(got[key], want[key], rtol=1e-9, atol=1e-12)]
    if got["n"] != want["n"]:
        bad.append("n")
    if not np.array_equal(got["hist"], want["hist"]):
        bad.append("hist")
    return bad


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=32, help="chunks of samples (default: %(default)s)")
    parser.add_argument("--size", type=int, default=200_000, help="samples per chunk (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="worker threads (default: CPU count)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the first chunk (default: %(default)s)")
    parser.add_argument("--no-serial", action="store_true", help="skip the serial run used for the timing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline, check it, compare its time with a serial run; 0 when the check passes."""
    args = _parser().parse_args(argv)
    if args.chunks < 1 or args.size < 1 or (args.workers is not None and args.workers < 1):
        print("error: --chunks, --size and --workers must be >= 1", file=sys.stderr)
        return 2
    wf = build(args.chunks)
    data = {"seed": args.seed, "size": args.size}
    print(f"{wf.name}: {len(wf)} nodes, {args.chunks} chunks of {args.size:,} samples")

    serial_seconds = None
    if not args.no_serial:
        with fo.Engine(1, executor="serial") as serial:
            start = time.perf_counter()
            serial_result = serial.run(wf, data=data)
            serial_seconds = time.perf_counter() - start

    with fo.Engine(args.workers) as engine:
        start = time.perf_counter()
        result = engine.run(wf, data=data)
        seconds = time.perf_counter() - start
        workers = engine.max_workers
    print(result.summary())

    figures = result.output("report")
    print(f"samples {figures['n']:,}: mean {figures['mean']:+.6f}, std {figures['std']:.6f}, "
          f"range [{figures['min']:+.4f}, {figures['max']:+.4f}]")
    bad = check(figures, direct(args.chunks, args.size, args.seed))
    if serial_seconds is not None:
        bad += [f"serial {key}" for key in check(serial_result.output("report"), figures)]
    if bad:
        print(f"error: differs from a direct computation: {', '.join(bad)}")
        return 1
    print(f"verified: count, mean, std, min, max and the {BINS}-bin histogram match a direct computation")
    if serial_seconds is not None:
        print(f"timing: serial {serial_seconds:.3f} s, {workers} threads {seconds:.3f} s "
              f"(speed-up {serial_seconds / seconds:.2f}x)")
    else:
        print(f"timing: {workers} threads {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
