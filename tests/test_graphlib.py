"""flow_orchestrator.graphlib against the standard library's graphlib.

Every scenario runs on both implementations and the observations are compared: ready
batches, static orders, is_active/bool, and each exception's type (ours must be an
instance of the standard library's), str() and args.
"""

from __future__ import annotations

import graphlib as std
import random
import types
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flow_orchestrator.graphlib as ours
from flow_orchestrator import errors

IMPLS = pytest.mark.parametrize("impl", [std, ours], ids=["stdlib", "ours"])

# -- strategies ------------------------------------------------------------------------

INT_NODES = st.integers(0, 12)
STR_NODES = st.text(alphabet="abcdef", min_size=1, max_size=2)


class Tagged:
    """Equal when the keys are, told apart by repr: shows which object came back."""

    def __init__(self, key, tag):
        self.key, self.tag = key, tag

    def __eq__(self, other):
        return isinstance(other, Tagged) and other.key == self.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return f"Tagged({self.key!r}, {self.tag!r})"


# Equal but distinct objects (0 == 0.0 == False, 1 == 1.0 == True, Tagged): the
# standard library hands a node back as the first object seen for it, or as the object
# given as *node* to the add() call that made the edge releasing it.
TAGGED = [Tagged(key, tag) for key in "xy" for tag in range(2)]
MIXED_NODES = st.sampled_from([0, 1, 2, 0.0, 1.0, True, False, "a", None, (1, 2), *TAGGED])
NODE_FAMILIES = [INT_NODES, STR_NODES, MIXED_NODES]
UNHASHABLE = st.sampled_from([[], {}, set()])
NEVER_ADDED = "<never added>"


@st.composite
def dags(draw, nodes):
    """A DAG: each node's predecessors come from nodes drawn before it, duplicates
    allowed; keys shuffled, and some dropped so that they only appear as predecessors."""
    names = draw(st.lists(nodes, unique=True, max_size=12))
    preds = {}
    for i, name in enumerate(names):
        preds[name] = draw(st.lists(st.sampled_from(names[:i]), max_size=4)) if i else []
    keys = [n for n in draw(st.permutations(names)) if preds[n] or draw(st.booleans())]
    return {name: preds[name] for name in keys}


def any_graphs(nodes):
    """Arbitrary dicts: self-loops, cycles, duplicates, isolated nodes."""
    return st.dictionaries(nodes, st.lists(nodes, max_size=5), max_size=10)


GRAPHS = st.one_of(*[s(n) for n in NODE_FAMILIES for s in (dags, any_graphs)])


def add_calls(nodes):
    """A list of add(node, *preds) calls; a node may be added several times."""
    return st.lists(st.tuples(nodes, st.lists(nodes, max_size=4)), max_size=12)


CALLS = st.one_of(*[add_calls(n) for n in NODE_FAMILIES])
CALLS_WITH_UNHASHABLE = add_calls(st.one_of(INT_NODES, INT_NODES, INT_NODES, UNHASHABLE))

# -- recording and comparing -----------------------------------------------------------


def record(log, fn, *args):
    """Call fn, append its result or exception to log, and return the result (or None)."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - every exception is an observation here
        log.append(exc)
        return None
    log.append(result)
    return result


def construct(log, impl, *args):
    """A new sorter, or None once the constructor's exception is in log."""
    try:
        return impl.TopologicalSorter(*args)
    except Exception as exc:  # noqa: BLE001
        log.append(exc)
        return None


def assert_same_log(expected, actual, *, same_messages=True):
    assert len(actual) == len(expected), (expected, actual)
    for want, got in zip(expected, actual):
        if isinstance(want, BaseException):
            assert isinstance(got, type(want)), (want, got)
            if same_messages:
                assert str(got) == str(want)
                assert repr(got.args) == repr(want.args)
        else:
            assert type(got) is type(want), (want, got)
            # repr, not ==: the same objects (1, not True) in the same order.
            assert repr(got) == repr(want)


def compare(scenario, *args, same_messages=True):
    """Run scenario(impl, *args) on both implementations and compare their logs."""
    expected = scenario(std, *args)
    assert_same_log(expected, scenario(ours, *args), same_messages=same_messages)
    return expected


# -- scenarios -------------------------------------------------------------------------


def _done_all(pending, rng):
    return [list(pending)]


def _done_one_by_one(pending, rng):
    return [[node] for node in pending]


def _done_reversed(pending, rng):
    return [pending[::-1]]


def _done_random_subsets(pending, rng):
    shuffled = rng.sample(pending, len(pending))
    cut = rng.randint(1, len(pending))
    return [shuffled[:cut], shuffled[cut:]] if rng.random() < 0.5 else [shuffled[:cut]]


POLICIES = [_done_all, _done_one_by_one, _done_reversed, _done_random_subsets]


def _probe(log, ts, universe, pending, rng):
    """A call that must fail and leave the state alone."""
    kind = rng.randrange(3)
    if kind == 0:
        # Never handed out, already done, or never added: done() refuses all of them.
        candidates = [n for n in universe if n not in pending]
        record(log, ts.done, rng.choice(candidates))
    elif kind == 1:
        record(log, ts.add, rng.choice(universe))
    else:
        record(log, ts.prepare)


def drive(log, ts, universe, policy, seed, probes):
    """Prepare ts and run the get_ready/done protocol until it is inactive.

    ``policy`` picks which handed-out nodes to mark done, grouped into done() calls.
    Its random choices depend only on what the sorter returned, so both
    implementations get the same calls for as long as they behave the same.
    """
    rng = random.Random(seed)
    for call in (ts.get_ready, ts.is_active, ts.done):  # before prepare(): errors
        record(log, call)
    record(log, ts.prepare)
    pending = []
    while record(log, ts.is_active):
        log.append(bool(ts))
        pending.extend(record(log, ts.get_ready))
        if probes:
            _probe(log, ts, universe, pending, rng)
        for group in policy(pending, rng):
            for node in group:
                pending.remove(node)
            record(log, ts.done, *group)
    log.append(bool(ts))
    record(log, ts.get_ready)
    return log


def nodes_of(pairs):
    """Every node named in (node, predecessors) pairs, and one never added."""
    return [NEVER_ADDED, *(node for key, preds in pairs for node in (key, *preds))]


def graph_protocol_log(impl, graph, policy, seed, probes):
    log = []
    ts = construct(log, impl, graph)
    if ts is not None:
        drive(log, ts, nodes_of(graph.items()), policy, seed, probes)
    return log


def add_calls_log(impl, calls, policy, seed, probes):
    """add() calls (some may raise TypeError half-way), then the protocol."""
    log = []
    ts = impl.TopologicalSorter()
    for node, preds in calls:
        record(log, ts.add, node, *preds)
    hashable = [(n, preds) for n, preds in calls if all(isinstance(x, Hashable) for x in (n, *preds))]
    drive(log, ts, nodes_of(hashable), policy, seed, probes)
    return log


def static_order_log(impl, graph):
    log = []
    ts = construct(log, impl, graph)
    if ts is not None:
        record(log, list, ts.static_order())
    return log


STATIC_ORDER_OPS = st.lists(st.sampled_from(["next", "get_ready", "is_active", "done_last"]), max_size=30)


def interleaved_static_order_log(impl, graph, ops):
    """Methods called between two next() of static_order() find the same state."""
    log = []
    ts = impl.TopologicalSorter(graph)
    it = ts.static_order()
    yielded = []
    for op in ops:
        if op == "next":
            before = len(log)
            node = record(log, next, it)
            if not isinstance(log[before], Exception):
                yielded.append(node)
        elif op == "get_ready":
            record(log, ts.get_ready)
        elif op == "is_active":
            record(log, ts.is_active)
        elif yielded:
            record(log, ts.done, yielded[-1])
    record(log, list, it)
    return log


# -- property tests against the standard library ---------------------------------------


@given(GRAPHS)
def test_static_order_matches_stdlib(graph):
    compare(static_order_log, graph)


@settings(max_examples=300)
@given(GRAPHS, st.sampled_from(POLICIES), st.integers(0, 2**32), st.booleans())
def test_protocol_from_graph_matches_stdlib(graph, policy, seed, probes):
    compare(graph_protocol_log, graph, policy, seed, probes)


@settings(max_examples=300)
@given(CALLS, st.sampled_from(POLICIES), st.integers(0, 2**32), st.booleans())
def test_protocol_from_add_calls_matches_stdlib(calls, policy, seed, probes):
    compare(add_calls_log, calls, policy, seed, probes)


@given(CALLS_WITH_UNHASHABLE, st.sampled_from(POLICIES), st.integers(0, 2**32), st.booleans())
def test_unhashable_nodes_match_stdlib(calls, policy, seed, probes):
    compare(add_calls_log, calls, policy, seed, probes)


@given(GRAPHS, STATIC_ORDER_OPS)
def test_static_order_interleaved_with_other_calls_matches_stdlib(graph, ops):
    compare(interleaved_static_order_log, graph, ops)


# -- inputs the stdlib accepts, or refuses ---------------------------------------------


class ItemsOnly:
    """Not a mapping: the constructor only calls .items()."""

    def __init__(self, pairs):
        self._pairs = pairs

    def items(self):
        return iter(self._pairs)


GRAPH_ARGUMENTS = {
    "mappingproxy": lambda: types.MappingProxyType({"a": ["b"], "b": []}),
    "items-only": lambda: ItemsOnly([("a", "bc"), ("c", ["d", "d"]), ("a", ("e",))]),
    "iterators": lambda: {"x": (p for p in "yz"), "z": range(0), "w": iter([1, 1])},
    "dict-and-set-values": lambda: {1: {2: "ignored"}, 2: frozenset({3})},
}


@pytest.mark.parametrize("make_graph", GRAPH_ARGUMENTS.values(), ids=GRAPH_ARGUMENTS.keys())
def test_graph_arguments_accepted_like_stdlib(make_graph):
    compare(lambda impl: static_order_log(impl, make_graph()))


BAD_GRAPH_ARGUMENTS = {
    "int-value": {1: 2},
    "none-value": {1: None},
    "unhashable-key": ItemsOnly([([1], [])]),
    "unhashable-pred": {1: [[2]]},
    "not-a-mapping": [(1, 2)],
}


@pytest.mark.parametrize("graph", BAD_GRAPH_ARGUMENTS.values(), ids=BAD_GRAPH_ARGUMENTS.keys())
def test_bad_graph_arguments_raise_like_stdlib(graph):
    # The message of a non-iterable value is the interpreter's own for *args; the
    # type is what code can rely on.
    log = compare(static_order_log, graph, same_messages=False)
    assert isinstance(log[0], (TypeError, AttributeError))


def test_large_layered_graph_matches_stdlib():
    rng = random.Random(7)
    layers = [[f"n{k}_{i}" for i in range(60)] for k in range(30)]
    graph = {name: rng.choices(layers[k - 1], k=3) if k else [] for k, layer in enumerate(layers) for name in layer}
    assert len(compare(static_order_log, graph)[0]) == 1800
    for policy in POLICIES:
        compare(graph_protocol_log, graph, policy, 1, False)


# -- cycles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({1: [1]}, [1, 1]),
        ({1: [2], 2: [1]}, [1, 2, 1]),
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, ["a", "c", "b", "a"]),
        ({0: [1], 1: [2], 2: [3], 3: [1]}, [1, 3, 2, 1]),
    ],
)
def test_cycle_error_args_and_str(graph, cycle):
    with pytest.raises(ours.CycleError) as info:
        ours.TopologicalSorter(graph).prepare()
    exc = info.value
    assert exc.args == ("nodes are in a cycle", cycle)
    assert str(exc) == str(("nodes are in a cycle", cycle))
    with pytest.raises(std.CycleError) as std_info:
        std.TopologicalSorter(graph).prepare()
    assert exc.args == std_info.value.args
    assert str(exc) == str(std_info.value)


def test_cycle_error_hierarchy():
    assert issubclass(ours.CycleError, errors.CycleError)
    assert issubclass(ours.CycleError, std.CycleError)
    assert issubclass(ours.CycleError, ValueError)
    assert issubclass(ours.CycleError, errors.FlowError)


def test_static_order_raises_cycle_error_on_first_next():
    ts = ours.TopologicalSorter({1: [2], 2: [1]})
    it = ts.static_order()  # nothing happens yet
    with pytest.raises(ours.CycleError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


@IMPLS
def test_acyclic_part_can_be_processed_after_cycle_error(impl):
    ts = impl.TopologicalSorter({"b": ["a"], "c": ["b", "d"], "d": ["c"], "e": ["a"]})
    with pytest.raises(impl.CycleError):
        ts.prepare()
    assert ts.get_ready() == ("a",)
    ts.done("a")
    assert ts.get_ready() == ("b", "e")
    ts.done("b", "e")
    assert ts.get_ready() == ()
    assert not ts.is_active()


def test_no_cycle_when_a_failed_add_left_a_node_blocked():
    # add(1, 2, [3]) counts two predecessors for 1 but records only the edge 2 -> 1:
    # node 1 never becomes ready, yet there is no cycle, so prepare() succeeds.
    for impl in (std, ours):
        ts = impl.TopologicalSorter()
        with pytest.raises(TypeError):
            ts.add(1, 2, [3])
        ts.prepare()
        assert ts.get_ready() == (2,)
        ts.done(2)
        assert ts.get_ready() == ()
        assert not ts.is_active()


# -- the exact messages ----------------------------------------------------------------


def _ready_sorter(impl):
    ts = impl.TopologicalSorter({"b": ["a"]})
    ts.prepare()
    return ts


def _add_after_prepare(ts):
    ts.add("c")


def _prepare_twice(ts):
    ts.prepare()


def _done_unknown(ts):
    ts.done("zz")


def _done_not_ready(ts):
    ts.done("b")


def _done_twice(ts):
    ts.done(*ts.get_ready())
    ts.done("a")


MESSAGES = [
    (_add_after_prepare, "Nodes cannot be added after a call to prepare()"),
    (_prepare_twice, "cannot prepare() more than once"),
    (_done_unknown, "node 'zz' was not added using add()"),
    (_done_not_ready, "node 'b' was not passed out (still not ready)"),
    (_done_twice, "node 'a' was already marked done"),
]


@IMPLS
@pytest.mark.parametrize("call, message", MESSAGES, ids=[c.__name__ for c, _ in MESSAGES])
def test_state_error_messages(impl, call, message):
    with pytest.raises(ValueError) as info:
        call(_ready_sorter(impl))
    assert str(info.value) == message
    assert info.value.args == (message,)
    if impl is ours:
        assert isinstance(info.value, errors.SorterStateError)
        assert isinstance(info.value, errors.FlowError)


@IMPLS
@pytest.mark.parametrize(
    "call", [lambda ts: ts.get_ready(), lambda ts: ts.is_active(), lambda ts: bool(ts), lambda ts: ts.done()]
)
def test_prepare_must_be_called_first(impl, call):
    with pytest.raises(ValueError, match=r"^prepare\(\) must be called first$"):
        call(impl.TopologicalSorter({"a": []}))


@IMPLS
def test_message_names_the_object_passed_to_done(impl):
    ts = impl.TopologicalSorter({1: []})
    ts.prepare()
    ts.done(*ts.get_ready())
    with pytest.raises(ValueError, match=r"^node 1\.0 was already marked done$"):
        ts.done(1.0)


@IMPLS
def test_done_keeps_the_nodes_before_the_offending_one(impl):
    ts = impl.TopologicalSorter({"b": ["a"], "d": ["c"]})
    ts.prepare()
    assert ts.get_ready() == ("a", "c")
    with pytest.raises(ValueError, match="'zz' was not added"):
        ts.done("a", "zz", "c")
    assert ts.get_ready() == ("b",)
    assert ts.is_active()


@IMPLS
@pytest.mark.parametrize("args", [([],), (1, 2, {}), (1, set())], ids=["node", "pred", "last-pred"])
def test_add_unhashable_raises_type_error(impl, args):
    with pytest.raises(TypeError, match="unhashable type"):
        impl.TopologicalSorter().add(*args)


@IMPLS
def test_done_unhashable_raises_type_error(impl):
    ts = impl.TopologicalSorter()
    ts.prepare()
    with pytest.raises(TypeError, match="unhashable type"):
        ts.done([])


# -- the rest of the API ---------------------------------------------------------------


def test_generic_alias():
    alias = ours.TopologicalSorter[int]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is ours.TopologicalSorter
    assert alias.__args__ == (int,)
    assert list(alias({2: [1]}).static_order()) == [1, 2]


def test_public_names():
    assert ours.__all__ == ["TopologicalSorter", "CycleError"]
    for name in ("add", "prepare", "get_ready", "is_active", "done", "static_order"):
        assert getattr(ours.TopologicalSorter, name).__doc__
    assert ours.__doc__ and ours.TopologicalSorter.__doc__ and ours.CycleError.__doc__


@IMPLS
def test_subclass_with_its_own_attributes(impl):
    class Named(impl.TopologicalSorter):
        def __init__(self, name, graph):
            super().__init__(graph)
            self.name = name

    ts = Named("jobs", {"b": ["a"]})
    assert ts.name == "jobs"
    assert list(ts.static_order()) == ["a", "b"]


@IMPLS
def test_static_order_leaves_the_sorter_finished(impl):
    ts = impl.TopologicalSorter({"b": ["a"], "c": ["a"]})
    assert list(ts.static_order()) == ["a", "b", "c"]
    assert not ts.is_active()
    assert ts.get_ready() == ()
    with pytest.raises(ValueError, match="already marked done"):
        ts.done("a")
    with pytest.raises(ValueError, match="more than once"):
        list(ts.static_order())


@IMPLS
def test_empty_sorter(impl):
    ts = impl.TopologicalSorter()
    ts.prepare()
    assert not ts
    assert ts.get_ready() == ()
    assert list(impl.TopologicalSorter({}).static_order()) == []
