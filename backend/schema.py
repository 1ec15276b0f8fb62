"""The ledger's tables (SQLAlchemy Core), one schema for SQLite and PostgreSQL.

The migrations in backend/migrations create exactly these; queries use them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    literal_column,
)

metadata = MetaData()

# The raw ledger: every well-formed event, its common fields as columns, the rest as JSON.
# Its key (stream, entry_id), with dead_letters', is the exactly-once guard (backend/ledger.py).
events = Table(
    "events",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("entry_id", String(48), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("ts", String(40), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("campaign_id", String(128)),
    Column("user_id", String(128)),
    Column("device_id", String(128)),
    Column("ip", String(64)),
    Column("client_id", String(128)),
    Column("request_id", String(128)),
    Column("claim_id", String(64)),
    Column("voucher_masked", String(16)),
    Column("code", String(64)),
    Column("actor", String(128)),
    Column("actor_ip", String(64)),
    Column("payload", Text, nullable=False),
)
# What a grant's row matches in a query: a literal, so that the partial index below is used
# (neither database proves a partial index's predicate from a bound parameter).
GRANTED = events.c.type == literal_column("'claim.granted'")


def _partial(name: str, where: Any, *columns: Any) -> Index:
    """An index of the rows `where` holds for only: most events (claims refused, with no actor,
    claim id or voucher) cost no entry in it."""
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


Index("events_campaign_ts", events.c.campaign_id, events.c.ts_ms)
Index("events_user_ts", events.c.user_id, events.c.ts_ms)
_partial("events_actor_ts", events.c.actor.is_not(None), events.c.actor, events.c.ts_ms)
_partial("events_claim", events.c.claim_id.is_not(None), events.c.claim_id)
_partial(
    "events_voucher",
    events.c.voucher_masked.is_not(None),
    events.c.campaign_id,
    events.c.voucher_masked,
)
_partial("events_granted", GRANTED, events.c.campaign_id, events.c.ts_ms)

# One row per voucher, keyed by campaign + masked code + owner (`vkey`): every event of a
# voucher carries those three, while only its grant carries the claim id (the code, encrypted).
# `state_order` (the stream entry id as a number) lets a later event win whatever order two
# ingesters commit in.
vouchers = Table(
    "vouchers",
    metadata,
    Column("vkey", String(300), primary_key=True),
    Column("claim_id", String(64)),
    Column("campaign_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("voucher_masked", String(16), nullable=False),
    Column("client_id", String(128)),
    Column("device_id", String(128)),
    Column("ip", String(64)),
    Column("granted_ms", BigInteger),
    Column("expires_ms", BigInteger),
    Column("state", String(16), nullable=False),
    Column("state_order", BigInteger, nullable=False),
)
Index("vouchers_claim", vouchers.c.claim_id, unique=True)
Index("vouchers_wallet", vouchers.c.user_id, vouchers.c.client_id, vouchers.c.granted_ms)
Index("vouchers_campaign_state", vouchers.c.campaign_id, vouchers.c.state)

# A campaign's configuration as its last campaign.created/updated event gave it.
campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", String(128), primary_key=True),
    Column("name", String(256)),
    Column("starts_ms", BigInteger),
    Column("voucher_ttl_s", BigInteger),
    Column("unit_cost", BigInteger),
    Column("currency", String(8)),
    Column("config_order", BigInteger, nullable=False),
)

# Additive counters (granted, rejected:<code>, risk:<rule>:<mode>, client:<id>:granted, ...):
# sums commute, so any commit order of any number of ingesters gives the same totals.
counters = Table(
    "counters",
    metadata,
    Column("campaign_id", String(128), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

minute_counts = Table(
    "minute_counts",
    metadata,
    Column("campaign_id", String(128), primary_key=True),
    Column("minute", String(16), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# One row per `supplier.call` event: every call the gateway's supplier pool made or refused.
# `day` is the UTC day of the event's ts; `latency_ms` is NULL for refusals (no call made).
supplier_calls = Table(
    "supplier_calls",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("entry_id", String(48), primary_key=True),
    Column("supplier", String(128), nullable=False),
    Column("day", String(10), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("latency_ms", Integer),
    Column("failover", Integer, nullable=False),
    Column("op", String(8)),
    Column("redemption_id", String(64)),
)
# The supplier report's counts and percentiles come from this index alone (migration 0003).
Index(
    "supplier_calls_day",
    supplier_calls.c.day,
    supplier_calls.c.supplier,
    supplier_calls.c.latency_ms,
    supplier_calls.c.outcome,
    supplier_calls.c.failover,
)

# One row per `supplier.breaker_opened` event: a breaker opening, once for the whole fleet.
breaker_openings = Table(
    "breaker_openings",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("entry_id", String(48), primary_key=True),
    Column("supplier", String(128), nullable=False),
    Column("day", String(10), nullable=False),
    Column("from_state", String(16)),
)
Index("breaker_openings_day", breaker_openings.c.day, breaker_openings.c.supplier)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("entry_id", String(48), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
)
