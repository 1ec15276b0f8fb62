"""Writing one batch of stream entries into the ledger, in one transaction, exactly once.

Each entry first inserts its (stream, entry id) into `ingested`; only the entries whose insert
took effect (ON CONFLICT DO NOTHING ... RETURNING) are projected. A redelivered entry, or one
another ingester committed first, is a no-op, and the caller acks it all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend import events as ev
from backend.projections import Projection, Projector
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


async def _claim_guard(
    connection: AsyncConnection, stream: str, entries: Sequence[Entry]
) -> set[str]:
    """Insert every entry's guard row; return the ids whose insert took effect."""
    rows = [{"stream": stream, "entry_id": entry_id} for entry_id, _ in entries]
    # executemany with RETURNING: SQLAlchemy batches it into multi-row INSERTs from one
    # compiled statement ("insertmanyvalues"), and a conflicting row returns nothing.
    statement = (
        _insert(connection, ingested).on_conflict_do_nothing().returning(ingested.c.entry_id)
    )
    return set((await connection.execute(statement, rows)).scalars())


async def _known_ttls(connection: AsyncConnection, decoded: list[ev.Event]) -> dict[str, Any]:
    wanted = {e.fields["campaign_id"] for e in decoded if e.type == "claim.granted"}
    if not wanted:
        return {}
    query = select(campaigns.c.campaign_id, campaigns.c.voucher_ttl_s).where(
        campaigns.c.campaign_id.in_(wanted)
    )
    return {row.campaign_id: row.voucher_ttl_s for row in await connection.execute(query)}


async def _add_counts(connection: AsyncConnection, table: Any, deltas: dict[Any, int]) -> None:
    if not deltas:
        return
    keys = [c.name for c in table.primary_key.columns]
    # Sorted, so concurrent transactions lock counter rows in one order (no deadlock).
    rows = [dict(zip(keys, key, strict=True)) | {"n": n} for key, n in sorted(deltas.items())]
    statement = _insert(connection, table)
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={"n": table.c.n + statement.excluded.n}
    )
    await connection.execute(statement, rows)


async def _upsert_campaigns(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = _insert(connection, campaigns)
    updated = {c.name: statement.excluded[c.name] for c in campaigns.columns if not c.primary_key}
    statement = statement.on_conflict_do_update(
        index_elements=["campaign_id"],
        set_=updated,
        where=campaigns.c.config_order < statement.excluded.config_order,
    )
    await connection.execute(statement, rows)


async def _upsert_grants(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = _insert(connection, vouchers)
    x = statement.excluded
    later = vouchers.c.state_order < x.state_order
    grant_fields = ("claim_id", "client_id", "device_id", "ip", "granted_ms", "expires_ms")
    updated: dict[str, Any] = {name: x[name] for name in grant_fields}
    # A transition committed first (another ingester's) keeps its state when it is later.
    updated["state"] = case((later, x.state), else_=vouchers.c.state)
    updated["state_order"] = case((later, x.state_order), else_=vouchers.c.state_order)
    statement = statement.on_conflict_do_update(index_elements=["vkey"], set_=updated)
    await connection.execute(statement, rows)


async def _apply_transitions(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = _insert(connection, vouchers)
    statement = statement.on_conflict_do_update(
        index_elements=["vkey"],
        set_={"state": statement.excluded.state, "state_order": statement.excluded.state_order},
        where=vouchers.c.state_order < statement.excluded.state_order,
    )
    await connection.execute(statement, rows)


async def _write(connection: AsyncConnection, out: Projection, dead: list[dict[str, Any]]) -> None:
    if out.event_rows:
        await connection.execute(events_table.insert(), out.event_rows)
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


def _decode_all(
    stream: str, entries: Sequence[Entry], new_ids: set[str]
) -> tuple[list[ev.Event], list[dict[str, Any]]]:
    decoded, dead = [], []
    for entry_id, raw in entries:
        if entry_id not in new_ids:
            continue
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
    return decoded, dead


async def write_batch(engine: AsyncEngine, stream: str, entries: Sequence[Entry]) -> BatchResult:
    """Commit the entries' events and projections once; raises when the database fails."""
    async with engine.begin() as connection:
        new_ids = await _claim_guard(connection, stream, entries)
        decoded, dead = _decode_all(stream, entries, new_ids)
        projector = Projector(await _known_ttls(connection, decoded))
        for event in decoded:
            projector.add(event)
        await _write(connection, projector.out, dead)
    newest = max((e.ts_ms for e in decoded), default=None)
    return BatchResult(len(decoded), len(dead), len(entries) - len(new_ids), newest)
