"""The breaker state machine, driven by a fake clock: no test sleeps across a wait."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supplier_pool.breaker import (
    TRANSITIONS,
    BreakerConfig,
    CircuitBreaker,
    IllegalTransition,
    State,
)
from tests.supplier_pool.helpers import FakeClock

CONFIG = BreakerConfig(
    window_size=10,
    minimum_calls=4,
    failure_rate_threshold=0.5,
    slow_call_duration_s=2.0,
    slow_call_rate_threshold=1.0,
    wait_in_open_s=10.0,
    permitted_calls_in_half_open=2,
)


def make(clock: FakeClock, config: BreakerConfig = CONFIG) -> tuple[CircuitBreaker, list[str]]:
    moves: list[str] = []
    breaker = CircuitBreaker(
        "alpha", config, clock, lambda sid, old, new: moves.append(f"{sid}:{old}->{new}")
    )
    return breaker, moves


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.try_acquire()
        breaker.on_failure(0.1)


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, CONFIG.minimum_calls)
    assert breaker.state is State.OPEN


def test_stays_closed_below_minimum_calls(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    fail(breaker, CONFIG.minimum_calls - 1)
    assert breaker.state is State.CLOSED


def test_opens_when_failure_rate_reaches_threshold(clock: FakeClock) -> None:
    breaker, moves = make(clock)
    for ok in (True, True, False):
        assert breaker.try_acquire()
        (breaker.on_success if ok else breaker.on_failure)(0.1)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)  # 2 failures out of 4 = 50%
    assert breaker.state is State.OPEN
    assert moves == ["alpha:closed->open"]


def test_fails_fast_while_open_until_the_wait_is_over(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(CONFIG.wait_in_open_s - 0.001)
    assert not breaker.try_acquire()
    assert breaker.state is State.OPEN


def test_half_opens_after_wait_and_permits_only_the_probes(clock: FakeClock) -> None:
    breaker, moves = make(clock)
    trip(breaker)
    clock.advance(CONFIG.wait_in_open_s)
    assert breaker.try_acquire()
    assert breaker.state is State.HALF_OPEN
    assert breaker.try_acquire()
    assert not breaker.try_acquire()  # only permitted_calls_in_half_open probes
    assert moves[-1] == "alpha:open->half_open"


def test_closes_when_every_probe_succeeds(clock: FakeClock) -> None:
    breaker, moves = make(clock)
    trip(breaker)
    clock.advance(CONFIG.wait_in_open_s)
    assert breaker.try_acquire() and breaker.try_acquire()
    breaker.on_success(0.1)
    assert breaker.state is State.HALF_OPEN
    breaker.on_success(0.1)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["calls"] == 0  # a fresh window after closing
    assert moves[-1] == "alpha:half_open->closed"


def test_reopens_on_a_failed_probe_for_a_new_wait(clock: FakeClock) -> None:
    breaker, moves = make(clock)
    trip(breaker)
    clock.advance(CONFIG.wait_in_open_s)
    assert breaker.try_acquire() and breaker.try_acquire()
    breaker.on_success(0.1)
    breaker.on_failure(0.1)
    assert breaker.state is State.OPEN
    assert breaker.open_until == pytest.approx(clock() + CONFIG.wait_in_open_s)
    assert not breaker.try_acquire()
    assert moves[-1] == "alpha:half_open->open"


def test_released_probe_permit_can_be_used_again(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(CONFIG.wait_in_open_s)
    assert breaker.try_acquire() and breaker.try_acquire()
    breaker.release()
    assert breaker.try_acquire()
    assert not breaker.try_acquire()


def test_late_answer_from_before_the_trip_is_not_a_probe(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(CONFIG.wait_in_open_s)
    assert breaker.try_acquire()
    breaker.on_success(0.1)  # the probe
    breaker.on_success(0.1)  # no permit is outstanding for this one
    assert breaker.state is State.HALF_OPEN


def test_slow_successes_trip_on_the_slow_call_rate(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    for _ in range(CONFIG.minimum_calls):
        assert breaker.try_acquire()
        breaker.on_success(CONFIG.slow_call_duration_s)
    assert breaker.state is State.OPEN
    assert breaker.snapshot()["slow_call_rate"] == 1.0
    assert breaker.snapshot()["failure_rate"] == 0.0


def test_one_fast_call_keeps_a_slow_window_closed(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    breaker.on_success(0.01)
    for _ in range(CONFIG.window_size - 1):
        breaker.on_success(5.0)
    assert breaker.state is State.CLOSED


def test_slow_probes_reopen(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(CONFIG.wait_in_open_s)
    assert breaker.try_acquire() and breaker.try_acquire()
    breaker.on_success(5.0)
    breaker.on_success(5.0)
    assert breaker.state is State.OPEN


def test_rolling_window_forgets_calls_older_than_its_size(clock: FakeClock) -> None:
    config = BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=0.75)
    breaker, _ = make(clock, config)
    for ok in (False, False, True, True, True, True):
        (breaker.on_success if ok else breaker.on_failure)(0.1)
    assert breaker.snapshot()["failure_rate"] == 0.0
    fail(breaker, 2)
    assert breaker.state is State.CLOSED  # 2 of the last 4 failed: below 75%
    fail(breaker, 1)
    assert breaker.state is State.OPEN


def test_forced_open_refuses_every_call_and_ignores_time(clock: FakeClock) -> None:
    breaker, moves = make(clock)
    breaker.force_open()
    clock.advance(3600)
    assert not breaker.try_acquire()
    assert breaker.state is State.FORCED_OPEN
    assert moves == ["alpha:closed->forced_open"]


def test_forced_closed_allows_every_call_and_never_trips(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    breaker.force_closed()
    fail(breaker, 50)
    assert breaker.state is State.FORCED_CLOSED
    assert breaker.snapshot()["failure_rate"] == 1.0


def test_reset_returns_to_closed_with_an_empty_window(clock: FakeClock) -> None:
    breaker, moves = make(clock)
    trip(breaker)
    breaker.reset()
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["calls"] == 0
    fail(breaker, 1)
    breaker.reset()  # already closed: clears, no transition
    assert breaker.snapshot()["calls"] == 0
    assert moves == ["alpha:closed->open", "alpha:open->closed"]


def test_hold_open_extends_an_open_breaker_but_never_a_forced_one(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    assert breaker.hold_open(30)
    assert breaker.open_until == clock() + 30
    assert breaker.hold_open(5)  # never shortens
    assert breaker.open_until == clock() + 30
    breaker.force_closed()
    assert not breaker.hold_open(30)
    assert breaker.state is State.FORCED_CLOSED


ILLEGAL = [
    (old, new)
    for old, new in itertools.product(State, State)
    if new not in TRANSITIONS[old] and old is not new
]


def test_the_table_forbids_what_a_breaker_must_never_do() -> None:
    assert (State.CLOSED, State.HALF_OPEN) in ILLEGAL
    assert (State.FORCED_OPEN, State.OPEN) in ILLEGAL
    assert (State.FORCED_OPEN, State.HALF_OPEN) in ILLEGAL
    assert (State.FORCED_CLOSED, State.OPEN) in ILLEGAL


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=lambda s: str(s))
def test_transitions_table_rejects_illegal_moves(clock: FakeClock, old: State, new: State) -> None:
    breaker, _ = make(clock)
    path = {
        State.CLOSED: [],
        State.OPEN: [State.OPEN],
        State.HALF_OPEN: [State.OPEN, State.HALF_OPEN],
        State.FORCED_OPEN: [State.FORCED_OPEN],
        State.FORCED_CLOSED: [State.FORCED_CLOSED],
    }[old]
    for step in path:
        breaker.transition_to(step)
    with pytest.raises(IllegalTransition):
        breaker.transition_to(new)
    assert breaker.state is old


def test_same_state_is_not_a_transition(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    with pytest.raises(IllegalTransition):
        breaker.transition_to(State.CLOSED)


def test_snapshot_reports_state_and_figures(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    breaker.on_success(0.1)
    breaker.on_failure(3.0)
    assert breaker.snapshot() == {
        "state": "closed",
        "calls": 2,
        "failure_rate": 0.5,
        "slow_call_rate": 0.5,
        "open_until": None,
        "open_remaining_s": None,
    }
    breaker.transition_to(State.OPEN)
    clock.advance(4)
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["open_remaining_s"] == pytest.approx(6.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"window_size": 0},
        {"minimum_calls": 0},
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 1.5},
        {"slow_call_duration_s": 0},
        {"permitted_calls_in_half_open": 0},
    ],
)
def test_config_rejects_values_that_make_no_sense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**bad)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5)), max_size=60))
def test_window_figures_match_the_last_window_size_calls(calls: list[tuple[bool, float]]) -> None:
    breaker = CircuitBreaker("alpha", BreakerConfig(window_size=7), FakeClock())
    breaker.force_closed()  # records figures, never changes state
    for failed, seconds in calls:
        (breaker.on_failure if failed else breaker.on_success)(seconds)
    last = calls[-7:]
    snap = breaker.snapshot()
    assert snap["calls"] == len(last)
    if last:
        assert snap["failure_rate"] == sum(f for f, _ in last) / len(last)
        assert snap["slow_call_rate"] == sum(s >= 2.0 for _, s in last) / len(last)
