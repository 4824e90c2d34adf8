"""The built-in middleware: unit tests against an injected clock and rng (nothing sleeps),
a property test of the circuit breaker against a model, then runs through the engine.

Tests assert behaviour, never wall time.
"""

from __future__ import annotations

import functools
import logging
import pickle
import random
import types

import pytest
import structlog
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from structlog.testing import capture_logs

from flow_orchestrator import Engine, WorkflowBuilder
from flow_orchestrator.errors import (
    DefinitionError,
    ExecutionError,
    FlowError,
    NodeCancelledError,
    NodeTimeoutError,
    RetryRequested,
)
from flow_orchestrator.middleware import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    PermissionDeniedError,
    RateLimitedError,
    TokenBucket,
    ValidationError,
    circuit_breaker,
    compose,
    get_breaker,
    get_limiter,
    logging_middleware,
    metrics_middleware,
    permission,
    rate_limit,
    reset_breakers,
    reset_limiters,
    retry,
    timeout,
    validate,
)
from flow_orchestrator.status import NodeStatus


class FakeClock:
    """A clock that moves only when told to; ``sleep`` moves it too and is recorded."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TickingClock:
    """Moves ``step`` seconds at every reading: time passes in proportion to use, for
    runs through the engine where nothing can advance a fake clock by hand."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class FakeContext:
    """What a middleware needs of a node context, with time on a :class:`FakeClock`."""

    def __init__(self, node: str = "n", attempt: int = 1, inputs: dict | None = None,
                 clock: FakeClock | None = None, deadline: float | None = None) -> None:
        self.node = node
        self.node_id = 0
        self.attempt = attempt
        self.inputs = inputs if inputs is not None else {}
        self.run_id = "run-1"
        self.workflow = types.SimpleNamespace(name="wf")
        self.data = {"user": "ann"}
        self.deadline = deadline
        self.clock = clock or FakeClock()
        self.cancelled = False

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self.clock())

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise NodeCancelledError(f"node {self.node!r} was cancelled")

    def wait(self, seconds: float) -> bool:
        self.clock.advance(seconds)
        return self.cancelled


class Action:
    """A recording action: returns ``result`` or raises the next of ``errors``."""

    def __init__(self, result=None, errors=()) -> None:
        self.result = result
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, ctx):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


class StubRng:
    """Records ``uniform`` calls and returns the upper bound times ``fraction``."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a + (b - a) * self.fraction


@pytest.fixture(autouse=True)
def _fresh_registries():
    reset_breakers()
    reset_limiters()
    yield
    reset_breakers()
    reset_limiters()


def retry_delay(mw, attempt: int, error: Exception | None = None) -> float:
    """The delay ``mw`` asks for after ``attempt`` failed."""
    with pytest.raises(RetryRequested) as info:
        mw(Action(errors=[error or OSError("boom")]))(FakeContext(attempt=attempt))
    return info.value.delay


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, builtin, args", [
    (CircuitOpenError, RuntimeError, ("open", "db", 1.5)),
    (RateLimitedError, RuntimeError, ("no token", "api", 0.25)),
    (PermissionDeniedError, PermissionError, ("denied", "n")),
    (ValidationError, ValueError, ("bad", "n", "input")),
])
def test_errors_are_flow_errors_of_the_natural_builtin_and_pickle(cls, builtin, args):
    error = cls(*args)
    assert isinstance(error, FlowError) and isinstance(error, builtin)
    assert str(error) == args[0]
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and str(copy) == args[0] and vars(copy) == vars(error)


def test_runtime_errors_are_execution_errors():
    assert issubclass(CircuitOpenError, ExecutionError)
    assert issubclass(RateLimitedError, ExecutionError)


# -- retry ------------------------------------------------------------------------------------------


def test_retry_delays_are_exact_without_jitter():
    mw = retry(6, base_delay=0.5, multiplier=2.0, max_delay=3.0, jitter="none")
    assert [retry_delay(mw, attempt) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_draws_between_zero_and_the_capped_delay():
    rng = StubRng(0.25)
    mw = retry(10, base_delay=1.0, multiplier=3.0, max_delay=5.0, rng=rng)
    assert [retry_delay(mw, attempt) for attempt in (1, 2, 3)] == [0.25, 0.75, 1.25]
    assert rng.calls == [(0.0, 1.0), (0.0, 3.0), (0.0, 5.0)]


def test_full_jitter_with_a_seeded_rng_stays_in_bounds():
    mw = retry(50, base_delay=0.1, max_delay=2.0, rng=random.Random(7))
    for attempt in range(1, 50):
        assert 0.0 <= retry_delay(mw, attempt) <= min(0.1 * 2 ** (attempt - 1), 2.0)


def test_equal_jitter_keeps_at_least_half():
    mw = retry(5, base_delay=2.0, jitter="equal", rng=StubRng(0.0))
    assert retry_delay(mw, 2) == 2.0
    mw = retry(5, base_delay=2.0, jitter="equal", rng=StubRng(1.0))
    assert retry_delay(mw, 2) == 4.0


def test_huge_attempt_numbers_cap_without_overflow():
    mw = retry(10**6, base_delay=1.0, multiplier=10.0, max_delay=7.0, jitter="none")
    assert retry_delay(mw, 5000) == 7.0
    zero = retry(10**6, base_delay=0.0, multiplier=10.0, jitter="none")
    assert retry_delay(zero, 5000) == 0.0


def test_retry_chains_the_original_error_and_reraises_it_on_the_last_attempt():
    boom = OSError("boom")
    mw = retry(2, jitter="none")
    with pytest.raises(RetryRequested) as info:
        mw(Action(errors=[boom]))(FakeContext(attempt=1))
    assert info.value.__cause__ is boom
    with pytest.raises(OSError) as last:
        mw(Action(errors=[boom]))(FakeContext(attempt=2))
    assert last.value is boom


def test_retry_passes_results_through():
    assert retry()(Action(result=5))(FakeContext()) == 5


def test_retry_only_on_given_types_and_predicate():
    mw = retry(5, retry_on=OSError)
    with pytest.raises(KeyError):
        mw(Action(errors=[KeyError("k")]))(FakeContext())
    transient = retry(5, retry_on=(OSError,), predicate=lambda exc: "transient" in str(exc))
    assert retry_delay(transient, 1, OSError("transient glitch")) >= 0
    with pytest.raises(OSError, match="disk full"):
        transient(Action(errors=[OSError("disk full")]))(FakeContext())


@pytest.mark.parametrize("error", [
    CircuitOpenError("open", "db", 3.0),
    NodeCancelledError("cancelled"),
    RetryRequested(2.5),
])
def test_never_retried_by_default(error):
    with pytest.raises(type(error)) as info:
        retry(5)(Action(errors=[error]))(FakeContext())
    assert info.value is error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1)])
def test_interrupts_are_never_retried(error):
    with pytest.raises(type(error)):
        retry(5)(Action(errors=[error]))(FakeContext())


def test_an_open_circuit_is_retried_only_when_named():
    mw = retry(5, retry_on=(CircuitOpenError,), jitter="none", base_delay=1.0)
    assert retry_delay(mw, 1, CircuitOpenError("open", "db", 3.0)) == 1.0


def test_wrapped_actions_keep_their_metadata():
    def fetch(ctx):
        """Fetch things."""

    for mw in (retry(), circuit_breaker("meta"), timeout(1.0), rate_limit("meta", 1.0),
               metrics_middleware(print), permission(bool), validate(output=object),
               logging_middleware()):
        wrapped = mw(fetch)
        assert (wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__) == ("fetch", "Fetch things.", fetch)


# -- parameter validation -------------------------------------------------------------------------

BAD_PARAMETERS = {
    "retry max_attempts 0": lambda: retry(0),
    "retry max_attempts float": lambda: retry(2.5),
    "retry max_attempts bool": lambda: retry(True),
    "retry negative base_delay": lambda: retry(base_delay=-1),
    "retry nan max_delay": lambda: retry(max_delay=float("nan")),
    "retry infinite max_delay": lambda: retry(max_delay=float("inf")),
    "retry multiplier < 1": lambda: retry(multiplier=0.5),
    "retry unknown jitter": lambda: retry(jitter="some"),
    "retry retry_on not a type": lambda: retry(retry_on="OSError"),
    "retry retry_on empty": lambda: retry(retry_on=()),
    "retry retry_on KeyboardInterrupt": lambda: retry(retry_on=(KeyboardInterrupt,)),
    "retry predicate": lambda: retry(predicate=3),
    "retry rng": lambda: retry(rng=object()),
    "breaker empty name": lambda: circuit_breaker(""),
    "breaker threshold 0": lambda: circuit_breaker("b", failure_threshold=0),
    "breaker negative reset": lambda: circuit_breaker("b", reset_timeout=-1.0),
    "breaker clock": lambda: circuit_breaker("b", clock=5),
    "breaker half-open calls": lambda: circuit_breaker("b", half_open_max_calls=0),
    "timeout zero": lambda: timeout(0),
    "timeout string": lambda: timeout("5"),
    "timeout clock": lambda: timeout(1.0, clock=None),
    "limit name": lambda: rate_limit(None, 1.0),
    "limit rate 0": lambda: rate_limit("r", 0),
    "limit burst 0": lambda: rate_limit("r", 1.0, burst=0),
    "limit mode": lambda: rate_limit("r", 1.0, mode="wait"),
    "limit sleep": lambda: rate_limit("r", 1.0, sleep="zzz"),
    "metrics sink": lambda: metrics_middleware(None),
    "permission predicate": lambda: permission(True),
    "permission message": lambda: permission(bool, message=3),
    "validate nothing": lambda: validate(),
    "validate bad spec": lambda: validate(inputs=3),
    "validate bad schema value": lambda: validate(output={"a": "int"}),
    "validate bad schema key": lambda: validate(inputs={1: int}),
    "logging level name": lambda: logging_middleware(level="LOUD"),
    "logging negative level": lambda: logging_middleware(level=-5),
    "logging stdlib logger": lambda: logging_middleware(logging.getLogger("x")),
    "logging not a logger": lambda: logging_middleware(object()),
    "compose": lambda: compose(retry(), 3),
}


@pytest.mark.parametrize("make", BAD_PARAMETERS.values(), ids=BAD_PARAMETERS.keys())
def test_bad_parameters_raise_definition_errors(make):
    with pytest.raises(DefinitionError):
        make()


def test_middleware_rejects_a_non_callable_action():
    with pytest.raises(DefinitionError, match="not a callable"):
        retry()(42)


def test_middleware_pickles_for_process_executors():
    for mw in (retry(3, rng=random.Random(1)), timeout(2.0), validate(inputs={"a": int}, output=int),
               circuit_breaker("pickled"), rate_limit("pickled", 2.0), compose(retry(), timeout(1.0))):
        copy = pickle.loads(pickle.dumps(mw))
        assert type(copy) is type(mw) and repr(copy).split(" ")[0] == repr(mw).split(" ")[0]
    # A breaker travels by name: in the same process it is the same breaker.
    assert pickle.loads(pickle.dumps(get_breaker("pickled"))) is get_breaker("pickled")


# -- circuit breaker ----------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only():
    clock = FakeClock()
    breaker = CircuitBreaker("b", failure_threshold=3, reset_timeout=10.0, clock=clock)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # resets the count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.advance(4.0)
    assert breaker.retry_after() == 6.0


def test_breaker_half_opens_then_closes_on_a_trial_success():
    clock = FakeClock()
    breaker = CircuitBreaker("b", failure_threshold=1, reset_timeout=10.0, clock=clock)
    breaker.record_failure()
    clock.advance(9.5)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.5)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


def test_breaker_reopens_on_a_trial_failure():
    clock = FakeClock()
    breaker = CircuitBreaker("b", failure_threshold=2, reset_timeout=5.0, clock=clock, half_open_max_calls=2)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow() and breaker.allow() and not breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.retry_after() == 5.0


def test_breaker_release_gives_a_trial_slot_back():
    clock = FakeClock()
    breaker = CircuitBreaker("b", failure_threshold=1, reset_timeout=1.0, clock=clock)
    breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_open_breaker_fails_fast_without_calling_the_action():
    clock = FakeClock()
    mw = circuit_breaker("db", failure_threshold=2, reset_timeout=30.0, clock=clock)
    failing = mw(Action(errors=[OSError("down")] * 2))
    for _ in range(2):
        with pytest.raises(OSError):
            failing(FakeContext())
    action = Action(result="ok")
    clock.advance(12.5)
    with pytest.raises(CircuitOpenError) as info:
        mw(action)(FakeContext())
    assert action.calls == 0
    assert info.value.breaker == "db" and info.value.retry_after == 17.5
    assert "'db'" in str(info.value) and "17.500 s" in str(info.value)
    clock.advance(17.5)
    assert mw(action)(FakeContext()) == "ok" and get_breaker("db").state is BreakerState.CLOSED


@pytest.mark.parametrize("error", [RetryRequested(1.0), NodeCancelledError("stop"), KeyboardInterrupt()])
def test_outcomes_without_a_verdict_do_not_count(error):
    clock = FakeClock()
    mw = circuit_breaker("quiet", failure_threshold=1, reset_timeout=1.0, clock=clock)
    with pytest.raises(type(error)):
        mw(Action(errors=[error]))(FakeContext())
    breaker = get_breaker("quiet")
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    clock.advance(1.0)
    with pytest.raises(type(error)):
        mw(Action(errors=[error]))(FakeContext())
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()  # the slot came back


def test_breakers_are_shared_by_name():
    clock = FakeClock()
    first = circuit_breaker("shared", failure_threshold=1, clock=clock)
    second = circuit_breaker("shared", failure_threshold=1, clock=clock)
    with pytest.raises(OSError):
        first(Action(errors=[OSError()]))(FakeContext(node="a"))
    action = Action()
    with pytest.raises(CircuitOpenError):
        second(action)(FakeContext(node="b"))
    assert action.calls == 0 and get_breaker("shared").state is BreakerState.OPEN
    with pytest.raises(DefinitionError, match="other parameters"):
        circuit_breaker("shared", failure_threshold=2, clock=clock)
    reset_breakers()
    assert get_breaker("shared") is None


def test_no_breaker_lock_is_held_across_the_call():
    clock = FakeClock()
    mw = circuit_breaker("nested", failure_threshold=1, clock=clock)

    def outer(ctx):
        # A nested call through the same breaker (a nested run would do this) would
        # deadlock if the outer call held the breaker's lock.
        return mw(Action(result="inner"))(ctx) + " and outer"

    assert mw(outer)(FakeContext()) == "inner and outer"


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a plain model: same state after every step, and an open
    breaker never calls the action."""

    @initialize(threshold=st.integers(1, 4), reset=st.sampled_from([0.5, 1.0, 2.0]),
                trials=st.integers(1, 3))
    def setup(self, threshold, reset, trials):
        reset_breakers()
        self.clock = FakeClock(0.0)
        self.threshold, self.reset, self.max_trials = threshold, reset, trials
        self.mw = circuit_breaker("model", threshold, reset, self.clock, trials)
        self.breaker = get_breaker("model")
        self.state, self.failures, self.opened_at, self.trials = "closed", 0, 0.0, 0
        self.pending = 0

    # -- the model ------------------------------------------------------------------------------

    def refresh(self):
        if self.state == "open" and self.clock() - self.opened_at >= self.reset:
            self.state, self.trials = "half-open", 0

    def admit(self):
        self.refresh()
        if self.state == "half-open" and self.trials < self.max_trials:
            self.trials += 1
            return True
        return self.state == "closed"

    def outcome(self, ok):
        self.refresh()
        if self.state == "open":
            return
        if ok:
            self.state, self.failures, self.trials = "closed", 0, 0
        elif self.state == "half-open" or self.failures + 1 >= self.threshold:
            self.state, self.opened_at, self.trials = "open", self.clock(), 0
        else:
            self.failures += 1

    # -- rules ----------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(ok=st.booleans())
    def call(self, ok):
        action = Action(result="ok", errors=[] if ok else [OSError("down")])
        expected = self.admit()
        try:
            self.mw(action)(FakeContext())
        except CircuitOpenError:
            assert not expected and action.calls == 0
        except OSError:
            assert expected and not ok
        else:
            assert expected and ok
        assert action.calls == int(expected)
        if expected:
            self.outcome(ok)

    @rule()
    def start(self):
        expected = self.admit()
        assert self.breaker.allow() == expected
        self.pending += expected

    @precondition(lambda self: self.pending)
    @rule(ok=st.booleans())
    def finish(self, ok):
        self.pending -= 1
        (self.breaker.record_success if ok else self.breaker.record_failure)()
        self.outcome(ok)

    @precondition(lambda self: self.pending)
    @rule()
    def release(self):
        self.pending -= 1
        self.breaker.release()
        if self.state == "half-open" and self.trials:
            self.trials -= 1

    @invariant()
    def same_state(self):
        self.refresh()
        assert self.breaker.state.value == self.state
        if self.state == "closed":
            assert self.breaker.failures == self.failures


TestBreakerMachine = BreakerMachine.TestCase


# -- timeout -------------------------------------------------------------------------------------------


def test_timeout_context_reflects_the_deadline_and_delegates_the_rest():
    clock = FakeClock()
    seen = {}

    def action(ctx):
        seen.update(deadline=ctx.deadline, remaining=ctx.remaining(), cancelled=ctx.cancelled,
                    node=ctx.node, user=ctx.data["user"], attempt=ctx.attempt)
        clock.advance(1.5)
        seen.update(later=ctx.remaining())
        return "done"

    assert timeout(2.0, clock=clock)(action)(FakeContext(node="crawl", attempt=3, clock=clock)) == "done"
    assert seen == {"deadline": 102.0, "remaining": 2.0, "cancelled": False, "node": "crawl",
                    "user": "ann", "attempt": 3, "later": 0.5}


def test_timeout_takes_the_earlier_of_its_deadline_and_the_nodes():
    clock = FakeClock()
    ctx = FakeContext(clock=clock, deadline=101.0)
    seen = {}
    timeout(5.0, clock=clock)(lambda c: seen.update(deadline=c.deadline, remaining=c.remaining()))(ctx)
    assert seen == {"deadline": 101.0, "remaining": 1.0}


def test_a_late_result_is_discarded():
    clock = FakeClock()

    def slow(ctx):
        clock.advance(3.0)
        return "late"

    with pytest.raises(NodeTimeoutError, match="'n' ran past its 2 s timeout"):
        timeout(2.0, clock=clock)(slow)(FakeContext(clock=clock))


def test_a_cooperative_action_sees_the_timeout():
    clock = FakeClock()
    loops = []

    def polite(ctx):
        while not ctx.wait(0.5):
            loops.append(clock())
        ctx.raise_if_cancelled()

    with pytest.raises(NodeTimeoutError):
        timeout(2.0, clock=clock)(polite)(FakeContext(clock=clock))
    assert loops == [100.5, 101.0, 101.5]


def test_timeout_lets_errors_and_cancellation_through():
    clock = FakeClock()
    ctx = FakeContext(clock=clock)
    ctx.cancelled = True
    with pytest.raises(NodeCancelledError):
        timeout(2.0, clock=clock)(lambda c: c.raise_if_cancelled())(ctx)
    with pytest.raises(KeyError):
        timeout(2.0, clock=clock)(Action(errors=[KeyError("k")]))(FakeContext(clock=clock))


# -- rate limit ------------------------------------------------------------------------------------------


def test_bucket_grants_burst_plus_rate_times_elapsed():
    clock = FakeClock(0.0)
    bucket = TokenBucket("b", rate=4.0, burst=2, clock=clock)
    granted = 0
    for step in range(41):  # polls every 0.25 s over 10 s of fake time
        while bucket.try_acquire():
            granted += 1
        assert granted <= 2 + 4.0 * clock()
        if step < 40:
            clock.advance(0.25)
    assert granted == 2 + 4 * 10


def test_bucket_never_holds_more_than_its_burst():
    clock = FakeClock(0.0)
    bucket = TokenBucket("b", rate=10.0, burst=3, clock=clock)
    clock.advance(100.0)
    assert bucket.tokens == 3.0
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert bucket.time_until_token() == 0.1


def test_reschedule_mode_asks_the_engine_to_come_back_later():
    clock = FakeClock(0.0)
    mw = rate_limit("api", rate=2.0, clock=clock)
    action = Action(result="ok")
    assert mw(action)(FakeContext()) == "ok"
    with pytest.raises(RetryRequested) as info:
        mw(action)(FakeContext())
    assert info.value.delay == 0.5 and action.calls == 1
    clock.advance(0.5)
    assert mw(action)(FakeContext()) == "ok"


def test_block_mode_sleeps_until_a_token():
    clock = FakeClock(0.0)
    mw = rate_limit("api", rate=4.0, burst=1, mode="block", clock=clock, sleep=clock.sleep)
    action = Action(result="ok")
    assert [mw(action)(FakeContext()) for _ in range(3)] == ["ok"] * 3
    assert clock.sleeps == [0.25, 0.25] and action.calls == 3


def test_block_mode_stops_when_cancelled():
    clock = FakeClock(0.0)
    mw = rate_limit("api", rate=1.0, mode="block", clock=clock, sleep=clock.sleep)
    mw(Action())(FakeContext())
    ctx = FakeContext()
    ctx.cancelled = True
    action = Action()
    with pytest.raises(NodeCancelledError):
        mw(action)(ctx)
    assert action.calls == 0


def test_fail_mode_raises_rate_limited():
    clock = FakeClock(0.0)
    mw = rate_limit("api", rate=0.5, mode="fail", clock=clock)
    mw(Action())(FakeContext())
    action = Action()
    with pytest.raises(RateLimitedError, match="'api'") as info:
        mw(action)(FakeContext(node="call"))
    assert info.value.limiter == "api" and info.value.retry_after == 2.0 and action.calls == 0


def test_limiters_are_shared_by_name():
    clock = FakeClock(0.0)
    reschedule = rate_limit("shared", rate=1.0, clock=clock)
    fail = rate_limit("shared", rate=1.0, mode="fail", clock=clock)  # modes may differ
    reschedule(Action())(FakeContext())
    with pytest.raises(RateLimitedError):
        fail(Action())(FakeContext())
    assert get_limiter("shared").tokens == 0.0
    with pytest.raises(DefinitionError, match="other parameters"):
        rate_limit("shared", rate=2.0, clock=clock)
    reset_limiters()
    assert get_limiter("shared") is None


# -- metrics, permission, validation, compose -------------------------------------------------------------


def test_metrics_sink_sees_every_call():
    records = []
    mw = metrics_middleware(lambda *row: records.append(row))
    boom = OSError("boom")
    mw(Action(result=1))(FakeContext(node="a", attempt=1))
    with pytest.raises(OSError):
        mw(Action(errors=[boom]))(FakeContext(node="a", attempt=2))
    assert [(node, attempt, error) for node, attempt, _, error in records] == [("a", 1, None), ("a", 2, boom)]
    assert all(seconds >= 0 for _, _, seconds, _ in records)


def test_a_failing_sink_is_logged_and_ignored(caplog):
    def sink(*row):
        raise RuntimeError("sink down")

    with caplog.at_level(logging.ERROR, "flow_orchestrator.middleware"):
        assert metrics_middleware(sink)(Action(result=7))(FakeContext()) == 7
    assert "metrics sink" in caplog.text


def test_permission_allows_or_refuses_without_calling():
    allowed = permission(lambda ctx: ctx.data["user"] == "ann")
    assert allowed(Action(result="ok"))(FakeContext()) == "ok"
    action = Action()
    with pytest.raises(PermissionDeniedError, match="node 'drop': admins only") as info:
        permission(lambda ctx: False, "admins only")(action)(FakeContext(node="drop"))
    assert info.value.node == "drop" and action.calls == 0


def test_validation_of_inputs_by_schema():
    mw = validate(inputs={"totals": dict, "count": (int, float)})
    ok = FakeContext(inputs={"totals": {}, "count": 2.5, "extra": "ignored"})
    assert mw(Action(result="r"))(ok) == "r"
    action = Action()
    with pytest.raises(ValidationError, match="node 'n': input 'count' is missing") as info:
        mw(action)(FakeContext(inputs={"totals": {}}))
    assert info.value.what == "input" and action.calls == 0
    with pytest.raises(ValidationError, match="input 'count' is str, expected int or float"):
        mw(action)(FakeContext(inputs={"totals": {}, "count": "2"}))


def test_validation_of_every_input_by_type():
    mw = validate(inputs=int)
    assert mw(Action(result=1))(FakeContext(inputs={"a": 1, "b": 2})) == 1
    with pytest.raises(ValidationError, match="input 'b' is str, expected int"):
        mw(Action())(FakeContext(inputs={"a": 1, "b": "2"}))


def test_validation_of_the_output():
    assert validate(output=int)(Action(result=3))(FakeContext()) == 3
    with pytest.raises(ValidationError, match="node 'n': output is str, expected int") as info:
        validate(output=int)(Action(result="3"))(FakeContext())
    assert info.value.what == "output"
    schema = validate(output={"rows": list})
    assert schema(Action(result={"rows": []}))(FakeContext()) == {"rows": []}
    with pytest.raises(ValidationError, match="expected a mapping"):
        schema(Action(result=[]))(FakeContext())


def test_validation_by_callables():
    def positive(value):
        return value > 0

    def strict(value):
        if value != 1:
            raise ValueError("not one")

    assert validate(output=positive)(Action(result=2))(FakeContext()) == 2
    with pytest.raises(ValidationError, match="output rejected by .*positive"):
        validate(output=positive)(Action(result=-2))(FakeContext())
    assert validate(output=strict)(Action(result=1))(FakeContext()) == 1  # None passes
    with pytest.raises(ValidationError, match="raised ValueError: not one") as info:
        validate(output=strict)(Action(result=2))(FakeContext())
    assert isinstance(info.value.__cause__, ValueError)
    assert validate(inputs=lambda inputs: "a" in inputs)(Action(result=0))(FakeContext(inputs={"a": 1})) == 0


def test_compose_applies_in_the_documented_order():
    order = []

    def tag(name):
        def middleware(action):
            def wrapped(ctx):
                order.append(name)
                return action(ctx)
            return wrapped
        return middleware

    composed = compose(tag("a"), tag("b"), tag("c"))(Action(result="x"))
    assert composed(FakeContext()) == "x" and order == ["a", "b", "c"]
    action = Action()
    assert compose()(action) is action


# -- logging ----------------------------------------------------------------------------------------------


def test_logging_events_carry_the_bound_keys():
    with capture_logs() as logs:
        assert logging_middleware()(Action(result=1))(FakeContext(node="a", attempt=2)) == 1
    assert [entry["event"] for entry in logs] == ["node.start", "node.success"]
    for entry in logs:
        assert (entry["workflow"], entry["run"], entry["node"], entry["attempt"]) == ("wf", "run-1", "a", 2)
        assert entry["log_level"] == "info"
    assert logs[1]["duration"] >= 0


def test_logging_failures_and_retries():
    boom = OSError("boom")
    with capture_logs() as logs:
        with pytest.raises(OSError):
            logging_middleware(level="DEBUG")(Action(errors=[boom]))(FakeContext())
        with pytest.raises(RetryRequested):
            logging_middleware()(retry(jitter="none", base_delay=0.5)(Action(errors=[boom])))(FakeContext())
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("node.start", "debug"), ("node.failure", "error"), ("node.start", "info"), ("node.retry", "warning")]
    assert logs[1]["exc_info"] is boom and logs[3]["exc_info"] is boom and logs[3]["delay"] == 0.5


def test_a_filtering_logger_skips_filtered_events_but_not_failures():
    logger = structlog.wrap_logger(structlog.ReturnLogger(),
                                   wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)).bind()
    with capture_logs() as logs:
        assert logging_middleware(logger)(Action(result=1))(FakeContext()) == 1
        with pytest.raises(OSError):
            logging_middleware(logger)(Action(errors=[OSError()]))(FakeContext())
    assert [e["event"] for e in logs] == ["node.failure"]


def test_a_broken_logger_does_not_change_the_outcome(caplog):
    class Broken:
        def log(self, *args, **kwargs):
            raise RuntimeError("no disk")

    with caplog.at_level(logging.ERROR, "flow_orchestrator.middleware"):
        assert logging_middleware(Broken())(Action(result=3))(FakeContext()) == 3
    assert "could not log 'node.start'" in caplog.text


# -- through the engine -----------------------------------------------------------------------------------


@pytest.fixture
def engine():
    with Engine(2) as eng:
        yield eng


def flaky(failures: int):
    """An action that fails ``failures`` times, then returns the attempt that succeeded."""
    calls = []

    def action(ctx):
        calls.append(ctx.attempt)
        if len(calls) <= failures:
            raise OSError(f"flaky {len(calls)}")
        return ctx.attempt
    action.calls = calls
    return action


def test_retry_makes_a_flaky_node_succeed(engine):
    action = flaky(2)
    wf = (WorkflowBuilder("retry")
          .add("flaky", action, middleware=retry(5, base_delay=0.001, jitter="none"))
          .add("after", lambda ctx: ctx.input("flaky") * 10, depends_on=["flaky"])
          .build())
    result = engine.run(wf)
    assert result.ok and result.output("after") == 30
    assert result.attempts[wf.interner.id("flaky")] == 3 == len(action.calls)


def test_retry_gives_up_after_max_attempts(engine):
    action = flaky(10)
    wf = WorkflowBuilder("give-up").add("a", action, middleware=retry(3, base_delay=0.001)).build()
    result = engine.run(wf, raise_on_failure=False)
    assert result.status_of("a") is NodeStatus.FAILED and action.calls == [1, 2, 3]
    assert str(result.error("a")) == "flaky 3"


def test_retry_does_not_hammer_an_open_breaker(engine):
    action = flaky(10)
    mw = (retry(5, base_delay=0.001, jitter="none"), circuit_breaker("engine-db", failure_threshold=1))
    wf = WorkflowBuilder("breaker").add("a", action, middleware=mw).build()
    result = engine.run(wf, raise_on_failure=False)
    assert action.calls == [1]  # the second attempt met the open breaker and stopped there
    assert isinstance(result.error("a"), CircuitOpenError) and result.attempts[0] == 2
    assert get_breaker("engine-db").state is BreakerState.OPEN


def test_logging_through_the_engine(engine):
    wf = (WorkflowBuilder("logged")
          .add("flaky", flaky(1), middleware=compose(logging_middleware(), retry(3, base_delay=0.001)))
          .add("next", lambda: "n", depends_on=["flaky"], middleware=logging_middleware())
          .build())
    with capture_logs() as logs:
        result = engine.run(wf, run_id="run-42")
    assert result.ok
    assert [(e["event"], e["node"], e["attempt"]) for e in logs] == [
        ("node.start", "flaky", 1), ("node.retry", "flaky", 1), ("node.start", "flaky", 2),
        ("node.success", "flaky", 2), ("node.start", "next", 1), ("node.success", "next", 1)]
    assert {(e["workflow"], e["run"]) for e in logs} == {("logged", "run-42")}


def test_rate_limit_reschedules_through_the_engine(engine):
    nodes = 12
    clock = TickingClock(0.0001)  # a tenth of a token per reading at 1000/s
    mw = rate_limit("engine-api", rate=1000.0, burst=1, clock=clock)
    ran = []
    builder = WorkflowBuilder("limited")
    for i in range(nodes):
        builder.add(f"n{i}", functools.partial(ran.append, i), middleware=mw)
    result = engine.run(builder.build())
    assert result.ok and sorted(ran) == list(range(nodes))
    assert int(result.attempts.sum()) > nodes  # some nodes waited for a token and came back


def test_engine_level_middleware():
    records = []
    sink = metrics_middleware(lambda node, attempt, seconds, error: records.append(node))
    with Engine(2, middleware=[sink]) as eng:
        wf = WorkflowBuilder("m").add("a", lambda: 1).add("b", lambda: 2, depends_on=["a"]).build()
        assert eng.run(wf).ok
    assert records == ["a", "b"]
