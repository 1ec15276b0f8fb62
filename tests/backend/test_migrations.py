"""Migration 0002 on a ledger written at 0001: supplier calls come from the raw ledger's
`supplier.call` events only, whatever the 0001 projections had counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from backend import db


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _event(entry_id: str, kind: str, ts_ms: int, **payload: str) -> dict[str, Any]:
    return {
        "stream": "gw:{EF}:events",
        "entry_id": entry_id,
        "type": kind,
        "ts": "2026-01-02T03:04:05.000Z",
        "ts_ms": ts_ms,
        "payload": json.dumps(payload),
    }


async def test_0002_replaces_supplier_rows_with_those_of_supplier_events(
    database_url: str, tmp_path: Path
) -> None:
    engine = db.create_engine(db.async_url(database_url, tmp_path))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to, "0001")
            # what a 0001 ledger holds: a redemption counted as a call, and the gateway's
            # supplier events stored raw but not projected
            await connection.execute(
                text(
                    "INSERT INTO supplier_calls (stream, entry_id, supplier, day, outcome,"
                    " latency_ms, failover) VALUES ('s', '1-0', 'alpha', '2026-01-02',"
                    " 'delivered', NULL, 0)"
                )
            )
            rows = [
                _event(
                    "5-0",
                    "supplier.call",
                    1_767_323_045_000,
                    supplier="alpha",
                    outcome="success",
                    latency_ms="12",
                    failover="1",
                    op="place",
                    redemption_id="rdm_EF0000000000000000",
                ),
                _event("6-0", "supplier.call", 1_767_323_045_000, supplier="alpha"),  # no outcome
                _event(
                    "7-0",
                    "supplier.breaker_opened",
                    1_767_323_045_000,
                    supplier="alpha",
                    from_state="closed",
                ),
            ]
            await connection.execute(
                text(
                    "INSERT INTO events (stream, entry_id, type, ts, ts_ms, payload)"
                    " VALUES (:stream, :entry_id, :type, :ts, :ts_ms, :payload)"
                ),
                rows,
            )
        await db.migrate(engine)
        async with engine.connect() as connection:
            calls = (
                await connection.execute(
                    text(
                        "SELECT entry_id, supplier, day, outcome, latency_ms, failover, op,"
                        " redemption_id FROM supplier_calls"
                    )
                )
            ).all()
            openings = (
                await connection.execute(
                    text("SELECT entry_id, supplier, day, from_state FROM breaker_openings")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in calls] == [
        ("5-0", "alpha", "2026-01-02", "success", 12, 1, "place", "rdm_EF0000000000000000")
    ]
    assert [tuple(r) for r in openings] == [("7-0", "alpha", "2026-01-02", "closed")]
