"""A per-supplier circuit breaker, as a state machine in the resilience4j style.

Each state is one small class that decides two things: may a call go out (`try_acquire`), and
what does a finished call mean (`record`). Legal moves are listed in `TRANSITIONS`; anything else
raises `IllegalTransition`. Time comes from an injected clock, so tests never sleep.

Everything here is synchronous: in asyncio, no other task can run between a check and its update.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, ClassVar

import msgspec


class State(StrEnum):
    """Breaker states; the values are the metric and admin labels."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.CLOSED: frozenset({State.OPEN, State.FORCED_OPEN, State.FORCED_CLOSED}),
    State.OPEN: frozenset({State.HALF_OPEN, State.CLOSED, State.FORCED_OPEN, State.FORCED_CLOSED}),
    State.HALF_OPEN: frozenset({State.CLOSED, State.OPEN, State.FORCED_OPEN, State.FORCED_CLOSED}),
    State.FORCED_OPEN: frozenset({State.CLOSED, State.FORCED_CLOSED}),
    State.FORCED_CLOSED: frozenset({State.CLOSED, State.FORCED_OPEN}),
}
"""Legal moves. Entering CLOSED from OPEN or a forced state is `reset()`."""

TransitionCallback = Callable[[str, State, State], None]


class IllegalTransition(Exception):
    """A move that `TRANSITIONS` does not list."""

    def __init__(self, old: State, new: State) -> None:
        super().__init__(f"illegal breaker transition {old} -> {new}")
        self.old = old
        self.new = new


class BreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds; rates are fractions in [0, 1], durations seconds."""

    window_size: int = 20
    minimum_calls: int = 5
    failure_rate_threshold: float = 0.5
    slow_call_duration_s: float = 2.0
    slow_call_rate_threshold: float = 1.0
    wait_in_open_s: float = 10.0
    permitted_calls_in_half_open: int = 2

    def __post_init__(self) -> None:
        if self.window_size < 1 or self.minimum_calls < 1:
            raise ValueError("window_size and minimum_calls must be >= 1")
        if self.permitted_calls_in_half_open < 1:
            raise ValueError("permitted_calls_in_half_open must be >= 1")
        if not (0 < self.failure_rate_threshold <= 1 and 0 < self.slow_call_rate_threshold <= 1):
            raise ValueError("rate thresholds must be in (0, 1]")
        if self.slow_call_duration_s <= 0 or self.wait_in_open_s < 0:
            raise ValueError("slow_call_duration_s must be > 0 and wait_in_open_s >= 0")


class _CountWindow:
    """The outcomes of the last `size` calls, with running totals."""

    def __init__(self, size: int) -> None:
        self._calls: deque[tuple[bool, bool]] = deque(maxlen=size)
        self.failures = 0
        self.slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        if len(self._calls) == self._calls.maxlen:
            old_failed, old_slow = self._calls[0]  # about to fall out of the window
            self.failures -= old_failed
            self.slow -= old_slow
        self._calls.append((failed, slow))
        self.failures += failed
        self.slow += slow

    def clear(self) -> None:
        self._calls.clear()
        self.failures = self.slow = 0

    @property
    def calls(self) -> int:
        return len(self._calls)

    def rates(self) -> tuple[float, float]:
        n = len(self._calls)
        return (self.failures / n, self.slow / n) if n else (0.0, 0.0)


class _StateHandler:
    """Behaviour of one state; the breaker swaps handlers on every transition."""

    state: ClassVar[State]

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def try_acquire(self) -> bool:
        return True

    def record(self, failed: bool, slow: bool) -> None:
        """Results reaching a state that does not count them are dropped."""

    def release(self) -> None:
        """Give back a permit that was not used."""


class _Closed(_StateHandler):
    state = State.CLOSED

    def record(self, failed: bool, slow: bool) -> None:
        window = self.breaker.window
        window.add(failed, slow)
        if self.breaker.over_threshold(window):
            self.breaker.transition_to(State.OPEN)


class _Open(_StateHandler):
    state = State.OPEN

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self.opened_from = breaker.state  # built while the old handler is still in place
        self.opened_at = breaker.clock()
        self.open_until = self.opened_at + breaker.config.wait_in_open_s

    def try_acquire(self) -> bool:
        if self.breaker.clock() < self.open_until:
            return False
        # The wait is over: this very call becomes the first probe.
        self.breaker.transition_to(State.HALF_OPEN)
        return self.breaker.try_acquire()


class _HalfOpen(_StateHandler):
    state = State.HALF_OPEN

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self.permitted = breaker.config.permitted_calls_in_half_open
        self.issued = 0
        self.window = _CountWindow(self.permitted)

    def try_acquire(self) -> bool:
        if self.issued >= self.permitted:
            return False
        self.issued += 1
        return True

    def release(self) -> None:
        if self.issued > self.window.calls:
            self.issued -= 1

    def record(self, failed: bool, slow: bool) -> None:
        if self.window.calls >= self.issued:
            return  # a late answer to a call made before the probes: not a probe
        if failed:
            self.breaker.transition_to(State.OPEN)
            return
        self.window.add(failed, slow)
        if self.window.calls < self.permitted:
            return
        _, slow_rate = self.window.rates()
        tripped = slow_rate >= self.breaker.config.slow_call_rate_threshold
        self.breaker.transition_to(State.OPEN if tripped else State.CLOSED)


class _ForcedOpen(_StateHandler):
    state = State.FORCED_OPEN

    def try_acquire(self) -> bool:
        return False


class _ForcedClosed(_StateHandler):
    state = State.FORCED_CLOSED

    def record(self, failed: bool, slow: bool) -> None:
        # Figures stay visible to operators; they never trip a forced breaker.
        self.breaker.window.add(failed, slow)


_HANDLERS: Mapping[State, type[_StateHandler]] = {
    h.state: h for h in (_Closed, _Open, _HalfOpen, _ForcedOpen, _ForcedClosed)
}


class CircuitBreaker:
    """The breaker of one supplier. Not thread-safe; safe across asyncio tasks."""

    def __init__(
        self,
        supplier_id: str,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionCallback | None = None,
    ) -> None:
        self.supplier_id = supplier_id
        self.config = config or BreakerConfig()
        self.clock = clock
        self.window = _CountWindow(self.config.window_size)
        self._on_transition = on_transition
        self._handler: _StateHandler = _Closed(self)

    @property
    def state(self) -> State:
        """The current state; an OPEN whose wait is over turns HALF_OPEN on the next acquire."""
        return self._handler.state

    @property
    def open_until(self) -> float | None:
        """When OPEN, the clock time at which probes are allowed; otherwise None."""
        handler = self._handler
        return handler.open_until if isinstance(handler, _Open) else None

    @property
    def opened(self) -> tuple[State, float] | None:
        """When OPEN: the state it opened from and the clock time it opened; otherwise None."""
        handler = self._handler
        return (handler.opened_from, handler.opened_at) if isinstance(handler, _Open) else None

    def try_acquire(self) -> bool:
        """True if a call may go out now; False means fail fast without calling."""
        return self._handler.try_acquire()

    def release(self) -> None:
        """Return an acquired permit whose call never happened (cancelled, bulkhead full)."""
        self._handler.release()

    def on_success(self, duration_s: float) -> None:
        """Record a healthy answer; it still counts as slow past `slow_call_duration_s`."""
        self._handler.record(False, duration_s >= self.config.slow_call_duration_s)

    def on_failure(self, duration_s: float) -> None:
        """Record a failed call (timeout, 5xx, connection error...)."""
        self._handler.record(True, duration_s >= self.config.slow_call_duration_s)

    def force_open(self) -> None:
        """Refuse every call until `force_closed()` or `reset()`."""
        if self.state is not State.FORCED_OPEN:
            self.transition_to(State.FORCED_OPEN)

    def force_closed(self) -> None:
        """Allow every call, whatever the figures, until `force_open()` or `reset()`."""
        if self.state is not State.FORCED_CLOSED:
            self.transition_to(State.FORCED_CLOSED)

    def reset(self) -> None:
        """Back to CLOSED with an empty window, from any state."""
        if self.state is not State.CLOSED:
            self.transition_to(State.CLOSED)
        self.window.clear()

    def hold_open(self, seconds: float) -> bool:
        """Open (or stay open) for at least `seconds` more; forced states win and give False."""
        if self.state in (State.FORCED_OPEN, State.FORCED_CLOSED):
            return False
        if self.state is not State.OPEN:
            self.transition_to(State.OPEN)
        handler = self._handler
        assert isinstance(handler, _Open)
        handler.open_until = max(handler.open_until, self.clock() + seconds)
        return True

    def transition_to(self, new: State) -> None:
        """Move to `new` if `TRANSITIONS` allows it, else raise IllegalTransition."""
        old = self._handler.state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(old, new)
        self._handler = _HANDLERS[new](self)
        if new in (State.CLOSED, State.FORCED_CLOSED):
            self.window.clear()  # a fresh start: old failures must not trip it again
        if self._on_transition is not None:
            self._on_transition(self.supplier_id, old, new)

    def over_threshold(self, window: _CountWindow) -> bool:
        """True once enough calls were seen and a failure or slow-call rate is too high."""
        config = self.config
        if window.calls < min(config.minimum_calls, config.window_size):
            return False
        failure_rate, slow_rate = window.rates()
        return (
            failure_rate >= config.failure_rate_threshold
            or slow_rate >= config.slow_call_rate_threshold
        )

    def snapshot(self) -> dict[str, Any]:
        """State and figures of the rolling window, for admin pages and logs."""
        failure_rate, slow_rate = self.window.rates()
        open_until = self.open_until
        return {
            "state": str(self.state),
            "calls": self.window.calls,
            "failure_rate": failure_rate,
            "slow_call_rate": slow_rate,
            "open_until": open_until,
            "open_remaining_s": None if open_until is None else max(0.0, open_until - self.clock()),
        }
