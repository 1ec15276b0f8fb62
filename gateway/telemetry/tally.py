"""Metric updates in plain Python numbers, folded into prometheus_client off the hot path.

With several workers, every prometheus_client update is a locked write into a memory-mapped
file plus a pid check (a syscall), too dear for the claim path. Here an update adds to a
number the worker owns; `flush()` (every second, before each `/metrics` render and
at shutdown) hands the sums to the real metrics. A scrape therefore sees a worker's counts at
most a second late, the same freshness the SPEC allows the campaign view.

The wrappers keep prometheus_client's calling shape (`labels(...).inc()`, `.observe()`,
`.set()`), so a metric is switched by wrapping its definition, not by touching call sites.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any, Protocol


class _Flushable(Protocol):
    def flush(self) -> None: ...


_ALL: list[_Flushable] = []


def flush() -> None:
    """Hand every pending update of this process to prometheus_client."""
    for metric in _ALL:
        metric.flush()
    for gauge, read in _SAMPLED.items():
        gauge.set(read())


class _Family:
    """A labelled metric's children, one per label tuple, created on first use."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}
        _ALL.append(self)

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            target = self._metric.labels(*values) if values else self._metric
            child = self._children[values] = self._child(target)
        return child

    def _child(self, target: Any) -> Any:
        raise NotImplementedError

    def flush(self) -> None:
        for child in self._children.values():
            child.flush()


class _CounterChild:
    __slots__ = ("_pending", "_target")

    def __init__(self, target: Any) -> None:
        self._target = target
        self._pending = 0.0

    def inc(self, amount: float = 1) -> None:
        self._pending += amount

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._target.inc(pending)


class Counter(_Family):
    def _child(self, target: Any) -> _CounterChild:
        return _CounterChild(target)

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)


class _GaugeChild:
    """The worker's current value; a flush writes it when it changed."""

    __slots__ = ("_target", "_value", "_written")

    def __init__(self, target: Any) -> None:
        self._target = target
        self._value = 0.0
        self._written: float | None = None

    def set(self, value: float) -> None:
        self._value = value

    def inc(self, amount: float = 1) -> None:
        self._value += amount

    def dec(self, amount: float = 1) -> None:
        self._value -= amount

    def flush(self) -> None:
        if self._value != self._written:
            self._written = self._value
            self._target.set(self._value)


class Gauge(_Family):
    def _child(self, target: Any) -> _GaugeChild:
        return _GaugeChild(target)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self.labels().dec(amount)


_SAMPLED: dict[Any, Callable[[], float]] = {}


def sample(gauge: Any, read: Callable[[], float]) -> None:
    """Set `gauge` from `read()` at each flush (a value the worker keeps anyway); the latest
    registration for a gauge replaces the one before."""
    _SAMPLED[gauge] = read


class _HistogramChild:
    """Counts per bucket and the sum, added to the real buckets on flush.

    prometheus_client has no "add n observations to bucket i" call, so the flush writes the
    child's per-bucket values (`_buckets`, `_sum`: stable since the multiprocess mode exists,
    and pinned by tests/gateway/test_tally.py).
    """

    __slots__ = ("_bounds", "_counts", "_sum", "_target")

    def __init__(self, target: Any) -> None:
        self._target = target
        self._bounds: list[float] = list(target._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        if not any(self._counts):
            return
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        self._target._sum.inc(total)
        for bucket, count in zip(self._target._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


class Histogram(_Family):
    def _child(self, target: Any) -> _HistogramChild:
        return _HistogramChild(target)

    def observe(self, amount: float) -> None:
        self.labels().observe(amount)
