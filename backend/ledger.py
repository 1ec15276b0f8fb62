"""Writing one batch of stream entries into the ledger, in one transaction, exactly once.

An entry's (stream, entry id) keys its row in `events` (or in `dead_letters`): the transaction
looks up which of the batch's entries are there, and writes and projects only the others. A
redelivered entry, or one another ingester committed first, is a no-op, and the caller acks
it all the same. Entries delivered to the group for the first time are written without the
look-up; the keys refuse one that is there after all, and the batch is made again, looking.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import msgspec
from asyncpg.exceptions import UniqueViolationError
from sqlalchemy import BigInteger, case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend import db
from backend import events as ev
from backend.projections import EVENT_COLUMNS, Projection, Projector
from backend.schema import (
    breaker_openings,
    campaigns,
    counters,
    dead_letters,
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


# An entry is in the ledger once: as an event (well-formed) or as a dead letter (malformed),
# each keyed by (stream, entry_id). What the batch's transaction finds there was committed
# before (a redelivery, or another ingester's commit) and is skipped.
_PG_SEEN = " UNION ALL ".join(
    f"SELECT t.entry_id FROM unnest($2::varchar[]) AS i(entry_id)"
    f" JOIN {table.name} t ON t.stream = $1 AND t.entry_id = i.entry_id"
    for table in (events_table, dead_letters)
)
_SQLITE_SEEN = " UNION ALL ".join(
    f"SELECT entry_id FROM {table.name}"
    " WHERE stream = ?1 AND entry_id IN (SELECT value FROM json_each(?2))"
    for table in (events_table, dead_letters)
)


async def _seen(connection: AsyncConnection, stream: str, ids: list[str]) -> set[str]:
    """The batch's ids already in the ledger.

    SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE), so nothing can
    commit them after this look. PostgreSQL: another ingester's transaction may insert some
    of them after it; the first to commit wins and the other's insert fails on the primary
    key, which `write_batch` answers by looking again.
    """
    if connection.dialect.name == "postgresql":
        result = await connection.exec_driver_sql(_PG_SEEN, (stream, ids))
    else:
        result = await connection.exec_driver_sql(
            _SQLITE_SEEN, (stream, _json.encode(ids).decode())
        )
    return set(result.scalars())


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


async def _fill_expiries(connection: AsyncConnection, grants: list[dict[str, Any]]) -> None:
    """Grants of campaigns the batch did not configure: expiry from the ledger's lifetime."""
    if not grants:
        return
    wanted = {row["campaign_id"] for row in grants}
    query = select(campaigns.c.campaign_id, campaigns.c.voucher_ttl_s).where(
        campaigns.c.campaign_id.in_(wanted)
    )
    ttl_s = {row.campaign_id: row.voucher_ttl_s for row in await connection.execute(query)}
    for row in grants:
        ttl = ttl_s.get(row["campaign_id"])
        row["expires_ms"] = None if ttl is None else row["granted_ms"] + ttl * 1000


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


# What a grant sets on a voucher row that exists (another ingester committed a later event of
# it first): the grant's own fields, and its state only if it is the later event.
_GRANT_FIELDS = ("claim_id", "client_id", "device_id", "ip", "granted_ms", "expires_ms")
_GRANT_COLUMNS = [c.name for c in vouchers.columns]


def _pg_grants() -> str:
    """One statement for every grant of a batch: arrays in, `unnest` to rows (PostgreSQL
    runs an executemany row by row, each with its own round of planning and locking)."""
    arrays = ", ".join(
        f"${n}::{'int8' if isinstance(c.type, BigInteger) else 'text'}[]"
        for n, c in enumerate(vouchers.columns, 1)
    )
    updated = [f"{name} = excluded.{name}" for name in _GRANT_FIELDS] + [
        "state = CASE WHEN v.state_order < excluded.state_order"
        " THEN excluded.state ELSE v.state END",
        "state_order = GREATEST(v.state_order, excluded.state_order)",
    ]
    return (
        f"INSERT INTO {vouchers.name} AS v ({', '.join(_GRANT_COLUMNS)})"
        f" SELECT * FROM unnest({arrays})"
        f" ON CONFLICT (vkey) DO UPDATE SET {', '.join(updated)}"
    )


_PG_GRANTS = _pg_grants()


async def _upsert_grants(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        # One row per voucher (an upsert may not touch a row twice): the batch's last grant.
        last = list({row["vkey"]: row for row in rows}.values())
        columns = tuple([row[name] for row in last] for name in _GRANT_COLUMNS)
        await connection.exec_driver_sql(_PG_GRANTS, columns)
        return

    def build() -> Any:
        statement = _insert(connection, vouchers)
        x = statement.excluded
        later = vouchers.c.state_order < x.state_order
        updated: dict[str, Any] = {name: x[name] for name in _GRANT_FIELDS}
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


class Prepared(msgspec.Struct):
    """A batch decoded and projected before its transaction, as if every entry were new."""

    stream: str
    ids: list[str]
    events: list[ev.Event]
    dead: list[dict[str, Any]]
    projection: Projection


def project(events: Sequence[ev.Event]) -> Projection:
    projector = Projector()
    for event in events:
        projector.add(event)
    return projector.out


def prepare(stream: str, entries: Sequence[Entry]) -> Prepared:
    """Decode and project every entry (pure: no database); which are new is known only in
    the commit, and the projection is made again there only if some were not."""
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
    ids = [entry_id for entry_id, _ in entries]
    return Prepared(stream, ids, decoded, dead, project(decoded))


# A commit that found some of its entries already there (written without looking, or a
# PostgreSQL race lost, see `_seen`) is made again this many times, looking first; each retry
# finds more of the batch there.
_RETRIES = 3


async def write_batch(
    engine: AsyncEngine,
    stream: str,
    entries: Sequence[Entry] | Prepared,
    delivered_new: bool = False,
) -> BatchResult:
    """Commit the entries' events and projections once; raises when the database fails.

    `delivered_new`: the entries came to the consumer group for the first time (XREADGROUP
    `>`), so none can be in the ledger unless the group was moved back: the write skips the
    look-up, and the keys of `events` and `dead_letters` refuse any entry that is there after
    all, which undoes the transaction and makes it again, looking first.
    """
    batch = entries if isinstance(entries, Prepared) else prepare(stream, entries)
    for attempt in range(_RETRIES + 1):
        try:
            async with db.write_turn(engine):
                return await _commit(engine, batch, look=attempt > 0 or not delivered_new)
        except (IntegrityError, UniqueViolationError):
            if attempt == _RETRIES:
                raise
    raise AssertionError("unreachable")


async def _commit(engine: AsyncEngine, batch: Prepared, look: bool) -> BatchResult:
    async with engine.begin() as connection:
        seen = await _seen(connection, batch.stream, batch.ids) if look else set()
        decoded, dead, out = batch.events, batch.dead, batch.projection
        if seen:  # some were committed before: only the rest count
            decoded = [e for e in decoded if e.entry_id not in seen]
            dead = [d for d in dead if d["entry_id"] not in seen]
            out = project(decoded)
        await _fill_expiries(connection, out.expiry_unknown)
        await _write(connection, out, dead)
    newest = max((e.ts_ms for e in decoded), default=None)
    return BatchResult(len(decoded), len(dead), len(seen), newest)
