"""The buffered metric wrappers hand prometheus_client exactly what direct updates would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.telemetry import tally

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_buffered_metrics_equal_direct_updates_after_flush() -> None:
    direct, buffered = CollectorRegistry(), CollectorRegistry()
    d_count = Counter("c", "c", ["result"], registry=direct)
    d_hist = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=direct)
    d_gauge = Gauge("g", "g", registry=direct)
    b_count = tally.Counter(Counter("c", "c", ["result"], registry=buffered))
    b_hist = tally.Histogram(Histogram("h", "h", ["route"], buckets=BUCKETS, registry=buffered))
    b_gauge = tally.Gauge(Gauge("g", "g", registry=buffered))
    rng = random.Random(7)
    for _ in range(2000):
        result, route = rng.choice(["granted", "sold_out"]), rng.choice(["/a", "/b"])
        # bucket edges included: an observation equal to a bound belongs to that bound
        seconds = rng.choice([*BUCKETS, rng.random() * 2])
        d_count.labels(result).inc()
        b_count.labels(result).inc()
        d_hist.labels(route).observe(seconds)
        b_hist.labels(route).observe(seconds)
        d_gauge.inc(3)
        b_gauge.inc(3)
        d_gauge.dec()
        b_gauge.dec()
    assert samples(buffered) != samples(direct)  # nothing reached prometheus_client yet
    tally.flush()
    assert samples(buffered) == samples(direct)


def test_a_flush_hands_over_each_update_once() -> None:
    registry = CollectorRegistry()
    counter = tally.Counter(Counter("once", "once", registry=registry))
    counter.inc(2)
    tally.flush()
    tally.flush()
    counter.inc()
    tally.flush()
    assert registry.get_sample_value("once_total") == 3
