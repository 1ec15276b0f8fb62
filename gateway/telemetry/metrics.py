"""Every metric, defined once. Prometheus naming: `gateway_` prefix, base units, bounded labels.

With several workers, `gateway serve` sets PROMETHEUS_MULTIPROC_DIR before the workers import
this module, and `/metrics` aggregates every worker's files in one scrape. Every metric is
wrapped by `gateway.tally`: the hot path adds to plain numbers and a flush every second (and
before each render) hands them to prometheus_client.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.telemetry import tally
from risk.challenge import REASONS as PASS_REFUSALS
from supplier_pool.pool import SupplierCall

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

http_requests = tally.Counter(
    Counter("gateway_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
)
http_latency = tally.Histogram(
    Histogram(
        "gateway_http_request_duration_seconds",
        "Time to answer an HTTP request",
        ["route", "status"],
        buckets=LATENCY_BUCKETS,
    )
)
claims = tally.Counter(Counter("gateway_claims_total", "Claim decisions by result", ["result"]))
soldout_local = tally.Counter(
    Counter(
        "gateway_soldout_local_total",
        "Claims answered sold_out from the in-process flag (no Redis)",
    )
)
redemptions = tally.Counter(
    Counter("gateway_redemptions_total", "Redemption decisions by result", ["result"])
)
ratelimit_rejections = tally.Counter(
    Counter(
        "gateway_ratelimit_rejections_total",
        "Requests refused by a rate limit",
        ["route", "dimension", "source"],
    )
)
risk_decisions = tally.Counter(
    Counter(
        "gateway_risk_decisions_total",
        "Velocity rule and list hits",
        ["rule", "decision", "mode"],
    )
)
supplier_calls = tally.Counter(
    Counter("gateway_supplier_calls_total", "Supplier calls by outcome", ["supplier", "outcome"])
)
supplier_latency = tally.Histogram(
    Histogram(
        "gateway_supplier_call_duration_seconds",
        "Supplier call latency",
        ["supplier"],
        buckets=LATENCY_BUCKETS,
    )
)
supplier_failovers = tally.Counter(
    Counter(
        "gateway_supplier_failovers_total",
        "Orders placed at a supplier after a higher-priority one was passed over",
        ["supplier"],
    )
)
breaker_state = tally.Gauge(
    Gauge(
        "gateway_supplier_breaker_state",
        "Breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed",
        ["supplier"],
        multiprocess_mode="max",
    )
)
breaker_transitions = tally.Counter(
    Counter(
        "gateway_supplier_breaker_transitions_total",
        "Breaker state changes",
        ["supplier", "from_state", "to_state"],
    )
)
stock_left = tally.Gauge(
    Gauge(
        "gateway_campaign_stock_left",
        "Stock left per campaign, as last seen by a decision",
        ["campaign"],
        multiprocess_mode="mostrecent",
    )
)
redis_latency = tally.Histogram(
    Histogram(
        "gateway_redis_call_duration_seconds",
        "Redis script call latency",
        ["call"],
        buckets=LATENCY_BUCKETS,
    )
)
redis_errors = tally.Counter(
    Counter("gateway_redis_errors_total", "Redis calls that failed", ["call"])
)
in_flight_gauge = (  # sampled from the worker's Shedder at each flush
    Gauge("gateway_in_flight_requests", "Requests being handled", multiprocess_mode="livesum")
)
shed = tally.Counter(Counter("gateway_shed_requests_total", "Requests shed with 503 overloaded"))
pending_redemptions = tally.Gauge(
    Gauge(
        "gateway_pending_redemptions",
        "Redemptions waiting on a supplier outcome",
        multiprocess_mode="max",
    )
)
challenges_issued = tally.Counter(
    Counter(
        "gateway_challenges_issued_total", "Requests answered 403 challenge_required", ["route"]
    )
)
challenges_passed = tally.Counter(
    Counter("gateway_challenges_passed_total", "Challenges lifted by a challenge pass", ["route"])
)
challenge_passes_refused = tally.Counter(
    Counter(
        "gateway_challenge_passes_refused_total",
        "Challenge passes that lifted nothing on a challenged request, by reason",
        ["route", "reason"],
    )
)
idempotent_replays = tally.Counter(
    Counter("gateway_idempotent_replays_total", "Answers replayed from a stored idempotency record")
)
build_info = Gauge(
    "gateway_build_info",
    "Always 1: the running version and commit",
    ["version", "commit"],
    multiprocess_mode="max",
)

# Every result a claim or a redemption decision can be counted under (bounded label sets).
CLAIM_RESULTS = (
    "granted",
    "sold_out",
    "limit_reached",
    "campaign_not_active",
    "campaign_not_found",
    "rate_limited",
    "risk_denied",
    "challenge_required",
    "daily_stock_exhausted",
    "budget_exhausted",
)
REDEMPTION_RESULTS = (
    "delivered",
    "pending",
    "failed",
    "voucher_not_found",
    "voucher_redeemed",
    "voucher_frozen",
    "voucher_expired",
    "voucher_revoked",
    "request_in_progress",
    "pool_empty",
    "suppliers_unavailable",
    "risk_denied",
)
LIST_DECISIONS = ("blocked_users", "blocked_devices", "blocked_ips")
CHALLENGE_ROUTES = ("claim", "redeem")
# The Redis calls of the request path, whose errors and latency alerts read from the start.
REQUEST_PATH_CALLS = ("claim", "claim_idem_probe", "redeem_guard", "redeem", "redeem_settle")


def _declare_challenges() -> None:
    for route in CHALLENGE_ROUTES:
        challenges_issued.labels(route)
        challenges_passed.labels(route)
        for reason in PASS_REFUSALS:
            challenge_passes_refused.labels(route, reason)


def build_version() -> tuple[str, str]:
    """(package version, git commit or "unknown"), read once at start without running git."""
    try:
        version = importlib.metadata.version("benefits-gateway")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        return version, _git_commit(Path(__file__).resolve().parents[2] / ".git")[:12]
    except (OSError, StopIteration):
        return version, "unknown"


def _git_commit(git: Path) -> str:
    if git.is_file():  # a worktree: `.git` names its own git directory
        git = (git.parent / git.read_text().removeprefix("gitdir:").strip()).resolve()
    common = git
    if (git / "commondir").exists():  # a worktree's branches live in the main git directory
        common = (git / (git / "commondir").read_text().strip()).resolve()
    head = (git / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head  # a detached HEAD is the commit itself
    ref = head.removeprefix("ref: ")
    for where in (git, common):
        if (where / ref).exists():
            return (where / ref).read_text().strip()
    packed = (common / "packed-refs").read_text().splitlines()  # refs packed by git gc
    return next(line.split()[0] for line in packed if line.endswith(" " + ref))


def declare(
    suppliers: Iterable[str],
    supplier_outcomes: Iterable[str],
    breaker_moves: Iterable[tuple[str, str]],
    limits: Iterable[tuple[str, str]],
    rules: Iterable[tuple[str, str, str]],
    version: tuple[str, str],
) -> None:
    """Create every series whose labels the configuration fixes, at 0, so a fresh gateway
    exposes them all and `rate()` or `absent()` alerts have something to read from the start.

    `breaker_moves`: legal (from, to) states; `limits`: (route, dimension) pairs; `rules`:
    (rule id, decision, mode).
    """
    for result in CLAIM_RESULTS:
        claims.labels(result)
    for result in REDEMPTION_RESULTS:
        redemptions.labels(result)
    for route, dimension in limits:
        for source in ("local", "redis"):
            ratelimit_rejections.labels(route, dimension, source)
    for rule in (*rules, *((name, "deny", "enforce") for name in LIST_DECISIONS)):
        risk_decisions.labels(*rule)
    outcomes, moves = tuple(supplier_outcomes), tuple(breaker_moves)
    for supplier in suppliers:
        breaker_state.labels(supplier)
        supplier_latency.labels(supplier)
        supplier_failovers.labels(supplier)
        for outcome in outcomes:
            supplier_calls.labels(supplier, outcome)
        for old, new in moves:
            breaker_transitions.labels(supplier, old, new)
    for call in REQUEST_PATH_CALLS:
        redis_latency.labels(call)
        redis_errors.labels(call)
    _declare_challenges()
    soldout_local.labels()
    shed.labels()
    idempotent_replays.labels()
    pending_redemptions.labels()
    build_info.labels(*version).set(1)


class _Derived:
    """Families read from Valkey at scrape time, not counted by any worker."""

    def __init__(self, trimmed_unread: int | None) -> None:
        self._trimmed_unread = trimmed_unread

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "gateway_events_trimmed_unread",
            "Events the stream length cap removed before the ledger's consumer group read them",
        )
        if self._trimmed_unread is not None:  # None: Valkey did not answer this scrape
            family.add_metric([], self._trimmed_unread)
        yield family


def render(trimmed_unread: int | None = None) -> tuple[bytes, str]:
    """The text exposition of every metric, over all workers when running multi-process, and
    the families read from Valkey for this scrape."""
    tally.flush()
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Everything())
    registry.register(_Derived(trimmed_unread))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Everything:
    """The process's own registry, as one collector of the scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2, "forced_open": 3, "forced_closed": 4}


class SupplierObserver:
    """The supplier pool's observer: its calls and breaker moves, as metrics."""

    def call_finished(self, call: SupplierCall) -> None:
        supplier_calls.labels(call.supplier_id, call.outcome).inc()
        if call.sent:
            supplier_latency.labels(call.supplier_id).observe(call.seconds)
        if call.failover:
            supplier_failovers.labels(call.supplier_id).inc()

    def breaker_transition(self, supplier_id: str, old: str, new: str) -> None:
        breaker_transitions.labels(supplier_id, old, new).inc()
        breaker_state.labels(supplier_id).set(BREAKER_STATES.get(new, -1))
