"""Store URLs: one string naming a store, as the command line takes them (``--store URL``).

:func:`open_store` opens the store a URL names; :func:`parse_store_url` only parses it.
The schemes:

``memory:``
    A :class:`~flow_orchestrator.stores.MemoryStore`: nothing outlives the process.
``sqlite:///runs.db`` and ``sqlite:////var/lib/runs.db``
    A :class:`~flow_orchestrator.stores.SqliteStore`.  As in SQLAlchemy, three slashes
    precede a path relative to the working directory and four an absolute one (the
    third slash ends the empty host part).  ``~`` is expanded, ``%XX`` escapes are
    decoded.  Option: ``?timeout=SECONDS`` (how long to wait for another process's
    write transaction; default 30).
``json:///runs`` and ``json:////var/lib/runs``
    A :class:`~flow_orchestrator.stores.JsonFileStore` on that directory (same path rules).
``flatbuffers:///runs`` and ``flatbuffers:////var/lib/runs``
    A :class:`~flow_orchestrator.stores.FlatBuffersFileStore` on that directory.
``postgresql://user:password@host:port/dbname?schema=runs`` (also ``postgres://``)
    A :class:`~flow_orchestrator.stores.PostgresStore` (the ``postgres`` extra).  The URL
    is handed to libpq as it is, so every libpq URI form and parameter works
    (``?sslmode=require``, ``postgresql:///db?host=/var/run/postgresql``...), except
    two parameters taken by the store: ``schema`` (default ``public``) and
    ``connect_timeout`` (whole seconds, default 10).

Errors are :class:`~flow_orchestrator.stores.StoreError` s: :class:`StoreURLError` (also
a ``ValueError``) for a URL that names no store (unknown scheme, a host where none is
allowed, no path, an unknown option), and a plain :class:`StoreError` when the store
cannot be opened (a directory that cannot be created, an unreachable server, psycopg
missing, or with ``create=False`` a store that does not exist yet).  Messages never
show a password: see :func:`redact_url`.

Where it sits: layer L4 (services, durability): imports each store only when a URL names
it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from .base import Store
from .errors import StoreError

__all__ = ["SCHEMES", "StoreURL", "StoreURLError", "open_store", "parse_store_url", "redact_url"]

SCHEMES = ("memory", "sqlite", "json", "flatbuffers", "postgresql")
"""The store URL schemes (``postgres`` is accepted as an alias of ``postgresql``)."""

_FILE_SCHEMES = ("sqlite", "json", "flatbuffers")
_EXAMPLES = ("memory:, sqlite:///runs.db (relative path), sqlite:////abs/runs.db (absolute), json:///dir, "
             "flatbuffers:///dir, postgresql://user@host/db?schema=NAME")


class StoreURLError(StoreError, ValueError):
    """A store URL is malformed or names no known kind of store."""


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL.

    ``scheme`` is one of :data:`SCHEMES`; ``path`` the file or directory of a file store
    (as given: relative to the working directory or absolute); ``timeout`` SQLite's
    ``?timeout=``; ``conninfo`` the libpq URI of a PostgreSQL store (without the
    store's own parameters), ``schema`` and ``connect_timeout`` those parameters.
    ``None``: not given (the store's default).
    """

    scheme: str
    path: str | None = None
    timeout: float | None = None
    conninfo: str | None = None
    schema: str | None = None
    connect_timeout: int | None = None


def redact_url(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _fail(url: str, problem: str) -> StoreURLError:
    return StoreURLError(f"invalid store URL {redact_url(url)!r}: {problem}")


def _seconds(url: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise _fail(url, f"{name} must be a positive number of seconds, got {text!r}")
    return value


def _file_url(url: str, scheme: str, netloc: str, path: str, query: str) -> StoreURL:
    what = "database file" if scheme == "sqlite" else "directory"
    form = f"{scheme}:///relative/path or {scheme}:////absolute/path"
    if netloc:
        raise _fail(url, f"{scheme} URLs name no host; write {form} (three slashes before a relative path, "
                         "four before an absolute one)")
    if not path.startswith("/") or path == "/":
        raise _fail(url, f"no {what} path; write {form}")
    local = os.path.expanduser(unquote(path[1:]))
    timeout = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if scheme == "sqlite" and name == "timeout":
            timeout = _seconds(url, name, value)
        else:
            known = " (sqlite URLs take ?timeout=SECONDS)" if scheme == "sqlite" else f" ({scheme} URLs take none)"
            raise _fail(url, f"unknown option {name!r}{known}")
    return StoreURL(scheme, path=local, timeout=timeout)


def _postgres_url(url: str, netloc: str, path: str, query: str) -> StoreURL:
    schema = connect_timeout = None
    rest = []
    for raw in filter(None, query.split("&")):
        pairs = parse_qsl(raw, keep_blank_values=True)
        name, value = pairs[0] if pairs else (raw, "")
        if name == "schema":
            if not value:
                raise _fail(url, "?schema= needs a schema name")
            schema = value
        elif name == "connect_timeout":
            if not value.isdigit() or int(value) < 1:
                raise _fail(url, f"connect_timeout must be a whole number of seconds >= 1, got {value!r}")
            connect_timeout = int(value)
        else:
            rest.append(raw)  # as written: libpq decodes it
    conninfo = f"postgresql://{netloc}{path}" + ("?" + "&".join(rest) if rest else "")
    return StoreURL("postgresql", conninfo=conninfo, schema=schema, connect_timeout=connect_timeout)


def parse_store_url(url: str) -> StoreURL:
    """Parse a store URL (see the module documentation) without opening anything.

    Raises :class:`StoreURLError` for an unknown scheme or a malformed URL.
    """
    if not isinstance(url, str):
        raise StoreURLError(f"a store URL must be a str, got {type(url).__name__}")
    if not url.strip():
        raise StoreURLError(f"empty store URL; examples: {_EXAMPLES}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _fail(url, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme == "postgres":
        scheme = "postgresql"
    if not scheme or ":" not in url:
        hint = f"; for a SQLite file write sqlite:///{url}" if url.endswith((".db", ".sqlite", ".sqlite3")) else ""
        raise _fail(url, f"no scheme{hint}; examples: {_EXAMPLES}")
    if scheme not in SCHEMES:
        raise _fail(url, f"unknown scheme {parts.scheme!r}; the schemes are {', '.join(SCHEMES)} "
                         f"(examples: {_EXAMPLES})")
    if parts.fragment:
        raise _fail(url, "a fragment (#...) means nothing here; percent-encode '#' as %23")
    if scheme == "postgresql":
        return _postgres_url(url, parts.netloc, parts.path, parts.query)
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise _fail(url, "memory: takes no host, path or options")
        return StoreURL("memory")
    return _file_url(url, scheme, parts.netloc, parts.path, parts.query)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store that ``url`` names; the caller closes it (``with open_store(url) as store:``).

    The URLs (see the module documentation for the details):

    * ``memory:``: a :class:`~flow_orchestrator.stores.MemoryStore` (no persistence);
    * ``sqlite:///runs.db`` (relative to the working directory) or
      ``sqlite:////abs/runs.db`` (absolute), option ``?timeout=SECONDS``: a
      :class:`~flow_orchestrator.stores.SqliteStore`;
    * ``json:///dir`` / ``json:////abs/dir``: a :class:`~flow_orchestrator.stores.JsonFileStore`;
    * ``flatbuffers:///dir`` / ``flatbuffers:////abs/dir``: a
      :class:`~flow_orchestrator.stores.FlatBuffersFileStore`;
    * ``postgresql://user:password@host:port/db`` (or ``postgres://``), options
      ``?schema=NAME`` and ``?connect_timeout=SECONDS`` besides libpq's own: a
      :class:`~flow_orchestrator.stores.PostgresStore`.

    With ``create=False`` a SQLite file or a store directory that does not exist raises
    :class:`StoreError` instead of being created (for commands that only read).

    Raises :class:`StoreURLError` for an unknown scheme or a malformed URL, and
    :class:`StoreError` when the store cannot be opened (unreachable server, a path
    that cannot be created or read, psycopg not installed).
    """
    spec = parse_store_url(url)
    if spec.scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if spec.scheme == "postgresql":
        from .postgres import PostgresStore

        given: dict[str, Any] = {"schema": spec.schema, "connect_timeout": spec.connect_timeout}
        return PostgresStore(spec.conninfo or "", **{k: v for k, v in given.items() if v is not None})
    path = spec.path or ""
    exists = os.path.isfile(path) if spec.scheme == "sqlite" else os.path.isdir(path)
    if not create and not exists:
        kind = "SQLite database file" if spec.scheme == "sqlite" else "store directory"
        raise StoreError(f"no store at {redact_url(url)}: {kind} {os.path.abspath(path)} does not exist")
    try:
        if spec.scheme == "sqlite":
            from .sqlite import SqliteStore

            return SqliteStore(path) if spec.timeout is None else SqliteStore(path, timeout=spec.timeout)
        from .files import FlatBuffersFileStore, JsonFileStore

        return JsonFileStore(path) if spec.scheme == "json" else FlatBuffersFileStore(path)
    except OSError as exc:
        raise StoreError(f"cannot open the store {redact_url(url)}: {exc.strerror or exc} "
                         f"({os.path.abspath(path)})") from exc
