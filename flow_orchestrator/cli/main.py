"""The ``flow-orchestrator`` command line: its parser and its commands (part of
:mod:`flow_orchestrator.cli`, layer L6, interfaces).

:func:`main` parses the arguments and dispatches to one ``cmd_*`` function a command
(``run``, ``resume``, ``status``, ``delete``, ``graph``, ``demo``, ``bench``); it alone writes output
and turns errors into one line on stderr and an exit status (see the package docstring).
The commands load their targets with :mod:`.targets`, print what :mod:`.report` formats,
and take their help from :mod:`.texts`; none of those imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import (
    FlowError,
    GraphvizNotFoundError,
    IncompatibleStateError,
    RenderTooLargeError,
)
from ..result import RunResult
from ..serialization import get_serializer, resume_serializer, serializer_names
from ..state import CorruptStateError, RunState
from ..status import NodeStatus
from ..stores import (
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
    Store,
    StoreURLError,
    open_store,
)
from ..stores.base import CRASHED
from ..stores.urls import parse_store_url, redact_url
from ..workflow import Workflow
from . import report, targets, texts
from .targets import CliError, Target, usage

__all__ = ["main"]

PROG = "flow-orchestrator"
_FORMATS = ("dot", "mermaid", "svg", "png")
_SUFFIX_FORMATS = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid", ".svg": "svg",
                   ".png": "png"}


# -- output ------------------------------------------------------------------------------------------


def _out(text: str = "") -> None:
    """Write a line of the command's output to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(command: str | None, message: str) -> None:
    """Write a one-line error to stderr."""
    prefix = f"{PROG} {command}" if command else PROG
    sys.stderr.write(f"{prefix}: error: {report.one_line(message, 2000)}\n")
    sys.stderr.flush()


def _out_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout."""
    _out(json.dumps(value, indent=2, ensure_ascii=False))


# -- running --------------------------------------------------------------------------------------


def _check_store_url(url: str | None) -> None:
    """A bad ``--store`` URL is a usage error, reported before any import or connection."""
    if url is not None:
        parse_store_url(url)  # StoreURLError (exit 2) before anything is imported or opened


@contextlib.contextmanager
def _engine(args: argparse.Namespace, target: Target) -> Iterator[Engine]:
    """The engine of ``--executor`` and ``--workers`` (with its dask client, if any)."""
    with contextlib.ExitStack() as stack:
        workers = args.workers
        executor: Any = {"threads": None, "serial": "serial", "processes": "processes"}.get(args.executor)
        if args.executor == "dask" or args.dask_scheduler:
            executor, threads = _dask_executor(args, target, stack)
            workers = workers or threads
        yield stack.enter_context(Engine(workers, executor))


def _dask_executor(args: argparse.Namespace, target: Target, stack: contextlib.ExitStack) -> tuple[Any, int]:
    """A DaskExecutor on ``--dask-scheduler`` or on a new LocalCluster; and its thread count."""
    try:
        import distributed

        from ..dask_executor import DaskExecutor
    except ImportError as exc:
        raise CliError(f"--executor dask needs dask.distributed ({exc}): "
                       "pip install 'flow-orchestrator[dask]'") from None
    try:
        if args.dask_scheduler:
            client = stack.enter_context(distributed.Client(args.dask_scheduler, timeout="10s"))
            if target.file and not target.file.endswith("__init__.py"):
                client.upload_file(target.file)  # so that the workers can import the actions' module
        else:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=args.workers or os.cpu_count() or 1, threads_per_worker=1, dashboard_address=None,
                silence_logs=logging.ERROR))
            client = stack.enter_context(distributed.Client(cluster))
    except (OSError, TimeoutError) as exc:
        where = args.dask_scheduler or "a local cluster"
        raise CliError(f"cannot connect to the dask scheduler at {where}: {exc}") from None
    threads = sum(client.nthreads().values()) or 1
    return DaskExecutor(client), threads


def _observers(args: argparse.Namespace, total: int, restored: int) -> list[Any]:
    """A progress bar on stderr, when it is a terminal or ``--progress`` forces it; it
    counts ``total`` nodes, ``restored`` of them done already (resumed)."""
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    if not show:
        return []
    from ..progress import ProgressObserver

    # without tqdm: the plain progress line, on stderr (rewritten in place on a terminal)
    return [ProgressObserver(total=total, file=sys.stderr, interval=0.25, bar_options={"initial": restored},
                             line=True)]


def _check_run_options(args: argparse.Namespace, *, new_run: bool) -> None:
    """Usage errors among the options of run and resume, before anything is imported."""
    if new_run and args.checkpoint is not None and not args.store:
        raise usage("--checkpoint needs --store")
    if new_run and args.serializer is not None and not args.store:
        raise usage("--serializer needs --store")
    if args.dask_scheduler and args.executor not in (None, "dask"):
        raise usage(f"--dask-scheduler goes with --executor dask, not --executor {args.executor}")
    args.checkpoint = args.checkpoint or "batched"
    _check_store_url(args.store)


def _execute(args: argparse.Namespace, workflow: Workflow, target: Target, store: Store | None,
             restored: int = 0, **options: Any) -> int:
    """Run (or resume, ``restored`` nodes done already) ``workflow``, print its summary; the exit status."""
    if store is not None:
        options.update(store=store, checkpoint=args.checkpoint)
    if args.continue_on_error:
        options["continue_on_error"] = True
    result: RunResult | None
    code = 0
    observers = _observers(args, len(workflow), restored)
    with _engine(args, target) as engine:
        try:
            result = engine.run(workflow, raise_on_failure=False, observers=observers, **options)
        except KeyboardInterrupt as exc:
            result, code = getattr(exc, "result", None), 130
        except FlowError as exc:
            result = getattr(exc, "result", None)
            if not isinstance(result, RunResult):
                raise
            code = 1  # a checkpoint failed mid-run: show how far it got, then the error
            _err(args.command, str(exc))
    if result is not None:
        _out(report.summary_text(report.view_of_result(result)))
        if store is not None and args.store:
            _out(f"\nstore: {redact_url(args.store)}")
            if not result.ok and parse_store_url(args.store).scheme != "memory":
                _out(f"resume with: {PROG} resume {shlex.quote(target.spec)} {shlex.quote(result.run_id)} "
                     f"--store {shlex.quote(redact_url(args.store))}")
    if code == 130:
        _err(args.command, "interrupted")
        return code
    return code or (0 if result is not None and result.ok else 1)


def cmd_run(args: argparse.Namespace) -> int:
    """``run MODULE:WORKFLOW``: run a workflow, optionally saved to a store."""
    data = targets.parse_data(args.data)
    _check_run_options(args, new_run=True)
    workflow, target = targets.load_workflow(args.target)
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(open_store(args.store)) if args.store else None
        try:
            serializer = get_serializer(args.serializer, allow_pickle=True) if args.serializer else None
            return _execute(args, workflow, target, store, data=data or None, run_id=args.run_id,
                            serializer=serializer)
        except RunExistsError:
            raise CliError(f"run {args.run_id!r} already exists in {redact_url(args.store)}: resume it "
                           f"({PROG} resume {shlex.quote(target.spec)} {args.run_id} --store ...) or choose "
                           "another --run-id") from None


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume MODULE:WORKFLOW RUN_ID --store URL``: continue a saved run."""
    data = targets.parse_data(args.data)
    _check_run_options(args, new_run=False)
    workflow, target = targets.load_workflow(args.target)
    unknown = [name for name in args.rerun if name not in workflow]
    if unknown:
        raise usage(f"--rerun: workflow {workflow.name!r} has no node {unknown[0]!r}")
    with open_store(args.store, create=False) as store:
        state = _load_state(store, args.run_id, args.store)
        done = {name for name, s in zip(state.node_names, state.statuses.tolist()) if s == NodeStatus.COMPLETED}
        if args.rerun:
            done -= set(workflow.descendants(args.rerun, include_self=True))
        # the serializer the run was saved with; --serializer, if given, must name it
        serializer = resume_serializer(state.serializer, get_serializer(args.serializer, allow_pickle=True)
                                       if args.serializer else None)
        options: dict[str, Any] = {"resume": args.run_id, "rerun": args.rerun,
                                   "allow_new_nodes": args.allow_new_nodes, "serializer": serializer}
        if data:
            options["data"] = {**state.load_data(serializer), **data}
        return _execute(args, workflow, target, store, len(done & set(workflow.names)), **options)


def _load_state(store: Store, run_id: str, url: str) -> RunState:
    """The saved state of ``run_id``; a one-line error naming the store if there is none."""
    try:
        return store.load(run_id)
    except RunNotFoundError:
        raise CliError(f"no run {run_id!r} in {redact_url(url)} ({PROG} status --store URL lists "
                       "its runs)") from None


def cmd_status(args: argparse.Namespace) -> int:
    """``status --store URL [RUN_ID]``: the runs of a store, or one run in detail (exit
    status 1 when that run's state is damaged: its report says corrupt, and why)."""
    with open_store(args.store, create=False) as store:
        if args.run_id is None:
            runs = store.list_runs(args.workflow)
            if args.json:
                _out_json(report.runs_json(runs))
            else:
                _out(report.runs_table(runs) if runs else f"no runs in {redact_url(args.store)}")
            return 0
        try:
            state = _load_state(store, args.run_id, args.store)
        except CorruptStateError as exc:
            if args.json:
                _out_json(report.corrupt_json(args.run_id, str(exc)))
            else:
                _out(report.corrupt_text(args.run_id, str(exc)))
                _out(f"delete it with: {PROG} delete {shlex.quote(args.run_id)} --store "
                     f"{shlex.quote(redact_url(args.store))}")
            return 1
        view = report.view_of_state(state)
        if state.run_status == "running" and any(
                r.run_id == state.run_id and r.run_status == CRASHED for r in store.list_runs(state.workflow)):
            view = dataclasses.replace(view, status=CRASHED)
    if args.json:
        _out_json(report.summary_json(view, args.slowest))
    else:
        _out(report.summary_text(view, args.slowest))
        if view.status == CRASHED:
            _out(f"\nits process died while it ran (nobody holds its lock): resume it with {PROG} resume "
                 f"MODULE:WORKFLOW {shlex.quote(state.run_id)} --store {shlex.quote(redact_url(args.store))}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """``delete RUN_ID --store URL``: forget a run (damaged or not) unless a live process
    holds it: its lock is taken for the deletion."""
    where = redact_url(args.store)
    with open_store(args.store, create=False) as store:
        try:
            with store.lock(args.run_id):
                store.delete(args.run_id)
        except RunLockedError as exc:
            raise CliError(f"{exc}: a live process is running or resuming it; it is not deleted "
                           "(stop that process first, or wait for it to end)") from None
        except RunNotFoundError:
            raise CliError(f"no run {args.run_id!r} in {where} ({PROG} status --store URL lists its runs)") from None
    _out(f"deleted run {args.run_id} from {where}")
    return 0


def _graph_format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.output:
        suffix = Path(args.output).suffix.lower()
        if suffix not in _SUFFIX_FORMATS:
            raise usage(f"cannot tell the format from {args.output!r}; "
                        f"pass --format {{{','.join(_FORMATS)}}}")
        return _SUFFIX_FORMATS[suffix]
    return "dot"


def cmd_graph(args: argparse.Namespace) -> int:
    """``graph MODULE:WORKFLOW``: draw a workflow, coloured by a stored run's statuses if given."""
    from .. import render

    if (args.store is None) != (args.run_id is None):
        raise usage("--store and --run-id go together (the stored run whose statuses colour the graph)")
    if args.target is None and args.run_id is None:
        raise usage("give MODULE:WORKFLOW, or --store and --run-id to draw a stored run")
    fmt = _graph_format(args)
    if fmt == "png" and not args.output and sys.stdout.isatty():
        raise usage("PNG is binary: write it to a file with -o FILE (or redirect stdout)")
    _check_store_url(args.store)
    subject: Any = targets.load_workflow(args.target)[0] if args.target else None
    options: dict[str, Any] = {"max_nodes": args.max_nodes or None, "direction": args.direction}
    if args.run_id is not None:
        with open_store(args.store, create=False) as store:
            state = _load_state(store, args.run_id, args.store)
        if subject is None:
            subject = state
        else:  # the workflow, coloured by the stored statuses (matched by name; new nodes pending)
            saved = dict(zip(state.node_names, state.statuses.tolist()))
            options["statuses"] = [saved.get(name, int(NodeStatus.PENDING)) for name in subject.names]
            options["title"] = f"{subject.name} run {state.run_id} ({state.run_status})"
    if fmt in ("dot", "mermaid"):
        text = (render.to_dot if fmt == "dot" else render.to_mermaid)(subject, **options)
        data = text.encode("utf-8")
    else:
        data = render.render(subject, format=fmt, **options)
    if args.output:
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the batch workflow demo, then ordering a large generated DAG."""
    from .batch_demo import run_batch_demo
    from .demo import format_figures, run_demo

    if min(args.layers, args.width, args.deps, args.repeat) < 1 or (args.workers is not None and args.workers < 1):
        raise usage("--layers, --width, --deps, --repeat and --workers must be >= 1")
    result = run_batch_demo(args.workers, repeat=args.repeat)
    if not result.ok:
        return 1
    _out()
    _out(format_figures(run_demo(args.layers, args.width, args.deps, args.repeat)))
    return 0


# -- bench ------------------------------------------------------------------------------------------


def cmd_bench(argv: Sequence[str]) -> int:
    """``bench [OPTIONS]``: find ``bench/run.py`` and run it with ``OPTIONS``."""
    root = targets.find_bench()
    if any(a in ("-h", "--help") for a in argv):
        help_parser = argparse.ArgumentParser(prog=f"{PROG} bench", description=texts.HELP_BENCH,
                                              epilog=texts.HELP_BENCH_EPILOG,
                                              formatter_class=argparse.RawDescriptionHelpFormatter)
        _bench_arguments(help_parser)
        sys.stdout.write(help_parser.format_help())
        if root is None:
            _out(f"\n{texts.BENCH_MISSING}")
            return 0
        _out(f"\nThe runner's options ({root / 'bench' / 'run.py'}):\n")
    if root is None:
        _err("bench", texts.BENCH_MISSING)
        return 1
    module = targets.bench_module(root)
    program, sys.argv[0] = sys.argv[0], f"{PROG} bench"  # the name its argparse shows
    try:
        return int(module.main(list(argv)) or 0)
    except SystemExit as exc:  # its argparse: --help, or bad options
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        sys.argv[0] = program


# -- the parser ---------------------------------------------------------------------------------------


def _command(commands: Any, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand's parser, its description and epilog (examples) kept as written."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    """bench's one argument: everything, for bench/run.py (only shown in help: main() passes it through)."""
    parser.add_argument("options", nargs="*", metavar="OPTION", help="options for bench/run.py, passed through "
                        "(--suite, --nodes, --repeat, --workers, --json...)")


def _run_options(parser: argparse.ArgumentParser, *, store_required: bool) -> None:
    parser.add_argument("target", metavar="MODULE:WORKFLOW",
                        help="a module (importable, or a path to a .py file) and an attribute of it that is a "
                             "Workflow or a zero-argument callable returning one")
    parser.add_argument("--store", metavar="URL", required=store_required, help=texts.STORES_HELP)
    parser.add_argument("--workers", type=_positive, metavar="N",
                        help="threads (or processes, or attempts in flight on dask) of the run (default: CPU count)")
    parser.add_argument("--executor", choices=("threads", "serial", "processes", "dask"), default=None,
                        help="where nodes run (default: threads)")
    parser.add_argument("--dask-scheduler", metavar="ADDRESS",
                        help="with --executor dask: the scheduler to use (default: a new LocalCluster)")
    parser.add_argument("--checkpoint", choices=("strict", "batched", "end"),
                        help="with --store: when progress is saved (default: batched)")
    parser.add_argument("--serializer", choices=serializer_names(), default=None,
                        help="with --store: how outputs and data are saved (default: json; pickle saves any "
                             "picklable value, but never use it with a store others can write to); resume uses "
                             "the one the run was saved with")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                        help="workflow data (repeatable); VALUE is JSON when it parses as JSON, else a string")
    parser.add_argument("--continue-on-error", action="store_true",
                        help="after a failure, let independent branches finish (default: fail fast)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a live progress bar on stderr (default: when stderr is a terminal)")


def _count(text: str, least: int = 0) -> int:
    """An argparse type: a whole number >= ``least``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
    return value


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return _count(text, 1)


def _parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog=PROG, description=texts.HELP_MAIN, epilog=texts.HELP_MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(commands, "run", "run a workflow", texts.HELP_RUN, texts.HELP_RUN_EPILOG)
    _run_options(run, store_required=False)
    run.add_argument("--run-id", help="the run's id (default: generated); with --store it must be new")
    run.set_defaults(handler=cmd_run)

    resume = _command(commands, "resume", "resume a saved run", texts.HELP_RESUME, texts.HELP_RESUME_EPILOG)
    _run_options(resume, store_required=True)
    resume.add_argument("run_id", metavar="RUN_ID", help="the run to resume")
    resume.add_argument("--rerun", action="append", default=[], metavar="NODE",
                        help="run NODE again, with everything depending on it, even if it completed (repeatable)")
    resume.add_argument("--allow-new-nodes", action="store_true",
                        help="accept a workflow with nodes the saved run does not know (they run)")
    resume.set_defaults(handler=cmd_resume)

    status = _command(commands, "status", "show the runs of a store, or one run", texts.HELP_STATUS,
                      texts.HELP_STATUS_EPILOG)
    status.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to show (default: list the runs)")
    status.add_argument("--store", metavar="URL", required=True, help=texts.STORES_HELP)
    status.add_argument("--workflow", metavar="NAME", help="list only the runs of this workflow")
    status.add_argument("--slowest", type=_count, default=5, metavar="N", help="slowest nodes shown (default: 5)")
    status.add_argument("--json", action="store_true", help="machine-readable JSON output")
    status.set_defaults(handler=cmd_status)

    delete = _command(commands, "delete", "delete a run from a store", texts.HELP_DELETE, texts.HELP_DELETE_EPILOG)
    delete.add_argument("run_id", metavar="RUN_ID", help="the run to delete (damaged or not)")
    delete.add_argument("--store", metavar="URL", required=True, help=texts.STORES_HELP)
    delete.set_defaults(handler=cmd_delete)

    graph = _command(commands, "graph", "draw a workflow or a stored run", texts.HELP_GRAPH, texts.HELP_GRAPH_EPILOG)
    graph.add_argument("target", nargs="?", metavar="MODULE:WORKFLOW", help="the workflow to draw")
    graph.add_argument("--store", metavar="URL", help=texts.STORES_HELP)
    graph.add_argument("--run-id", help="with --store: colour the nodes by this stored run's statuses")
    graph.add_argument("--format", choices=_FORMATS,
                       help="output format (default: from -o's suffix, else dot); svg and png need Graphviz")
    graph.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    graph.add_argument("--direction", choices=("TB", "LR", "BT", "RL"), default="TB",
                       help="layout direction (default: TB, top to bottom)")
    graph.add_argument("--max-nodes", type=_count, default=5000, metavar="N",
                       help="refuse to draw more nodes than this (0: no limit; default: 5000)")
    graph.set_defaults(handler=cmd_graph)

    demo = _command(commands, "demo", "run a numpy batch workflow, then build and order a large generated DAG",
                    texts.HELP_DEMO, texts.HELP_DEMO_EPILOG)
    demo.add_argument("--workers", type=int, default=None, help="worker threads (default: CPU count)")
    demo.add_argument("--repeat", type=int, default=3,
                      help="timed runs of each side of a comparison, after a warm-up; the median is shown (default 3)")
    demo.add_argument("--layers", type=int, default=1000, help="number of layers (default 1000)")
    demo.add_argument("--width", type=int, default=1000, help="nodes per layer (default 1000)")
    demo.add_argument("--deps", type=int, default=3, help="dependencies per node (default 3)")
    demo.set_defaults(handler=cmd_demo)

    bench = _command(commands, "bench", "run the benchmarks of a source checkout (bench/run.py)",
                     texts.HELP_BENCH, texts.HELP_BENCH_EPILOG)
    _bench_arguments(bench)
    return parser


# -- main --------------------------------------------------------------------------------------------


def _error_message(exc: BaseException) -> str:
    message = str(exc)
    if isinstance(exc, RunLockedError):
        return f"{message}: another process is running or resuming it; try again when it has finished"
    if isinstance(exc, IncompatibleStateError) and "was added" in message:
        return f"{message} (--allow-new-nodes runs the added nodes)"
    if isinstance(exc, GraphvizNotFoundError):
        return f"{message} (--format dot and --format mermaid need no Graphviz)"
    if isinstance(exc, RenderTooLargeError):
        return f"{message.split('; pass')[0]}; pass --max-nodes 0 (no limit) to draw it anyway"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:  # everything after it belongs to bench/run.py
        return cmd_bench(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        return int(args.handler(args))
    except CliError as exc:
        _err(args.command, str(exc))
        return exc.code
    except StoreURLError as exc:
        _err(args.command, str(exc))
        return 2
    except FlowError as exc:  # RunNotFoundError, StoreError, RunLockedError, IncompatibleStateError, Graphviz...
        _err(args.command, _error_message(exc))
        return 1
    except KeyboardInterrupt:
        _err(args.command, "interrupted")
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): not an error worth a message
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except Exception as exc:  # one line, not a traceback, unless asked for
        if os.environ.get("FLOW_ORCHESTRATOR_TRACEBACK") == "1":
            raise
        _err(args.command, f"unexpected {type(exc).__name__}: {exc} (FLOW_ORCHESTRATOR_TRACEBACK=1 shows where)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
