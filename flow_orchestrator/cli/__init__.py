"""The ``flow-orchestrator`` command line (also ``python -m flow_orchestrator``).

Layer L6, interfaces, the top of the package: the command line uses the engine, the
stores and the renderer like any other program using the library, and no module below it
imports it (``flow_orchestrator/demo.py`` and ``batch_demo.py``, the demos' old places,
only re-export them).

Commands: ``run`` and ``resume`` a workflow (``MODULE:WORKFLOW``), optionally saved to a
store named by a URL (:func:`flow_orchestrator.stores.open_store`); ``status`` of the runs
in a store (corrupt and crashed ones included); ``delete`` a run (not one a live process
holds); ``graph`` of a workflow or a stored run (DOT, Mermaid, SVG, PNG); ``demo``;
``bench``, the benchmark runner of a source checkout.  ``flow-orchestrator COMMAND --help``
explains each one, with examples.

Exit status: 0 on success, 1 when a run failed or was cancelled or the command could not
be carried out (a missing run, an unreachable store, a locked run, an incompatible
workflow, a corrupt run...), 2 on a usage error (bad arguments, a module or workflow that cannot be
found), 130 when interrupted.  Errors are one line on stderr, never a traceback (set
``FLOW_ORCHESTRATOR_TRACEBACK=1`` to see the traceback of an unexpected one).

The modules (``main`` imports the others; they import neither ``main`` nor one another):

==============  =========================================================================
``main``        the parser and the commands (``cmd_run``, ``cmd_status``...); :func:`main`
``report``      run summaries and run lists, as text tables or JSON-ready dicts
``targets``     loading ``MODULE:WORKFLOW`` and ``--data``, finding ``bench/run.py``;
                :class:`~flow_orchestrator.cli.targets.CliError`, the commands' one-line error
``texts``       the help texts, epilogs and exit statuses of each command
``batch_demo``  ``demo``'s first part: a numpy batch workflow, saved and resumed
``demo``        ``demo``'s second part: build and order a large generated DAG
==============  =========================================================================
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
