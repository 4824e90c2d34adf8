"""The errors of the storage layer, all :class:`~flow_orchestrator.errors.FlowError`."""

from __future__ import annotations

from ..errors import FlowError

__all__ = ["CheckpointError", "CheckpointFailedError", "LockLostError", "RunExistsError", "RunLockedError",
           "RunNotFoundError", "StoreError"]


class StoreError(FlowError):
    """A store cannot do what was asked: closed, an invalid run id, an I/O failure."""


class RunNotFoundError(StoreError, LookupError):
    """The store holds no run with that id."""


class RunLockedError(StoreError):
    """The run is locked for exclusive use by another live process or another store object."""


class LockLostError(StoreError):
    """A held run lock is gone: its PostgreSQL session ended (terminated by the server, a
    network cut), its lock file was deleted or replaced, or it was released.  Another
    process may hold the run now; a durable run that finds this out stops at once and
    writes nothing more (it ends with :class:`CheckpointFailedError` caused by this)."""


class CheckpointError(StoreError, ValueError):
    """A checkpoint record is invalid (wrong types, unknown status, node id out of range,
    an output on a node that did not complete or none on one that did)."""


class RunExistsError(StoreError):
    """A new durable run was given the id of a run the store already holds (resume it,
    or delete it first: a store never overwrites a run's state by accident)."""


class CheckpointFailedError(StoreError):
    """Saving a run's state failed while it ran (the store refused a write, or the
    workflow data could not be serialized); the run was cancelled.

    ``result`` is the run's :class:`~flow_orchestrator.engine.RunResult`; the store keeps
    the state of the last successful save, from which the run can resume.
    """

    result: object = None
