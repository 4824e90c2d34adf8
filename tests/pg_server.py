"""The PostgreSQL server the tests use: found once, or the reason there is none.

``FLOW_ORCHESTRATOR_TEST_POSTGRES`` names it (a conninfo; ``.ci/run`` starts one and sets
it); otherwise a few local defaults are tried.  Tests that need it skip, saying why,
when none is reachable, and fail instead under CI (``FLOW_ORCHESTRATOR_CI=1``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_DEFAULTS = [
    "postgresql://postgres@localhost:5432/postgres",
    "postgresql://postgres:postgres@localhost:5432/postgres",
    "host=/var/run/postgresql dbname=postgres",
]


@functools.cache
def find_postgres() -> tuple[str | None, str]:
    """A conninfo of a reachable PostgreSQL server, or ``None`` and why there is none."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install 'flow-orchestrator[postgres]')"
    given = os.environ.get("FLOW_ORCHESTRATOR_TEST_POSTGRES")
    candidates = [given] if given else ([""] if "PGHOST" in os.environ else []) + POSTGRES_DEFAULTS
    failures = []
    for conninfo in candidates:
        try:
            with psycopg.connect(conninfo, connect_timeout=3, autocommit=True) as db:
                db.execute("SELECT 1")
            return conninfo, ""
        except psycopg.Error as exc:
            failures.append(f"{conninfo or 'PG* variables'} ({str(exc).strip().splitlines()[0].split('failed: ')[-1]})")
    return None, ("no PostgreSQL server reachable (set FLOW_ORCHESTRATOR_TEST_POSTGRES to a conninfo); tried "
                  + ", ".join(failures))


def postgres_conninfo() -> str:
    """The test server's conninfo; skips the test when there is none (fails it under CI)."""
    conninfo, reason = find_postgres()
    if conninfo is None:
        if os.environ.get("FLOW_ORCHESTRATOR_CI") == "1":
            pytest.fail(f"FLOW_ORCHESTRATOR_CI=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return conninfo


@contextlib.contextmanager
def fresh_schema() -> Iterator[tuple[str, str]]:
    """``(conninfo, schema)``: a new schema on the test server, dropped afterwards."""
    import psycopg

    conninfo, schema = postgres_conninfo(), f"test_{uuid.uuid4().hex[:16]}"
    try:
        yield conninfo, schema
    finally:
        with psycopg.connect(conninfo, autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
