"""The backend's Prometheus metrics, in a registry of their own (one per app, not global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class BackendMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_ingested = Counter(
            "backend_events_ingested",
            "Stream entries committed to the ledger (each once)",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "backend_dead_letters",
            "Malformed stream entries kept in the dead-letter table",
            registry=self.registry,
        )
        self.ingest_lag = Gauge(
            "backend_ingest_lag_seconds",
            "Age of the oldest stream entry not yet committed (0 when caught up)",
            registry=self.registry,
        )
        self.pending = Gauge(
            "backend_pending_events",
            "Stream entries not yet committed: delivered but unacked, plus not yet delivered",
            registry=self.registry,
        )
        self.database_up = Gauge(
            "backend_database_up",
            "1 when the last ledger write succeeded, 0 while the database fails",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
