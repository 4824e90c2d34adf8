"""Helpers shared by the engine tests (``tests/`` is on ``sys.path``, see pyproject)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from flow_orchestrator.engine import RunResult
from flow_orchestrator.status import TERMINAL, NodeStatus


def assert_terminal(result: RunResult) -> None:
    bad = [(name, NodeStatus(int(s))) for name, s in zip(result.workflow.names, result.statuses)
           if NodeStatus(int(s)) not in TERMINAL]
    assert not bad, f"nodes not in a terminal status: {bad}"


class StartLog:
    """Thread-safe record of which nodes started, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.order: list[str] = []

    def __call__(self, name: str) -> None:
        with self._lock:
            self.order.append(name)

    @property
    def started(self) -> set[str]:
        with self._lock:
            return set(self.order)


def ok():
    """An action that succeeds with 1 (module level: process pools can pickle it)."""
    return 1


def fail():
    """An action that always raises ValueError."""
    raise ValueError("fails")


def flaky(ctx):
    """An action whose first attempt fails; later ones return the attempt number."""
    if ctx.attempt == 1:
        raise ConnectionError("first attempt")
    return ctx.attempt


# -- values that do not cross process boundaries (module level: the workers import them) -------


class Holder:
    """Holds a lock: cannot be pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def _make_holder() -> Holder:
    return Holder()


class Reborn:
    """Pickles fine, but unpickles into a :class:`Holder` (which does not pickle): an
    output that reaches the engine and then cannot be sent to its dependents."""

    def __reduce__(self):
        return (_make_holder, ())


class LockedError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("locked")
        self.lock = threading.Lock()


def _refuse_to_load(message: str) -> Exception:
    raise TypeError(f"refusing to unpickle {message!r}")


class UnloadableError(Exception):
    """Pickles, but cannot be unpickled: would break a ProcessPoolExecutor if it reached
    the pool's result thread.  (A custom ``__reduce__``, so that tblib's exception
    pickling, installed by ``import distributed``, does not make it loadable.)"""

    def __reduce__(self):
        return (_refuse_to_load, (str(self),))


def returns_lock():
    """An output that cannot be pickled."""
    return threading.Lock()


def returns_reborn():
    return Reborn()


def raises_locked():
    raise LockedError()


def raises_unloadable():
    raise UnloadableError("x and y")


def with_lock(ctx, lock=None):
    """Meant for ``functools.partial(with_lock, lock=threading.Lock())``: an action that
    cannot be pickled, by pickle or cloudpickle."""
    return 1


def local_dask_cluster():  # type: ignore[no-untyped-def]
    """A LocalCluster of 2 worker processes that can import the test modules.

    pytest (``--import-mode=importlib``) names a test module ``tests.<name>``, and dask
    pickles its functions by that name; the workers find it through a directory holding
    only a ``tests`` link, so they never see the source tree's uncompiled package.
    """
    import pathlib
    import sys
    import tempfile

    import distributed

    tests = pathlib.Path(__file__).resolve().parent
    shim = pathlib.Path(tempfile.mkdtemp(prefix="fo-dask-path-"))
    (shim / "tests").symlink_to(tests, target_is_directory=True)
    # Spawned workers start with this process's sys.path.
    for entry in (str(shim), str(tests)):
        if entry not in sys.path:
            sys.path.append(entry)
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)


def popen_interruptible(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
    """``Popen`` for a child that a test stops with SIGINT (Ctrl-C), sent to its pid.

    The child gets a session of its own (a Ctrl-C at the terminal reaches only pytest,
    and the test alone decides when the child sees one), and SIGINT at its default
    disposition: a shell without job control starts a background job (``pytest &``, a CI
    step) with SIGINT ignored, children inherit that, and Python then never raises
    KeyboardInterrupt.  An ignored SIGINT is swapped for a handler while the child
    starts (``exec`` resets a handler to the default, never an ignore), with no
    ``preexec_fn`` (unsafe while other threads run).
    """
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(list(args), start_new_session=True, **kwargs)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_after_first_line(args: Sequence[str], *, cwd: Any, delay: float = 0.0,
                               timeout: float = 60) -> tuple[str, int, str, str]:
    """Start ``args`` (:func:`popen_interruptible`), wait for its first line of output,
    ``delay`` seconds more, then send it SIGINT: ``(first line, exit code, rest of stdout,
    stderr)``.  ``timeout`` only keeps a hung child from hanging the suite."""
    child = popen_interruptible(args, cwd=cwd)
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        if delay:
            time.sleep(delay)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return first.strip(), child.returncode, out, err
