"""The Python side of the compiled core's seam satisfies its Protocols (``_ext.pyi``).

Type-checked only: ``tests/test_typing.py`` runs mypy on this file, and nothing imports
it at run time (the Protocols exist only in the stub).  Each line below assigns what the
engine really hands the core to a variable typed with the Protocol the core expects, so a
hook renamed, an argument added or a type changed on either side fails mypy here, naming
the Protocol and the member.
"""

from __future__ import annotations

from flow_orchestrator._ext import (
    CallbackTimer,
    CheckpointWriter,
    DedicatedStarter,
    HelperStarter,
    NodeEventSink,
    RetryDelay,
)
from flow_orchestrator._timer import Timer
from flow_orchestrator.checkpoint import RunWriter
from flow_orchestrator.engine import Engine, _helpers
from flow_orchestrator.observers import Dispatcher
from flow_orchestrator.workflow import NodeOptions


def the_engine_hands_the_core_what_it_expects(
    dispatcher: Dispatcher, writer: RunWriter, timer: Timer, engine: Engine, options: NodeOptions,
) -> None:
    events: NodeEventSink = dispatcher          # begin_run(events=): the run's observers
    checkpoint: CheckpointWriter = writer       # begin_run(checkpoint=): DurableRun.prepare()
    deadlines: CallbackTimer = timer            # begin_run(timer=): Engine._timer
    start, dedicated = _helpers(engine)
    starter: HelperStarter = start              # Crew(start=): a helper task on the pool
    replacement: DedicatedStarter = dedicated   # Crew(dedicated=): a thread for one run
    # CompiledWorkflow(retry_delay=): the compiler's lambda over the option table.
    retry_delay: RetryDelay = lambda slot, retry: options.retry_delay_for(retry)
    del events, checkpoint, deadlines, starter, replacement, retry_delay
