"""Every metric a dashboard panel or an alert rule reads is one the project exports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from gateway.telemetry import metrics
from tests.monitoring import files

# Exported by the admin backend (backend/metrics.py) and, for the trimmed events, by the
# gateway's stream trimming; named here until this module's registry holds them.
OTHER_EXPORTED = {
    "backend_events_ingested_total",
    "backend_ingest_lag_seconds",
    "backend_pending_events",
    "gateway_events_trimmed_unread_total",
}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects: what is left once strings, label matchers,
    ranges, numbers, grouping label lists, keywords and function calls are taken out."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d[\d.]*(?:[eE][+-]?\d+)?[a-z]*", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def exported_families() -> dict[str, str]:
    """{family name: type} of every metric object gateway.telemetry.metrics defines."""
    families = {}
    for value in vars(metrics).values():
        metric = value if isinstance(value, MetricWrapperBase) else getattr(value, "_metric", None)
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                families[family.name] = family.type
    return families


def exported_series() -> set[str]:
    """Every series name a scrape can show: counters end in _total, histograms are read as
    their _bucket, _sum and _count series; the plain histogram name is no series."""
    names = {
        name + suffix for name, kind in exported_families().items() for suffix in SUFFIXES[kind]
    }
    return names | OTHER_EXPORTED


def unknown(names: set[str]) -> set[str]:
    recorded = {rule["record"] for rule in files.rules() if "record" in rule}
    return names - exported_series() - recorded


def test_the_parser_finds_only_series_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{le="0.1", x=~"f(y)"}'
        "[$__rate_interval] offset 1h))) > 1e3 and bool on (call) group_left (z) b:rec_5m"
        " / ignoring(q) c_total unless sum without (k) (d) - 14.4 * 0.001 + Inf"
    )
    assert metric_names(expr) == {"a_bucket", "b:rec_5m", "c_total", "d"}


def test_every_metric_object_of_the_module_is_read() -> None:
    source = Path(metrics.__file__).read_text()
    constructors = {"Counter", "Gauge", "Histogram"}
    defined = {
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in constructors
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    read = {
        name + ("_total" if kind == "counter" else "") for name, kind in exported_families().items()
    }
    assert defined == read
    assert "gateway_http_requests_total" in exported_series()
    assert "gateway_http_request_duration_seconds_bucket" in exported_series()
    assert "gateway_in_flight_requests" in exported_series()


def test_misnamed_metrics_are_reported() -> None:
    assert unknown(
        {
            "gateway_claims_total",
            "gateway_claim_total",  # typo
            "gateway_claims",  # counter without _total
            "gateway_http_request_duration_seconds",  # histogram without a suffix
            "gateway_in_flight_requests_total",  # a gauge is not a counter
            "slo:claim_availability:error_ratio_rate1h",
            "slo:claim_availability:error_ratio_rate2h",  # not recorded
        }
    ) == {
        "gateway_claim_total",
        "gateway_claims",
        "gateway_http_request_duration_seconds",
        "gateway_in_flight_requests_total",
        "slo:claim_availability:error_ratio_rate2h",
    }


def test_rules_read_only_exported_metrics() -> None:
    read = set().union(*(metric_names(rule["expr"]) for rule in files.rules()))
    assert "gateway_http_request_duration_seconds_bucket" in read
    assert unknown(read) == set()


def test_dashboard_reads_only_exported_metrics() -> None:
    read = set().union(*(metric_names(expr) for expr in files.dashboard_exprs()))
    assert "gateway_soldout_local_total" in read
    assert unknown(read) == set()
