"""dashboard.json: what build_dashboard.py writes, with a panel for each thing SREs watch."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.monitoring import files


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", files.MONITORING / "build_dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_what_the_builder_writes() -> None:
    assert files.DASHBOARD.read_text() == builder().render(), (
        "run `python config/monitoring/build_dashboard.py` and commit dashboard.json"
    )


def test_panels_have_unique_ids_and_a_query_each() -> None:
    panels = files.dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_every_watched_metric_has_a_panel() -> None:
    exprs = "\n".join(files.dashboard_exprs())
    watched = [
        "gateway_http_requests_total",
        "gateway_http_request_duration_seconds_bucket",
        "gateway_claims_total",
        'gateway_claims_total{result="sold_out"}',
        "gateway_soldout_local_total",
        "gateway_ratelimit_rejections_total",
        "gateway_risk_decisions_total",
        "gateway_supplier_breaker_state",
        "gateway_supplier_call_duration_seconds_bucket",
        "gateway_supplier_calls_total",
        "gateway_redis_call_duration_seconds_bucket",
        "gateway_redis_errors_total",
        "gateway_in_flight_requests",
        "gateway_shed_requests_total",
        "gateway_pending_redemptions",
        "backend_ingest_lag_seconds",
        "backend_pending_events",
        "backend_events_ingested_total",
        "gateway_events_trimmed_unread_total",
    ]
    assert [name for name in watched if name not in exprs] == []
