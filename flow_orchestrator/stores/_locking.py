"""Internal: lock files held with ``flock`` (file stores, SQLite), and whether a pid lives.

An ``flock`` belongs to the open file description: the kernel drops it when the last
descriptor closes, which happens when the holder exits, *before* its parent reaps it, so
a killed process (even a zombie that nobody has waited for) never keeps a run locked.  Lock
files are never deleted: unlinking one while another process has it open but not yet
locked would let two processes lock two different files of one name.  A lock whose file
was deleted or replaced all the same is reported lost by :meth:`FileLock.check`.

Holders lock exclusively; :meth:`FileLock.held` probes with a shared lock dropped at
once, and a holder that finds only shared locks in its way tries again, so listing runs
(which probes) never makes a run fail to start.

Where it sits: layer L4 (services, durability): loaded with the stores that lock files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from .errors import LockLostError, RunLockedError, StoreError

__all__ = ["FileLock", "pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a zombie, dead but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process; or no pid at all
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no /proc (not Linux), or it just went
        return True
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")  # state follows "(comm) "


_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_PROBE_WAITS = 200  # tries while only probes (shared locks, held for microseconds) are in the way


def _take(fd: int, path: str, run_id: str) -> None:
    """``flock`` ``fd`` exclusively, now: :class:`RunLockedError` if a holder (an exclusive
    lock) has it.  Shared locks are only :meth:`FileLock.held` probes, dropped at once:
    when one is in the way (a shared lock is granted, so no exclusive one is held), try again."""
    for _ in range(_PROBE_WAITS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise StoreError(f"cannot lock run {run_id!r} ({path}): {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise StoreError(f"cannot lock run {run_id!r} ({path}): {exc}") from exc
            break  # held exclusively: by a holder
        time.sleep(0.0005)
    raise RunLockedError(f"run {run_id!r} is locked by another process or store")


class FileLock:
    """An exclusive ``flock`` on ``path``, created (mode 0644) if missing, never deleted."""

    __slots__ = ("fd", "path", "run_id")

    def __init__(self, path: str, run_id: str) -> None:
        """Lock ``path`` now: :class:`RunLockedError` if another open file holds it,
        :class:`StoreError` if it cannot be opened (or created) or locked."""
        self.path, self.run_id = path, run_id
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StoreError(f"cannot open the lock file {path}: {exc}") from exc
            try:  # an existing lock file we may only read (flock works on any open file)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise StoreError(f"cannot open or create the lock file {path}: {exc}") from exc
        try:
            _take(fd, path, run_id)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    @staticmethod
    def held(path: str) -> bool:
        """Whether a live process holds the lock ``path``, without blocking nor creating it:
        a shared lock taken and dropped at once (a holder's is exclusive).  ``True`` when
        it cannot tell (an unreadable file), so a run is never called crashed wrongly."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # drops the shared lock, if taken
        return False

    def note_holder(self) -> None:
        """Write this process's pid into the file, for people (``flock`` is what counts)."""
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def check(self) -> None:
        """:class:`LockLostError` unless ``path`` is still the file this lock holds."""
        try:
            mine, now = os.fstat(self.fd), os.stat(self.path)
        except OSError as exc:
            raise LockLostError(f"the lock file of run {self.run_id!r} is gone ({self.path}: {exc.strerror}):"
                                " another process may hold the run") from None
        if (mine.st_dev, mine.st_ino) != (now.st_dev, now.st_ino):
            raise LockLostError(f"the lock file of run {self.run_id!r} ({self.path}) was replaced:"
                                " another process may hold the run")

    def release(self) -> None:
        """Close the file, which releases the lock."""
        os.close(self.fd)
