"""Reading the next batch while one commits: a failed commit loses nothing and doubles nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.schema import counters, events
from gateway.valkey import keys
from tests.backend.conftest import ingester


async def _rename(engine: AsyncEngine, old: str, new: str) -> None:
    async with engine.begin() as connection:
        await connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")


async def _granted(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        n = await connection.scalar(
            select(counters.c.n).where(counters.c.campaign_id == "c", counters.c.name == "granted")
        )
        return int(n or 0)


async def test_a_failed_commit_with_a_batch_read_ahead_commits_every_entry_once(
    redis_client: Any, engine: AsyncEngine
) -> None:
    stream = keys.events("RA")
    await redis_client.sadd(keys.EVENT_STREAMS, stream)
    for n in range(22):
        await redis_client.xadd(
            stream,
            {
                "type": "claim.granted",
                "ts": "2026-01-01T00:00:00Z",
                "campaign_id": "c",
                "user_id": f"u{n}",
                "claim_id": f"clm_{n:020x}",
                "voucher_code": f"AB{n:02d}…XYZ",
            },
        )
    await redis_client.xgroup_create(stream, "ledger", id="0")
    reader = ingester(redis_client, engine, consumer="a", batch=4)
    await _rename(engine, "counters", "counters_away")  # every commit fails from here
    with pytest.raises(SQLAlchemyError):
        await reader.drain(stream)
    # The batch that failed and the one read while it committed: pending, none acked.
    assert (await redis_client.xpending(stream, "ledger"))["pending"] == 8
    await _rename(engine, "counters_away", "counters")
    await reader.catch_up()
    assert (await redis_client.xpending(stream, "ledger"))["pending"] == 0
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(events)) == 22
    assert await _granted(engine) == 22
