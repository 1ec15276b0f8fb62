"""Writes dashboard.json, the gateway's Grafana dashboard, from the panel list below.

Run `python config/monitoring/build_dashboard.py` after changing a panel; a test fails while the
committed JSON differs from what this script writes. Every query reads a metric the gateway or
the admin backend exports, or a recording rule of alerts.yml (a test checks both).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("dashboard.json")
UID = "benefits-gateway"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"
WIDTH = 24
HEIGHT = 8

Query = tuple[str, str]  # (PromQL, legend)


def panel(
    title: str,
    queries: list[Query],
    unit: str = "short",
    description: str = "",
    kind: str = "timeseries",
    stack: bool = False,
    mappings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {"fillOpacity": 10, "showPoints": "never"}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults: dict[str, Any] = {"unit": unit}
    if kind == "timeseries":
        defaults["custom"] = custom
    if mappings:
        defaults["mappings"] = mappings
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["max"]}},
        "targets": [target(i, expr, legend, kind) for i, (expr, legend) in enumerate(queries)],
    }


def target(index: int, expr: str, legend: str, kind: str) -> dict[str, Any]:
    query = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + index)}
    if kind == "table":  # one row per series, read at the dashboard's end time
        query.update(instant=True, format="table")
    return query


def quantiles(metric: str, by: str, legend: str, match: str = "") -> list[Query]:
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{match}{RATE})))",
            f"p{int(q * 100)} {legend}",
        )
        for q in (0.5, 0.99)
    ]


BREAKER_STATES = ["closed", "open", "half-open", "forced open", "forced closed"]
BREAKER_MAPPING = [
    {
        "type": "value",
        "options": {str(i): {"text": name, "index": i} for i, name in enumerate(BREAKER_STATES)},
    }
]

ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "RED per route",
        [
            panel(
                "Requests per second by route",
                [(f"sum by (route) (rate(gateway_http_requests_total{RATE}))", "{{route}}")],
                unit="reqps",
            ),
            panel(
                "5xx ratio by route",
                [
                    (
                        f'sum by (route) (rate(gateway_http_requests_total{{status=~"5.."}}{RATE}))'
                        f" / sum by (route) (rate(gateway_http_requests_total{RATE}))",
                        "{{route}}",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "Answers by route and status",
                [
                    (
                        f"sum by (route, status) (rate(gateway_http_requests_total{RATE}))",
                        "{{route}} {{status}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Duration by route (p50, p99)",
                quantiles("gateway_http_request_duration_seconds", "route", "{{route}}"),
                unit="s",
            ),
            panel(
                "Claim SLO: error-budget burn rate (1 h)",
                [
                    ("slo:claim_availability:error_ratio_rate1h / 0.001", "availability"),
                    ("slo:claim_latency:slow_ratio_rate1h / 0.01", "latency (> 100 ms)"),
                ],
                description="1 = spending the budget exactly over the SLO period; the fast "
                "page fires at 14.4 (with the 5 m window agreeing). Needs alerts.yml loaded.",
            ),
        ],
    ),
    (
        "Claims",
        [
            panel(
                "Claims by result",
                [(f"sum by (result) (rate(gateway_claims_total{RATE}))", "{{result}}")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Sold-outs: local flag vs Valkey",
                [
                    (f"sum(rate(gateway_soldout_local_total{RATE}))", "local flag (no Valkey)"),
                    (
                        f'sum(rate(gateway_claims_total{{result="sold_out"}}{RATE}))'
                        f" - sum(rate(gateway_soldout_local_total{RATE}))",
                        "decided by Valkey",
                    ),
                ],
                unit="reqps",
                stack=True,
                description="gateway_claims_total{result=sold_out} counts both; the local flag "
                "answers without a Valkey call once a worker has seen the campaign sold out.",
            ),
            panel(
                "Idempotent replays",
                [(f"sum(rate(gateway_idempotent_replays_total{RATE}))", "replays")],
                unit="reqps",
            ),
            panel(
                "Stock left per campaign",
                [("max by (campaign) (gateway_campaign_stock_left)", "{{campaign}}")],
            ),
        ],
    ),
    (
        "Redemptions",
        [
            panel(
                "Redemptions by result",
                [(f"sum by (result) (rate(gateway_redemptions_total{RATE}))", "{{result}}")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Pending redemptions",
                [("max(gateway_pending_redemptions)", "waiting on a supplier outcome")],
            ),
        ],
    ),
    (
        "Rate limits and risk",
        [
            panel(
                "Rate-limit rejections by route, dimension and source",
                [
                    (
                        "sum by (route, dimension, source) "
                        f"(rate(gateway_ratelimit_rejections_total{RATE}))",
                        "{{route}} {{dimension}} ({{source}})",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Risk hits by rule, decision and mode",
                [
                    (
                        f"sum by (rule, decision, mode) (rate(gateway_risk_decisions_total{RATE}))",
                        "{{rule}} {{decision}} ({{mode}})",
                    )
                ],
                unit="reqps",
                description="mode=shadow hits are counted but do not change the answer.",
            ),
        ],
    ),
    (
        "Suppliers",
        [
            panel(
                "Breaker state by supplier",
                [("max by (supplier) (gateway_supplier_breaker_state)", "{{supplier}}")],
                kind="state-timeline",
                mappings=BREAKER_MAPPING,
            ),
            panel(
                "Supplier calls by outcome",
                [
                    (
                        f"sum by (supplier, outcome) (rate(gateway_supplier_calls_total{RATE}))",
                        "{{supplier}} {{outcome}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Supplier failovers (orders that reached a supplier after a higher one failed)",
                [
                    (
                        f"sum by (supplier) (rate(gateway_supplier_failovers_total{RATE}))",
                        "{{supplier}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Supplier call latency (p50, p99)",
                quantiles("gateway_supplier_call_duration_seconds", "supplier", "{{supplier}}"),
                unit="s",
            ),
            panel(
                "Breaker transitions",
                [
                    (
                        "sum by (supplier, from_state, to_state) "
                        "(increase(gateway_supplier_breaker_transitions_total[$__range]))",
                        "{{supplier}} {{from_state}} → {{to_state}}",
                    )
                ],
                kind="table",
            ),
        ],
    ),
    (
        "Valkey",
        [
            panel(
                "Valkey call latency (p50, p99)",
                quantiles("gateway_redis_call_duration_seconds", "call", "{{call}}"),
                unit="s",
            ),
            panel(
                "Valkey call errors",
                [(f"sum by (call) (rate(gateway_redis_errors_total{RATE}))", "{{call}}")],
                unit="reqps",
            ),
        ],
    ),
    (
        "Load",
        [
            panel(
                "In-flight requests",
                [("sum(gateway_in_flight_requests)", "in flight")],
            ),
            panel(
                "Shed requests (503 overloaded)",
                [(f"sum(rate(gateway_shed_requests_total{RATE}))", "shed")],
                unit="reqps",
            ),
        ],
    ),
    (
        "Event stream and admin backend",
        [
            panel(
                "Backend ingest lag",
                [("max(backend_ingest_lag_seconds)", "oldest uncommitted event")],
                unit="s",
            ),
            panel(
                "Backend pending events",
                [("max(backend_pending_events)", "not yet committed")],
            ),
            panel(
                "Events ingested",
                [(f"sum(rate(backend_events_ingested_total{RATE}))", "ingested")],
                unit="reqps",
            ),
            panel(
                "Unread events trimmed",
                [
                    (
                        f"sum(increase(gateway_events_trimmed_unread_total{RATE}))",
                        "trimmed before the backend read them",
                    )
                ],
                description="Must stay 0: each one is an event the ledger never saw.",
            ),
        ],
    ),
    (
        "Build",
        [
            panel(
                "Running versions",
                [("count by (version, commit) (gateway_build_info)", "{{version}} {{commit}}")],
                kind="table",
            ),
        ],
    ),
]


def layout() -> list[dict[str, Any]]:
    """Rows of two panels side by side, each row headed by a Grafana row panel."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row_panels in ROWS:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for i, body in enumerate(row_panels):
            x = (i % 2) * (WIDTH // 2)
            body["gridPos"] = {"h": HEIGHT, "w": WIDTH // 2, "x": x, "y": y}
            if i % 2 == 1 or i == len(row_panels) - 1:
                y += HEIGHT
            panels.append(body)
    for number, body in enumerate(panels, start=1):
        body["id"] = number
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "Benefits gateway",
        "tags": ["benefits-gateway"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": layout(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
