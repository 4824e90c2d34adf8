"""Store URLs: ``flow_orchestrator.stores.open_store`` and its parser (what ``--store`` takes)."""

from __future__ import annotations

import os
from urllib.parse import quote, urlencode

import pytest

import flow_orchestrator as fo
from flow_orchestrator import stores
from flow_orchestrator.state import RunState
from flow_orchestrator.stores import (
    FlatBuffersFileStore,
    JsonFileStore,
    MemoryStore,
    SqliteStore,
    StoreError,
    StoreURLError,
    open_store,
)
from flow_orchestrator.stores.urls import parse_store_url, redact_url


def small_workflow() -> fo.Workflow:
    return fo.WorkflowBuilder("urls").add("a", lambda: 1).add("b", lambda: 2, depends_on="a").build()


# -- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "scheme", "path"), [
    ("sqlite:///runs.db", "sqlite", "runs.db"),
    ("sqlite:///sub/dir/runs.db", "sqlite", "sub/dir/runs.db"),
    ("sqlite:////abs/runs.db", "sqlite", "/abs/runs.db"),
    ("SQLite:///runs.db", "sqlite", "runs.db"),
    ("sqlite:///with%20space%23.db", "sqlite", "with space#.db"),
    ("json:///runs", "json", "runs"),
    ("json:////var/lib/runs", "json", "/var/lib/runs"),
    ("flatbuffers:///runs", "flatbuffers", "runs"),
    ("flatbuffers:////var/lib/runs", "flatbuffers", "/var/lib/runs"),
])
def test_file_urls(url, scheme, path):
    spec = parse_store_url(url)
    assert (spec.scheme, spec.path, spec.timeout, spec.conninfo) == (scheme, path, None, None)


def test_home_is_expanded_and_sqlite_takes_a_timeout():
    assert parse_store_url("sqlite:///~/runs.db").path == os.path.expanduser("~/runs.db")
    assert parse_store_url("sqlite:////tmp/r.db?timeout=2.5").timeout == 2.5


@pytest.mark.parametrize("url", ["memory:", "memory://", "MEMORY:"])
def test_memory_urls(url):
    assert parse_store_url(url).scheme == "memory"
    assert isinstance(open_store(url), MemoryStore)


def test_postgres_urls_keep_libpq_parameters_and_take_the_store_ones():
    spec = parse_store_url("postgresql://etl:s3cret@db.example:6543/flows?schema=nightly&sslmode=require"
                           "&connect_timeout=4&application_name=x")
    assert spec.scheme == "postgresql"
    assert spec.conninfo == "postgresql://etl:s3cret@db.example:6543/flows?sslmode=require&application_name=x"
    assert (spec.schema, spec.connect_timeout) == ("nightly", 4)
    alias = parse_store_url("postgres:///flows?host=/var/run/postgresql")
    assert alias.conninfo == "postgresql:///flows?host=/var/run/postgresql"
    assert (alias.schema, alias.connect_timeout) == (None, None)


@pytest.mark.parametrize(("url", "message"), [
    ("", "empty store URL"),
    ("   ", "empty store URL"),
    ("runs.db", "for a SQLite file write sqlite:///runs.db"),
    ("/var/runs", "no scheme"),
    ("mysql://u@h/db", "unknown scheme 'mysql'"),
    ("file:///tmp/x", "unknown scheme 'file'"),
    ("sqlite://runs.db", "sqlite URLs name no host"),
    ("json://host/dir", "json URLs name no host"),
    ("sqlite:///", "no database file path"),
    ("sqlite:", "no database file path"),
    ("sqlite:runs.db", "no database file path"),
    ("flatbuffers://", "no directory path"),
    ("sqlite:///r.db?mode=ro", "unknown option 'mode'"),
    ("sqlite:///r.db?timeout=-1", "timeout must be a positive number"),
    ("sqlite:///r.db?timeout=soon", "timeout must be a positive number"),
    ("json:///runs?timeout=1", "json URLs take none"),
    ("sqlite:///r.db#frag", "fragment"),
    ("memory:somewhere", "memory: takes no host, path or options"),
    ("memory://host", "memory: takes no host, path or options"),
    ("postgresql://h/db?schema=", "?schema= needs a schema name"),
    ("postgresql://h/db?connect_timeout=0", "connect_timeout must be a whole number"),
    ("postgresql://h/db?connect_timeout=1.5", "connect_timeout must be a whole number"),
    ("postgresql://h/db#x", "fragment"),
])
def test_bad_urls_raise_store_url_errors(url, message):
    with pytest.raises(StoreURLError) as info:
        open_store(url)
    assert message in str(info.value)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)


def test_not_a_string():
    with pytest.raises(StoreURLError, match="must be a str"):
        parse_store_url(b"sqlite:///x.db")  # type: ignore[arg-type]


def test_passwords_never_show_in_errors():
    assert redact_url("postgresql://etl:s3cret@db/flows?schema=x") == "postgresql://etl:***@db/flows?schema=x"
    assert redact_url("postgresql://etl@db/flows") == "postgresql://etl@db/flows"
    assert redact_url("sqlite:///runs.db") == "sqlite:///runs.db"
    with pytest.raises(StoreURLError) as info:
        open_store("postgresql://etl:s3cret@db/flows?schema=")
    assert "s3cret" not in str(info.value) and "etl:***@db" in str(info.value)


def test_exported_from_the_stores_package():
    assert stores.open_store is open_store and stores.StoreURLError is StoreURLError
    assert {"open_store", "StoreURLError"} <= set(stores.__all__)


# -- opening ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "kind", "made"), [
    ("sqlite", SqliteStore, "runs.db"),
    ("json", JsonFileStore, "runs"),
    ("flatbuffers", FlatBuffersFileStore, "runs"),
])
def test_file_stores_open_relative_and_absolute_paths(tmp_path, monkeypatch, scheme, kind, made):
    monkeypatch.chdir(tmp_path)
    state = RunState.initial(small_workflow(), "run-1")
    with open_store(f"{scheme}:///{made}") as store:
        assert isinstance(store, kind)
        store.save(state)
    assert (tmp_path / made).exists()  # relative to the working directory
    with open_store(f"{scheme}:///{tmp_path}/{made}", create=False) as again:  # four slashes: absolute
        assert again.load("run-1") == state
        assert [info.run_id for info in again.list_runs()] == ["run-1"]


@pytest.mark.parametrize("url", ["sqlite:///missing.db", "json:///missing", "flatbuffers:///missing"])
def test_create_false_refuses_a_store_that_does_not_exist(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="no store at") as info:
        open_store(url, create=False)
    assert not isinstance(info.value, StoreURLError)
    assert str(tmp_path / "missing") in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_a_path_that_cannot_be_created_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for url in (f"json:///{blocker}/runs", f"flatbuffers:///{blocker}/runs", f"sqlite:///{blocker}/runs.db"):
        with pytest.raises(StoreError, match="cannot open") as info:
            open_store(url)
        assert not isinstance(info.value, StoreURLError)


def test_sqlite_timeout_reaches_the_store(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/r.db?timeout=3") as store:
        assert isinstance(store, SqliteStore)


def test_unreachable_postgres_is_a_store_error():  # (or psycopg missing: a StoreError too)
    with pytest.raises(StoreError) as info:
        open_store("postgresql://nobody:pw@127.0.0.1:1/db?connect_timeout=2")
    assert not isinstance(info.value, StoreURLError)
    assert "pw@" not in str(info.value)


def postgres_url(conninfo: str, schema: str) -> str:
    """A ``postgresql://`` URL for a libpq conninfo (key=value or URI) and a schema."""
    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    query = {"schema": schema}
    host = params.pop("host", "")
    if host.startswith("/"):
        query["host"], host = host, ""
    user, password = quote(params.pop("user", ""), safe=""), params.pop("password", "")
    auth = user + (":" + quote(password, safe="") if password else "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname", ""), safe="")
    query.update(params)
    return f"postgresql://{auth}{'@' if auth else ''}{host}{':' + port if port else ''}/{dbname}?{urlencode(query)}"


def test_postgres_store_from_a_url():
    from pg_server import fresh_schema

    with fresh_schema() as (conninfo, schema):
        url = postgres_url(conninfo, schema)
        state = RunState.initial(small_workflow(), "pg-1")
        with open_store(url) as store:
            assert type(store).__name__ == "PostgresStore" and store.schema == schema
            store.save(state)
        with open_store(url, create=False) as again:
            assert again.load("pg-1") == state
