"""An ETL job over CSV files into SQLite: parallel extracts, validation, retries, resume.

What it shows
    One workflow per batch of files, built from the files found::

        extract[a.csv] ──▶ transform[a.csv] ──┐
        extract[b.csv] ──▶ transform[b.csv] ──┼──▶ load ──▶ report
        ...                                   ┘

    * ``extract`` reads and parses one file (all files in parallel, on threads).  The
      file share is "flaky": ``--flaky N`` makes the first read of N files fail with a
      transient ``OSError``, which the ``retry`` middleware retries with back-off.
    * The ``validate`` middleware checks every extract's rows (positive quantities and
      prices, known country codes, ISO dates) and every transform's inputs and output:
      a bad row fails its node with a message naming the file and line.
    * ``load`` replaces the batch's rows in a SQLite table (stdlib ``sqlite3``) in one
      transaction, so running it again is harmless; ``report`` totals the table, and
      the totals are checked against a direct reading of the files.
    * The run is durable (a :class:`~flow_orchestrator.stores.SqliteStore`, strict
      checkpoints) and independent files go on when one fails
      (``continue_on_error``).  Fix the bad file and run the same command again: the
      run resumes, and only the failed file, ``load`` and ``report`` run.  A file that
      changed since its extract completed is extracted again (``rerun=``).

Run it::

    python examples/etl_files.py                         # makes 6 CSV files in etl-work/input
    python examples/etl_files.py --bad-row 3 --fresh     # file 3 gets a bad row: the run fails
    # fix etl-work/input/orders-003.csv (the line named in the error), then resume:
    python examples/etl_files.py
    python examples/etl_files.py --input path/to/csvs --workdir /tmp/etl --run-id etl-2024-06-01

Files are ``order_id,date,country,product,quantity,unit_price`` CSVs with a header.
Everything the job writes goes to ``--workdir`` (default ``etl-work``): the generated
input, ``warehouse.db`` (the target table ``orders``) and ``runs.db`` (the run store).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import random
import sqlite3
import sys
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import flow_orchestrator as fo
from flow_orchestrator.errors import IncompatibleStateError
from flow_orchestrator.middleware import retry, validate
from flow_orchestrator.observers import NodeEvent, Observer
from flow_orchestrator.state import RunState
from flow_orchestrator.stores import RunLockedError, SqliteStore

COLUMNS = ("order_id", "date", "country", "product", "quantity", "unit_price")
COUNTRIES = frozenset({"DE", "FR", "GB", "IT", "NL", "US"})
PRODUCTS = ("widget", "gadget", "gizmo", "doohickey")


# -- the input: CSV files ----------------------------------------------------------------------------


def generate_files(folder: Path, files: int, rows: int, bad_row_in: int | None = None) -> list[Path]:
    """Write ``files`` CSV files of ``rows`` orders each (deterministic); with
    ``bad_row_in``, file number ``bad_row_in`` gets one row with a negative quantity."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(files):
        rng = random.Random(f)
        path = folder / f"orders-{f:03d}.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            for r in range(rows):
                day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(366))
                quantity = -3 if (f == bad_row_in and r == rows // 2) else rng.randint(1, 20)
                writer.writerow([f"{f:03d}-{r:05d}", day.isoformat(), rng.choice(sorted(COUNTRIES)).lower(),
                                 rng.choice(PRODUCTS), quantity, f"{rng.uniform(0.5, 250):.2f}"])
        paths.append(path)
    return paths


def read_orders(path: Path) -> list[list[Any]]:
    """The rows of one file, typed: ``[order_id, date, country, product, quantity, price_cents, line]``.

    Parses only; the checks of the values are :func:`check_extract`'s (run by the
    ``validate`` middleware).  Prices become integer cents, so totals are exact.
    """
    with path.open(newline="", encoding="utf-8") as src:
        reader = csv.reader(src)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise ValueError(f"{path.name}: expected the header {','.join(COLUMNS)}, got {header}")
        rows = []
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(COLUMNS):
                raise ValueError(f"{path.name} line {line}: {len(fields)} fields, expected {len(COLUMNS)}")
            order_id, date, country, product, quantity, price = (x.strip() for x in fields)
            try:
                cents = int(Decimal(price) * 100)
                qty = int(quantity)
            except (InvalidOperation, ValueError):
                raise ValueError(f"{path.name} line {line}: quantity {quantity!r} or price {price!r} "
                                 "is not a number") from None
            rows.append([order_id, date, country.upper(), product, qty, cents, line])
    return rows


def file_digest(path: Path) -> str:
    """The sha256 of a file: how a resumed run notices that a file changed."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the nodes' actions (module-level functions: they take the run context) ---------------------------


def extract(ctx: Any) -> dict[str, Any]:
    """``extract[<file>]``: read and parse one file.  The share is flaky (see ``--flaky``)."""
    name = ctx.node[len("extract["):-1]
    if name in ctx.data["flaky"] and ctx.attempt == 1:
        raise OSError(f"transient read error on {name} (simulated)")
    path = Path(ctx.data["input_dir"]) / name
    return {"file": name, "sha256": file_digest(path), "rows": read_orders(path)}


def check_extract(extracted: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the file and line of the first bad row."""
    name = extracted["file"]
    seen: set[str] = set()
    for order_id, date, country, _product, qty, cents, line in extracted["rows"]:
        where = f"{name} line {line}"
        if order_id in seen:
            raise ValueError(f"{where}: duplicate order id {order_id!r}")
        seen.add(order_id)
        if qty <= 0:
            raise ValueError(f"{where}: quantity must be > 0, got {qty}")
        if cents <= 0:
            raise ValueError(f"{where}: unit price must be > 0, got {cents / 100:.2f}")
        if country not in COUNTRIES:
            raise ValueError(f"{where}: unknown country code {country!r}")
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise ValueError(f"{where}: date {date!r} is not YYYY-MM-DD") from None


def transform(ctx: Any) -> list[list[Any]]:
    """``transform[<file>]``: rows ready to load, with their amount and source file."""
    (extracted,) = ctx.inputs.values()
    return [[order_id, date, country, product, qty, cents, qty * cents, extracted["file"]]
            for order_id, date, country, product, qty, cents, _line in extracted["rows"]]


def load(ctx: Any) -> dict[str, int]:
    """``load``: replace the batch's files' rows in the warehouse, in one transaction."""
    batches = [ctx.inputs[name] for name in sorted(ctx.inputs)]
    files = sorted(name[len("transform["):-1] for name in ctx.inputs)
    with _connect(ctx.data["warehouse"]) as db:  # commits, or rolls back on error
        db.execute("""CREATE TABLE IF NOT EXISTS orders (
                          order_id TEXT PRIMARY KEY, date TEXT NOT NULL, country TEXT NOT NULL,
                          product TEXT NOT NULL, quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL,
                          amount_cents INTEGER NOT NULL, source TEXT NOT NULL)""")
        db.executemany("DELETE FROM orders WHERE source = ?", [(f,) for f in files])
        for rows in batches:
            db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return {"files": len(files), "rows": sum(len(rows) for rows in batches)}


def report(ctx: Any) -> dict[str, Any]:
    """``report``: totals of the warehouse table for this batch's files."""
    files = ctx.data["files"]
    marks = ",".join("?" * len(files))
    with _connect(ctx.data["warehouse"]) as db:
        rows, cents = db.execute(f"SELECT COUNT(*), COALESCE(SUM(amount_cents), 0) FROM orders "
                                 f"WHERE source IN ({marks})", files).fetchone()
        by_country = dict(db.execute(f"SELECT country, SUM(amount_cents) FROM orders WHERE source IN ({marks}) "
                                     "GROUP BY country ORDER BY country", files).fetchall())
    return {"rows": rows, "amount_cents": cents, "by_country": by_country}


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30)


# -- the workflow ---------------------------------------------------------------------------------


def build(files: Sequence[str], *, retry_delay: float = 0.05) -> fo.Workflow:
    """The ETL workflow over ``files`` (names in the input folder): ``2 * len(files) + 2`` nodes."""
    flaky_reads = retry(4, base_delay=retry_delay, retry_on=OSError)  # transient I/O errors only
    flow = fo.WorkflowBuilder("etl-files")
    for name in files:
        flow.add(f"extract[{name}]", extract, tags={"io"},
                 middleware=(flaky_reads, validate(output=check_extract)))
        flow.add(f"transform[{name}]", transform, depends_on=f"extract[{name}]",
                 middleware=validate(inputs={f"extract[{name}]": dict}, output=list))
    flow.add("load", load, depends_on=[f"transform[{name}]" for name in files], tags={"io"})
    flow.add("report", report, depends_on="load",
             middleware=validate(output={"rows": int, "amount_cents": int, "by_country": dict}))
    return flow.build()


class RunLog(Observer):
    """What happened in this process: completed nodes and retries (hooks run on worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed: list[str] = []
        self.retries: list[tuple[str, str]] = []

    def on_node_success(self, event: NodeEvent) -> None:
        """A node completed."""
        with self._lock:
            self.completed.append(event.node)

    def on_node_retry(self, event: NodeEvent) -> None:
        """A node's attempt failed and it will run again."""
        # With the retry middleware the event's error is its RetryRequested; the
        # exception that caused the retry is that error's __cause__.
        error = event.error.__cause__ or event.error if event.error is not None else None
        with self._lock:
            self.retries.append((event.node, f"{type(error).__name__}: {error}"))


def expected_totals(paths: Sequence[Path]) -> dict[str, Any]:
    """The report's figures computed directly from the files (the check of a run)."""
    rows, cents = 0, 0
    by_country: dict[str, int] = {}
    for path in paths:
        for _id, _date, country, _product, qty, price, _line in read_orders(path):
            rows += 1
            cents += qty * price
            by_country[country] = by_country.get(country, 0) + qty * price
    return {"rows": rows, "amount_cents": cents, "by_country": dict(sorted(by_country.items()))}


def _changed_files(saved: RunState, folder: Path, files: Sequence[str]) -> list[str]:
    """The files whose extract completed in the saved run but which changed since."""
    changed = []
    for name in files:
        node = f"extract[{name}]"
        if (node in saved.node_names and saved.statuses[saved.node_id(node)] == fo.NodeStatus.COMPLETED
                and saved.output(node)["sha256"] != file_digest(folder / name)):
            changed.append(node)
    return changed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="folder of *.csv files (default: WORKDIR/input, generated)")
    parser.add_argument("--workdir", type=Path, default=Path("etl-work"),
                        help="where the warehouse, the run store and generated files go (default: %(default)s)")
    parser.add_argument("--files", type=int, default=6, help="files to generate (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=400, help="rows per generated file (default: %(default)s)")
    parser.add_argument("--bad-row", type=int, metavar="K",
                        help="generate file K with a row that fails validation (regenerates the input)")
    parser.add_argument("--flaky", type=int, default=2, metavar="N",
                        help="the first read of N files fails with a transient error (default: %(default)s)")
    parser.add_argument("--run-id", default="etl", help="the run's id in the store (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="forget a saved run of this id and start over")
    parser.add_argument("--workers", type=int, default=4, help="worker threads (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the ETL job; 0 when it completed and its totals check out."""
    args = _parser().parse_args(argv)
    if args.files < 1 or args.rows < 1 or args.workers < 1:
        print("error: --files, --rows and --workers must be >= 1", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    folder = args.input if args.input is not None else args.workdir / "input"
    if args.input is None and (args.bad_row is not None or not folder.is_dir()):
        generate_files(folder, args.files, args.rows, args.bad_row)
        print(f"generated {args.files} files of {args.rows} rows in {folder}")
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        print(f"error: no *.csv files in {folder}", file=sys.stderr)
        return 1
    files = [p.name for p in paths]
    wf = build(files)
    data = {"input_dir": str(folder.resolve()), "warehouse": str((args.workdir / "warehouse.db").resolve()),
            "files": files, "flaky": files[:max(args.flaky, 0)]}
    log = RunLog()

    with SqliteStore(args.workdir / "runs.db") as store, fo.Engine(args.workers) as engine:
        options: dict[str, Any] = {"store": store, "checkpoint": "strict", "data": data, "observers": [log],
                                   "continue_on_error": True, "raise_on_failure": False}
        if args.fresh and store.exists(args.run_id):
            store.delete(args.run_id)
        try:
            if store.exists(args.run_id):
                saved = store.load(args.run_id)
                if saved.run_status == "completed":
                    print(f"run {args.run_id!r} already completed: nothing to do "
                          "(--fresh to run it again, or another --run-id)")
                    return 0
                done = sum(1 for s in saved.statuses if s == fo.NodeStatus.COMPLETED)
                again = _changed_files(saved, folder, files)
                print(f"resuming run {args.run_id!r} ({saved.run_status}): {done}/{len(saved.node_names)} "
                      "nodes done earlier" + (f"; changed since, extracted again: {', '.join(again)}" if again else ""))
                result = engine.resume(wf, args.run_id, rerun=again, allow_new_nodes=True, **options)
            else:
                print(f"run {args.run_id!r}: {len(files)} file(s), {len(wf)} nodes on {args.workers} threads")
                result = engine.run(wf, run_id=args.run_id, **options)
        except RunLockedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except IncompatibleStateError as exc:
            print(f"error: {exc}\n(the files differ from the saved run's: use --fresh or another --run-id)",
                  file=sys.stderr)
            return 1

    print(f"ran {len(log.completed)} node(s) this time")
    for node, error in log.retries:
        print(f"retried {node} after {error}")
    print(result.summary())
    if not result.ok:
        print("fix the input, then run the same command again to resume the run")
        return 1

    got, want = result.output("report"), expected_totals(paths)
    print(f"loaded {result.output('load')['rows']:,} rows from {len(files)} file(s) into "
          f"{args.workdir / 'warehouse.db'} (table orders)")
    for country, cents in got["by_country"].items():
        print(f"  {country}  {cents / 100:>14,.2f}")
    print(f"  total {got['amount_cents'] / 100:>12,.2f}")
    if got != want:
        print(f"error: the warehouse totals differ from the files: {got} != {want}")
        return 1
    print(f"verified: {want['rows']:,} rows and {want['amount_cents'] / 100:,.2f} in total match the CSV files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
