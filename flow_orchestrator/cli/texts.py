"""The words of the command line (part of :mod:`flow_orchestrator.cli`, layer L6, interfaces).

The help texts of ``flow-orchestrator`` and of each command (a description, then an
epilog of examples and exit statuses, shown as written), the store URL forms, and the
message saying where the benchmarks are.  :mod:`.main` builds its parser from them; the
tests check that every command's help has examples.  Strings only: nothing here imports
the rest of the package.
"""

from __future__ import annotations

__all__ = ["BENCH_MISSING", "HELP_BENCH", "HELP_BENCH_EPILOG", "HELP_DELETE", "HELP_DELETE_EPILOG", "HELP_DEMO",
           "HELP_DEMO_EPILOG", "HELP_GRAPH",
           "HELP_GRAPH_EPILOG", "HELP_MAIN", "HELP_MAIN_EPILOG", "HELP_RESUME", "HELP_RESUME_EPILOG", "HELP_RUN",
           "HELP_RUN_EPILOG", "HELP_STATUS", "HELP_STATUS_EPILOG", "STORES_HELP"]

STORES_HELP = ("store URL: sqlite:///runs.db (relative path), sqlite:////abs/runs.db, json:///dir, "
               "flatbuffers:///dir, postgresql://user@host/db?schema=NAME, memory:")

BENCH_MISSING = (
    "the benchmarks (bench/run.py) are not installed with the package: run this command from a source "
    "checkout (git clone) or an unpacked sdist (pip download --no-binary :all: --no-deps flow-orchestrator, "
    "then tar xzf the .tar.gz and cd into it)")


# -- help texts ------------------------------------------------------------------------------------

HELP_MAIN = "An embeddable workflow engine for Python with a Cython core: run, resume, inspect and draw workflows."

HELP_MAIN_EPILOG = """commands (COMMAND --help explains each one, with examples):
  run       run MODULE:WORKFLOW, optionally saved to a store
  resume    continue a saved run: completed nodes are not run again
  status    list the runs of a store (damaged and crashed ones too), or show one run
  delete    delete a run from a store (refused while a live process holds it)
  graph     draw a workflow (DOT, Mermaid, SVG, PNG), coloured by a stored run's statuses
  demo      a numpy batch workflow, then ordering a 1,000,000-node DAG
  bench     the benchmark runner of a source checkout

examples:
  flow-orchestrator demo
  flow-orchestrator run pipelines/etl.py:workflow --store sqlite:///runs.db --run-id nightly
  flow-orchestrator status --store sqlite:///runs.db
  flow-orchestrator resume pipelines/etl.py:workflow nightly --store sqlite:///runs.db
  flow-orchestrator delete nightly --store sqlite:///runs.db

exit status: 0 success; 1 a run failed or was cancelled, or the command could not be carried out
(missing run, unreachable store, locked run, incompatible workflow, corrupt run); 2 usage error;
130 interrupted.
"""

_STORE_URLS = """store URLs (--store):
  sqlite:///runs.db             SQLite file, relative to the current directory (three slashes)
  sqlite:////var/lib/runs.db    SQLite file, absolute path (four slashes)
  json:///runs                  a directory of JSON states (json:////abs/dir for an absolute path)
  flatbuffers:///runs           a directory of FlatBuffers states
  postgresql://user@host/db?schema=flows   PostgreSQL (pip install 'flow-orchestrator[postgres]')
  memory:                       nothing saved
"""

HELP_RUN = """Run a workflow to the end and print a summary: node status counts, wall time, failures (node and
error) and the slowest nodes.  MODULE is an importable module (the current directory is searched) or
the path of a .py file; WORKFLOW an attribute of it that is a Workflow, or a function taking no
arguments that returns one.  With --store the run is saved while it runs, so that it can be resumed
after a failure or a crash.  A progress bar goes to stderr when it is a terminal."""

HELP_RUN_EPILOG = """examples:
  flow-orchestrator run pipelines/etl.py:workflow
  flow-orchestrator run pipelines.etl:build --workers 8 --data day='"2025-01-31"' --data limit=100
  flow-orchestrator run etl.py:workflow --store sqlite:///runs.db --run-id nightly-0131 --checkpoint strict
  flow-orchestrator run etl.py:workflow --executor processes --workers 4 --continue-on-error
  flow-orchestrator run etl.py:workflow --executor dask --dask-scheduler tcp://scheduler:8786

""" + _STORE_URLS + """
exit status: 0 every node completed; 1 the run failed or was cancelled, or could not start (a store
error, a workflow module that raised while being imported); 2 usage error; 130 interrupted (Ctrl-C).
"""

HELP_RESUME = """Continue a run saved in a store: its completed nodes are not run again (their outputs and the
run's data are restored); every other node runs.  The workflow must be the one the run was saved
for (same nodes and dependencies), or have new nodes with --allow-new-nodes.  --data adds to (or
overrides) the saved data.  Takes the options of run."""

HELP_RESUME_EPILOG = """examples:
  flow-orchestrator resume etl.py:workflow nightly-0131 --store sqlite:///runs.db
  flow-orchestrator resume etl.py:workflow nightly-0131 --store sqlite:///runs.db --rerun transform
  flow-orchestrator resume etl.py:workflow nightly-0131 --store postgresql://etl@db/flows --allow-new-nodes

""" + _STORE_URLS + """
exit status: 0 the run completed; 1 it failed again, or the run is missing, locked by another
process or saved for an incompatible workflow (or with another --serializer); 2 usage error;
130 interrupted (Ctrl-C).
"""

HELP_STATUS = """Without RUN_ID: the runs of a store (run id, workflow, status, when last updated), most recent
first, read from each run's header (no state is decoded).  Besides running, completed, failed and
cancelled, a run can be crashed (saved as running, but the process that ran it died: resume it)
or corrupt (its saved state is damaged: it cannot be resumed, only deleted); the why column says
why.  With RUN_ID: that run's node status counts, failures (node, error type and message),
timings and slowest nodes, or, for a corrupt run, what is damaged.  --json prints the same as
JSON."""

HELP_STATUS_EPILOG = """examples:
  flow-orchestrator status --store sqlite:///runs.db
  flow-orchestrator status --store sqlite:///runs.db --workflow etl --json
  flow-orchestrator status nightly-0131 --store sqlite:///runs.db
  flow-orchestrator status nightly-0131 --store json:///runs --json | jq .failures

""" + _STORE_URLS + """
exit status: 0 success; 1 the run is missing or corrupt (its report says why), or the store is
unreachable; 2 usage error; 130 interrupted.
"""

HELP_DELETE = """Delete a run from a store: its saved state and checkpoints (a file store's lock file stays).
A damaged (corrupt) run can be deleted, and so can a crashed one.  A run that a live process
holds (running or resuming it) is refused: its lock is taken for the deletion, so a run is never
deleted under a process that would go on writing it.  There is no --force: stop that process
first."""

HELP_DELETE_EPILOG = """examples:
  flow-orchestrator delete nightly-0131 --store sqlite:///runs.db
  flow-orchestrator delete broken-run --store json:///runs

""" + _STORE_URLS + """
exit status: 0 the run was deleted; 1 no such run, a live process holds it, or the store is
unreachable; 2 usage error; 130 interrupted.
"""

HELP_GRAPH = """Draw a workflow as Graphviz DOT or a Mermaid flowchart (text), or as SVG or PNG through Graphviz's
dot program (install Graphviz for those).  With --store and --run-id the nodes are coloured by the
stored run's statuses; without MODULE:WORKFLOW the stored run is drawn from its saved graph."""

HELP_GRAPH_EPILOG = """examples:
  flow-orchestrator graph etl.py:workflow > etl.dot
  flow-orchestrator graph etl.py:workflow --format mermaid --direction LR
  flow-orchestrator graph etl.py:workflow -o etl.svg
  flow-orchestrator graph etl.py:workflow --store sqlite:///runs.db --run-id nightly-0131 -o run.png
  flow-orchestrator graph --store sqlite:///runs.db --run-id nightly-0131 --format svg > run.svg
"""

HELP_DEMO = """Run a CPU-bound numpy batch workflow (a few hundred nodes) with a progress line and print its
summary; then generate a layered DAG (each node depends on DEPS random nodes of the previous layer),
build it with the compiled core and print timings and memory."""

HELP_DEMO_EPILOG = """examples:
  flow-orchestrator demo                 run a numpy batch workflow, then order a 1,000,000-node DAG
  flow-orchestrator demo --workers 4     the same with 4 worker threads
  flow-orchestrator demo --layers 100    order a 100,000-node DAG instead
"""

HELP_BENCH = """Run the benchmark runner, bench/run.py, passing every OPTION to it.  The benchmarks are not
installed with the package: they are looked for in the current directory (a source checkout or an
unpacked sdist), then next to the package (a checkout used in place)."""

HELP_BENCH_EPILOG = """examples:
  flow-orchestrator bench                                 every suite
  flow-orchestrator bench --suite engine middleware --repeat 3
  flow-orchestrator bench --suite graph --nodes 100000 --json graph.json

exit status: the runner's own (2 for its usage errors); 1 when bench/run.py is not found.
"""
