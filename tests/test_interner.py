"""Interning of node names into dense ids."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow_orchestrator import errors
from flow_orchestrator.dag import Interner


@given(st.lists(st.text(min_size=1, max_size=8)))
def test_ids_are_dense_in_first_seen_order(names):
    it = Interner()
    ids = it.intern_many(names)
    unique = list(dict.fromkeys(names))
    assert it.names() == unique
    assert ids.tolist() == [unique.index(n) for n in names]
    assert ids.dtype == np.int32
    for name in unique:
        assert it.name(it.id(name)) == name
        assert it.intern(name) == unique.index(name)
    assert it.ids(names).tolist() == ids.tolist()
    assert it.names(ids) == names


def test_unknown_names_are_all_listed():
    it = Interner(["a", "b"])
    with pytest.raises(errors.UnknownNodeError, match="'x', 'y'"):
        it.ids(["a", "x", "y"])
    with pytest.raises(errors.UnknownNodeError):
        it.id("zz")
    with pytest.raises(LookupError):
        it.id(3)


@pytest.mark.parametrize("bad", [3, None, b"a", ("a",)])
def test_names_must_be_strings(bad):
    with pytest.raises(errors.NodeNameError, match="must be str"):
        Interner().intern(bad)


def test_empty_name_is_rejected():
    with pytest.raises(errors.NodeNameError, match="non-empty"):
        Interner([""])


@pytest.mark.parametrize("bad", [-1, 2, "0", 1.0, 2 ** 70])
def test_bad_ids(bad):
    it = Interner(["a", "b"])
    with pytest.raises(errors.UnknownNodeError):
        it.name(bad)


def test_names_of_bad_id_arrays():
    it = Interner(["a", "b"])
    with pytest.raises(errors.EdgeArrayError):
        it.names([0, 5])


def test_frozen_interner_refuses_new_names_but_answers_lookups():
    it = Interner(["a"]).freeze()
    assert it.frozen and it.intern("a") == 0
    assert it.intern_many(["a", "a"]).tolist() == [0, 0]
    with pytest.raises(errors.FrozenInternerError):
        it.intern("b")
    with pytest.raises(errors.FrozenInternerError):
        it.intern_many(["b"])


def test_container_protocol_and_pickle():
    it = Interner(["x", "y"])
    assert len(it) == 2 and "x" in it and "z" not in it and 3 not in it
    assert list(it) == ["x", "y"]
    copy = pickle.loads(pickle.dumps(it.freeze()))
    assert copy.names() == ["x", "y"] and copy.frozen


def test_concurrent_interning_agrees_on_ids():
    it = Interner()
    names = [f"n{i}" for i in range(2000)]
    seen = []
    barrier = threading.Barrier(4)

    def work():
        barrier.wait()
        seen.append([it.intern(n) for n in names])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s == seen[0] for s in seen)
    assert sorted(seen[0]) == list(range(2000))
