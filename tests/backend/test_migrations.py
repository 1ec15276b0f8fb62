"""Migrations on ledgers written before them: 0002 (supplier calls come from the raw
ledger's `supplier.call` events only, whatever the 0001 projections had counted) and 0004 (the
exactly-once guard moves from `ingested` to the keys of `events` and `dead_letters`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from backend import db
from backend.ledger import write_batch


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


async def test_0004_a_ledger_written_before_it_still_takes_each_entry_once(
    database_url: str, tmp_path: Path
) -> None:
    stream = "gw:{EF}:events"
    granted = {
        b"type": b"claim.granted",
        b"ts": b"2026-01-02T03:04:05.000Z",
        b"campaign_id": b"m",
        b"user_id": b"ruth",
        b"claim_id": b"clm_m",
        b"voucher_code": b"EF",
    }
    entries = [("1-0", granted), ("2-0", {b"type": b"claim.granted"})]  # one dead letter
    engine = db.create_engine(db.async_url(database_url, tmp_path))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to, "0003")
            # what a 0003 ingester committed: each entry's guard row beside its event or letter
            await connection.execute(
                text("INSERT INTO ingested (stream, entry_id) VALUES (:s, '1-0'), (:s, '2-0')"),
                {"s": stream},
            )
            await connection.execute(
                text(
                    "INSERT INTO events (stream, entry_id, type, ts, ts_ms, campaign_id,"
                    " payload) VALUES (:s, '1-0', 'claim.granted', 't', 1, 'm', '{}')"
                ),
                {"s": stream},
            )
            await connection.execute(
                text(
                    "INSERT INTO dead_letters (stream, entry_id, reason, raw)"
                    " VALUES (:s, '2-0', 'r', '{}')"
                ),
                {"s": stream},
            )
        await db.migrate(engine)
        # The same two entries again (redelivered after the upgrade), and one new entry.
        again = await write_batch(engine, stream, entries)
        new = await write_batch(engine, stream, [("3-0", granted | {b"claim_id": b"clm_n"})])
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            counted = await connection.scalar(text("SELECT count(*) FROM events"))
    finally:
        await engine.dispose()
    assert (again.new, again.dead, again.seen) == (0, 0, 2)
    assert (new.new, new.seen) == (1, 0)
    assert counted == 2
    assert "ingested" not in tables
