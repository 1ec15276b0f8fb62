"""Supplier calls from the gateway's `supplier.call` events; breaker openings.

`supplier_calls` was fed by redemption events that name a supplier, which cannot tell how many
calls a redemption made. Its rows are now one per `supplier.call` event: the old rows are
replaced by those the raw ledger already holds (a ledger older than this revision stored such
events without projecting them), and `breaker_openings` is filled the same way.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

BATCH = 5_000


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date().isoformat()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def upgrade() -> None:
    op.add_column("supplier_calls", sa.Column("op", sa.String(8)))
    op.add_column("supplier_calls", sa.Column("redemption_id", sa.String(64)))
    op.create_table(
        "breaker_openings",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("entry_id", sa.String(48), primary_key=True),
        sa.Column("supplier", sa.String(128), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("from_state", sa.String(16)),
    )
    op.create_index("breaker_openings_day", "breaker_openings", ["day", "supplier"])
    op.execute("DELETE FROM supplier_calls")
    _backfill()


def _backfill() -> None:
    """Project the raw ledger's supplier events, in batches."""
    bind = op.get_bind()
    meta = sa.MetaData()
    events = sa.Table("events", meta, autoload_with=bind)
    calls = sa.Table("supplier_calls", meta, autoload_with=bind)
    openings = sa.Table("breaker_openings", meta, autoload_with=bind)
    query = sa.select(
        events.c.stream, events.c.entry_id, events.c.type, events.c.ts_ms, events.c.payload
    ).where(events.c.type.in_(("supplier.call", "supplier.breaker_opened")))
    result = bind.execute(query)
    while rows := result.fetchmany(BATCH):
        call_rows, opening_rows = [], []
        for row in rows:
            fields = json.loads(row.payload)
            if not fields.get("supplier") or (
                row.type == "supplier.call" and not fields.get("outcome")
            ):
                continue  # stored before the ledger checked these fields: nothing to count
            base = {"stream": row.stream, "entry_id": row.entry_id, "day": _day(row.ts_ms)}
            if row.type == "supplier.breaker_opened":
                opening_rows.append(
                    base | {"supplier": fields["supplier"], "from_state": fields.get("from_state")}
                )
                continue
            call_rows.append(
                base
                | {
                    "supplier": fields["supplier"],
                    "outcome": fields["outcome"],
                    "latency_ms": _int(fields.get("latency_ms")),
                    "failover": 1 if fields.get("failover") in ("1", "true") else 0,
                    "op": fields.get("op"),
                    "redemption_id": fields.get("redemption_id"),
                }
            )
        if call_rows:
            bind.execute(calls.insert(), call_rows)
        if opening_rows:
            bind.execute(openings.insert(), opening_rows)


def downgrade() -> None:
    op.drop_index("breaker_openings_day", "breaker_openings")
    op.drop_table("breaker_openings")
    with op.batch_alter_table("supplier_calls") as batch:  # SQLite rebuilds the table
        batch.drop_column("redemption_id")
        batch.drop_column("op")
