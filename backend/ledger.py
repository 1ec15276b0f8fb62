"""Writing one batch of stream entries into the ledger, in one transaction, exactly once.

Each entry first inserts its (stream, entry id) into `ingested`; only the entries whose insert
took effect (ON CONFLICT DO NOTHING ... RETURNING) are projected. A redelivered entry, or one
another ingester committed first, is a no-op, and the caller acks it all the same.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend import events as ev
from backend.projections import EVENT_COLUMNS, Projection, Projector
from backend.schema import (
    breaker_openings,
    campaigns,
    counters,
    dead_letters,
    ingested,
    minute_counts,
    supplier_calls,
    vouchers,
)
from backend.schema import events as events_table

_json = msgspec.json.Encoder()

Entry = tuple[str, dict[Any, Any]]  # (entry id, raw fields) as XREADGROUP returns them


class BatchResult(msgspec.Struct, frozen=True):
    new: int  # events committed now
    dead: int  # malformed entries kept as dead letters now
    seen: int  # entries already in the ledger (redelivered)
    newest_ts_ms: int | None


def _insert(connection: AsyncConnection, table: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# One statement for the whole batch, whatever its size; stream entry ids (`ms-seq`) never
# hold a comma.
_PG_GUARD = (
    f"WITH new AS (INSERT INTO {ingested.name} (stream, entry_id)"
    " SELECT $1::varchar, unnest(string_to_array($2::text, ','))"
    " ON CONFLICT DO NOTHING RETURNING entry_id)"
    " SELECT string_agg(entry_id, ',') FROM new"
)
_SQLITE_SEEN = (
    f"SELECT entry_id FROM {ingested.name}"
    " WHERE stream = ? AND entry_id IN (SELECT value FROM json_each(?))"
)
_SQLITE_GUARD = (
    f"INSERT INTO {ingested.name} (stream, entry_id) SELECT ?, value FROM json_each(?)"
    " WHERE true ON CONFLICT DO NOTHING"  # WHERE: how SQLite parses an upsert's SELECT
)


async def _claim_guard(connection: AsyncConnection, stream: str, ids: list[str]) -> set[str]:
    """Insert every entry's guard row; return the ids whose insert took effect."""
    if connection.dialect.name == "postgresql":
        result = await connection.exec_driver_sql(_PG_GUARD, (stream, ",".join(ids)))
        new = result.scalar()
        return set(new.split(",")) if new else set()
    # SQLite: the batch's transaction holds the database's write lock (BEGIN IMMEDIATE), so
    # the rows there now are exactly the ones the insert conflicts with.
    batch = (stream, _json.encode(ids).decode())
    seen = set((await connection.exec_driver_sql(_SQLITE_SEEN, batch)).scalars())
    await connection.exec_driver_sql(_SQLITE_GUARD, batch)
    return set(ids) - seen if seen else set(ids)


async def _insert_events(connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    """The new events' rows in one bulk write, not bound row by row (the bulk of a batch):
    COPY on PostgreSQL (in the batch's transaction), executemany of one statement on SQLite."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        raw: Any = (await connection.get_raw_connection()).driver_connection
        await raw.copy_records_to_table(events_table.name, records=rows, columns=EVENT_COLUMNS)
        return
    names, marks = ", ".join(EVENT_COLUMNS), ", ".join("?" for _ in EVENT_COLUMNS)
    sql = f"INSERT INTO {events_table.name} ({names}) VALUES ({marks})"
    await connection.exec_driver_sql(sql, rows)


async def _known_ttls(connection: AsyncConnection, decoded: list[ev.Event]) -> dict[str, Any]:
    wanted = {e.fields["campaign_id"] for e in decoded if e.type == "claim.granted"}
    if not wanted:
        return {}
    query = select(campaigns.c.campaign_id, campaigns.c.voucher_ttl_s).where(
        campaigns.c.campaign_id.in_(wanted)
    )
    return {row.campaign_id: row.voucher_ttl_s for row in await connection.execute(query)}


_compiled: dict[tuple[str, str, tuple[str, ...]], tuple[str, Any]] = {}


async def _many(
    connection: AsyncConnection, tag: str, build: Any, rows: list[dict[str, Any]]
) -> None:
    """Execute a Core statement (`build()`, named `tag`) once per row with the driver's own
    executemany: compiled once per process, not bound row by row by SQLAlchemy."""
    columns = tuple(rows[0])
    key = (connection.dialect.name, tag, columns)
    if key not in _compiled:
        compiled = build().compile(dialect=connection.dialect, column_keys=list(columns))
        names = compiled.positiontup or []
        pick = operator.itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
        _compiled[key] = (compiled.string, pick)
    sql, pick = _compiled[key]
    await connection.exec_driver_sql(sql, [pick(row) for row in rows])


async def _add_counts(connection: AsyncConnection, table: Any, deltas: dict[Any, int]) -> None:
    if not deltas:
        return
    keys = [c.name for c in table.primary_key.columns]
    # Sorted, so concurrent transactions lock counter rows in one order (no deadlock).
    rows = [dict(zip(keys, key, strict=True)) | {"n": n} for key, n in sorted(deltas.items())]

    def build() -> Any:
        statement = _insert(connection, table)
        return statement.on_conflict_do_update(
            index_elements=keys, set_={"n": table.c.n + statement.excluded.n}
        )

    await _many(connection, table.name, build, rows)


async def _upsert_campaigns(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return

    def build() -> Any:
        statement = _insert(connection, campaigns)
        x = statement.excluded
        updated = {c.name: x[c.name] for c in campaigns.columns if not c.primary_key}
        return statement.on_conflict_do_update(
            index_elements=["campaign_id"],
            set_=updated,
            where=campaigns.c.config_order < x.config_order,
        )

    await _many(connection, "campaigns", build, rows)


async def _upsert_grants(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return

    def build() -> Any:
        statement = _insert(connection, vouchers)
        x = statement.excluded
        later = vouchers.c.state_order < x.state_order
        grant_fields = ("claim_id", "client_id", "device_id", "ip", "granted_ms", "expires_ms")
        updated: dict[str, Any] = {name: x[name] for name in grant_fields}
        # A transition committed first (another ingester's) keeps its state when it is later.
        updated["state"] = case((later, x.state), else_=vouchers.c.state)
        updated["state_order"] = case((later, x.state_order), else_=vouchers.c.state_order)
        return statement.on_conflict_do_update(index_elements=["vkey"], set_=updated)

    await _many(connection, "grants", build, rows)


async def _apply_transitions(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return

    def build() -> Any:
        statement = _insert(connection, vouchers)
        x = statement.excluded
        return statement.on_conflict_do_update(
            index_elements=["vkey"],
            set_={"state": x.state, "state_order": x.state_order},
            where=vouchers.c.state_order < x.state_order,
        )

    await _many(connection, "transitions", build, rows)


async def _write(connection: AsyncConnection, out: Projection, dead: list[dict[str, Any]]) -> None:
    await _insert_events(connection, out.event_rows)
    if dead:
        await connection.execute(dead_letters.insert(), dead)
    await _add_counts(connection, counters, out.counters)
    await _add_counts(connection, minute_counts, out.minutes)
    await _upsert_campaigns(connection, out.campaigns)
    await _upsert_grants(connection, out.grants)
    await _apply_transitions(connection, out.transitions)
    if out.supplier_calls:
        await connection.execute(supplier_calls.insert(), out.supplier_calls)
    if out.breaker_openings:
        await connection.execute(breaker_openings.insert(), out.breaker_openings)


class Decoded(msgspec.Struct):
    """A batch decoded before its transaction: events and dead letters, in stream order."""

    stream: str
    ids: list[str]
    events: list[ev.Event]
    dead: list[dict[str, Any]]


def decode_batch(stream: str, entries: Sequence[Entry]) -> Decoded:
    """Decode every entry (pure: no database); which are new is known only in the commit."""
    decoded, dead = [], []
    for entry_id, raw in entries:
        try:
            decoded.append(ev.decode(stream, entry_id, raw))
        except ev.Malformed as exc:
            dead.append(
                {
                    "stream": stream,
                    "entry_id": entry_id,
                    "reason": str(exc),
                    "raw": ev.raw_text(raw),
                }
            )
    return Decoded(stream, [entry_id for entry_id, _ in entries], decoded, dead)


async def write_batch(
    engine: AsyncEngine, stream: str, entries: Sequence[Entry] | Decoded
) -> BatchResult:
    """Commit the entries' events and projections once; raises when the database fails."""
    batch = entries if isinstance(entries, Decoded) else decode_batch(stream, entries)
    async with engine.begin() as connection:
        new_ids = await _claim_guard(connection, stream, batch.ids)
        decoded, dead = batch.events, batch.dead
        if len(new_ids) < len(batch.ids):  # some were committed before: only the rest count
            decoded = [e for e in decoded if e.entry_id in new_ids]
            dead = [d for d in dead if d["entry_id"] in new_ids]
        projector = Projector(await _known_ttls(connection, decoded))
        for event in decoded:
            projector.add(event)
        await _write(connection, projector.out, dead)
    newest = max((e.ts_ms for e in decoded), default=None)
    return BatchResult(len(decoded), len(dead), len(batch.ids) - len(new_ids), newest)
