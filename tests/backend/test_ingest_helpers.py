"""`backend.ingest_workers`: helper processes ingest beside the backend, exactly once, counted
in the backend's metrics, started again when they die, and never outliving the backend."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import db
from backend.ingest import Ingester, IngestOptions
from backend.ingest_helpers import HelperConfig, IngestHelpers
from backend.metrics import BackendMetrics
from backend.schema import counters, events
from gateway.settings import ConfigError, parse
from gateway.valkey import keys
from tests.backend.test_process import _wait_ready
from tests.support.served import free_port
from tests.support.waiting import child_pids, eventually, exited

STREAMS = [keys.events(tag) for tag in ("H1", "H2", "H3")]


async def _produce(redis: Any, start: int, count: int) -> None:
    """`count` claim events over three streams: every other one a grant of campaign `h`."""
    pipe = redis.pipeline(transaction=False)
    for n in range(start, start + count):
        fields = {"ts": "2026-01-01T00:00:00.000Z", "campaign_id": "h", "user_id": f"u{n}"}
        if n % 2:
            fields |= {"type": "claim.granted", "claim_id": f"clm_{n}", "voucher_code": "HH"}
        else:
            fields |= {"type": "claim.rejected", "code": "sold_out"}
        pipe.xadd(STREAMS[n % 3], fields)
    await pipe.execute()


async def _ledger(engine: AsyncEngine) -> tuple[int, int]:
    """(events in the ledger, its granted counter)."""
    async with engine.connect() as connection:
        total = await connection.scalar(select(func.count()).select_from(events))
        granted = await connection.scalar(
            select(counters.c.n).where(counters.c.campaign_id == "h", counters.c.name == "granted")
        )
    return int(total or 0), int(granted or 0)


@contextlib.asynccontextmanager
async def _ingesting(
    redis: Any, valkey_url: str, url: str, helpers: int, **options: Any
) -> AsyncIterator[tuple[Ingester, IngestHelpers]]:
    """The backend's ingest as `ingest_workers = helpers + 1` runs it, on streams registered
    once every helper is up."""
    # Small batches, one stream's batch at a time: every process gets its share of the work.
    defaults: dict[str, Any] = {
        "discover_every_s": 0.0,
        "batch": 100,
        "drain_batches": 1,
        "idle_sleep_s": 0.02,
    }
    ingest = IngestOptions(**(defaults | options))
    engine = db.create_engine(url)
    metrics = BackendMetrics()
    own = Ingester(redis, engine, metrics, ingest)
    pool = IngestHelpers(helpers, HelperConfig(valkey_url, 5.0, url, ingest), metrics)
    pool.start()
    task = None
    try:
        await pool.ready(timeout_s=60)
        for stream in STREAMS:
            await redis.xgroup_create(stream, "ledger", id="0", mkstream=True)
        await redis.sadd(keys.EVENT_STREAMS, *STREAMS)
        task = asyncio.create_task(own.run())
        yield own, pool
    finally:
        own.stop()
        await pool.stop()
        if task is not None:
            await task
        await engine.dispose()


@pytest.mark.timeout(120)
async def test_helpers_commit_every_entry_once_and_the_backend_counts_what_they_did(
    redis_client: Any, valkey_url: str, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    url = db.async_url(database_url, tmp_path)
    await _produce(redis_client, 0, 6000)
    async with _ingesting(redis_client, valkey_url, url, helpers=2) as (own, pool):
        ingested = own.metrics.events_ingested
        await eventually(lambda: ingested._value.get() == 6000, within_s=90, step=0.1)
        own_share = ingested._value.get() - sum(pool.committed)
    assert await _ledger(engine) == (6000, 3000)
    # Every process took part: the backend's own ingester and both helpers.
    assert own_share > 0 and all(n > 0 for n in pool.committed)
    assert pool.started == 2


@pytest.mark.timeout(120)
async def test_a_killed_helper_is_started_again_and_what_it_held_is_taken_over(
    redis_client: Any, valkey_url: str, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    url = db.async_url(database_url, tmp_path)
    await _produce(redis_client, 0, 3000)
    async with _ingesting(
        redis_client, valkey_url, url, helpers=1, claim_idle_ms=1000, batch=50
    ) as (
        _own,
        pool,
    ):
        await eventually(lambda: pool.committed[0] > 0, within_s=30, step=0.1)
        first = pool.processes[0]
        assert first is not None
        first.kill()  # mid-stream: whatever it had read and not committed stays pending
        await eventually(lambda: pool.started == 2, within_s=30, step=0.1)
        await _produce(redis_client, 3000, 3000)
        await eventually(lambda: _ledger_has(engine, 6000), within_s=90, step=0.1)
        second = pool.processes[0]
        assert second is not None and second.pid != first.pid
        assert second.returncode is None
    assert await _ledger(engine) == (6000, 3000)
    pending = [await redis_client.xpending(stream, "ledger") for stream in STREAMS]
    assert sum(p["pending"] for p in pending) == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("ending", ["SIGINT", "SIGKILL"])
async def test_gateway_backend_runs_its_helpers_and_none_outlives_it(
    ending: str, tmp_path: Path, valkey_url: str
) -> None:
    port = free_port()
    config = tmp_path / "backend.toml"
    config.write_text(
        f'[redis]\nurl = "{valkey_url}"\ndata_dir = "{tmp_path / "var"}"\n'
        f'[admin]\ntoken = "t"\n[backend]\nport = {port}\ningest_workers = 3\n'
    )
    backend = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gateway"),
        "backend",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert await _wait_ready(f"http://127.0.0.1:{port}/readyz") == 200
        await eventually(lambda: _workers_up(port, 3), within_s=30, step=0.1)
        helpers = child_pids(backend.pid, b"backend.ingest_helpers")
        assert len(helpers) == 2
    finally:
        backend.send_signal(getattr(signal, ending))
        async with asyncio.timeout(30):
            code = await backend.wait()
    assert code == (0 if ending == "SIGINT" else -signal.SIGKILL)
    for pid in helpers:  # a killed backend's helpers see their stdin end, and stop
        await eventually(lambda pid=pid: exited(pid), within_s=20, step=0.1)


async def _workers_up(port: int, wanted: int) -> bool:
    """Whether the backend's GET /ingest counts `wanted` ingesting processes up."""
    headers = {"Authorization": "Bearer t"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"http://127.0.0.1:{port}/ingest") as response,
    ):
        assert response.status == 200
        return bool((await response.json())["workers"] == wanted)


async def _ledger_has(engine: AsyncEngine, total: int) -> bool:
    return (await _ledger(engine))[0] >= total


def test_ingest_workers_is_a_count_of_processes_from_one_to_sixteen() -> None:
    def workers(value: str) -> int:
        config = f'[admin]\ntoken = "t"\n[backend]\ningest_workers = {value}\n'
        return parse(config, env={}).backend.ingest_workers

    assert parse('[admin]\ntoken = "t"\n', env={}).backend.ingest_workers == 1
    assert workers("2") == 2 and workers("16") == 16
    for wrong in ("0", "17", "-1"):
        with pytest.raises(ConfigError, match=r"backend\.ingest_workers: must be 1\.\.16"):
            workers(wrong)
