"""More ingesters, each in a process of its own: `backend.ingest_workers` counts them all.

The backend's own process keeps its ingester, its API and its metrics; `ingest_workers - 1`
helpers run `python -m backend.ingest_helpers` with the same Valkey, database and consumer
group. Several ingesters in one group are exactly once (backend/ledger.py), so a helper needs
no coordination: what one Python process gains is another decoding and projecting while
the first one's batch commits (SQLite takes one writer at a time: db.write_turn).

A helper reads its configuration as one JSON line on stdin, which then stays open: its end
is the backend's end, whatever killed it. It writes one JSON line to stdout when it is ready
and one per committed batch; the backend adds those to its own metrics. A helper that exits
is started again; the entries it held are taken over by XAUTOCLAIM after `claim_idle_ms`,
like any dead consumer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable

import msgspec

from backend import db
from backend.ingest import Ingester, IngestOptions, settle_heap
from backend.ledger import BatchResult
from backend.metrics import BackendMetrics
from gateway.valkey.connect import connect

log = logging.getLogger("backend.ingest_helpers")


class HelperConfig(msgspec.Struct, frozen=True):
    redis_url: str
    redis_timeout_s: float
    database_url: str  # async SQLAlchemy URL (db.async_url)
    options: IngestOptions


class Report(msgspec.Struct, frozen=True, omit_defaults=True):
    ready: bool = False
    new: int = 0
    dead: int = 0


class IngestHelpers:
    """`count` helper processes, started, read and restarted by the backend."""

    def __init__(
        self,
        count: int,
        config: HelperConfig,
        metrics: BackendMetrics,
        on_report: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.on_report = on_report  # told after each helper's report is counted
        # Per helper slot: events it committed, and its process while one runs.
        self.committed = [0] * count
        self.processes: list[asyncio.subprocess.Process | None] = [None] * count
        self.started = 0  # processes started, restarts included
        self._ready = [asyncio.Event() for _ in range(count)]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(slot)) for slot in range(len(self.processes))]

    async def ready(self, timeout_s: float = 30.0) -> None:
        """Until every helper has connected and is ingesting."""
        async with asyncio.timeout(timeout_s):
            for event in self._ready:
                await event.wait()

    def running(self) -> int:
        """Helpers up now: ready, and not exited since."""
        return sum(
            1
            for ready, process in zip(self._ready, self.processes, strict=True)
            if ready.is_set() and process is not None and process.returncode is None
        )

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask each helper to stop after the batch in hand; kill any still there after
        `timeout_s` (its uncommitted batch stays pending and is taken over)."""
        self._stopping = True
        for process in self.processes:
            if process is not None:
                _end(process)
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        except TimeoutError:
            for process in self.processes:
                if process is not None and process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keep(self, slot: int) -> None:
        """Run the slot's helper; start another whenever it exits, until `stop`."""
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "backend.ingest_helpers",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.processes[slot] = process
            self.started += 1
            assert process.stdin is not None and process.stdout is not None
            # The configuration on stdin, not argv (a database URL may hold a password); then
            # stdin stays open until we end (see _until_orphaned).
            process.stdin.write(msgspec.json.encode(self.config) + b"\n")
            if self._stopping:
                _end(process)
            async for line in process.stdout:
                self._take(slot, line)
            code = await process.wait()
            self._ready[slot].clear()
            if not self._stopping:
                log.warning("ingest helper exited; starting another", extra={"code": code})
                await asyncio.sleep(0.5)

    def _take(self, slot: int, line: bytes) -> None:
        try:
            report = msgspec.json.decode(line, type=Report)
        except msgspec.DecodeError:
            log.warning("ingest helper wrote an unknown line", extra={"line": line[:200]})
            return
        if report.ready:
            self._ready[slot].set()
        self.committed[slot] += report.new
        self.metrics.events_ingested.inc(report.new)
        self.metrics.dead_letters.inc(report.dead)
        if self.on_report is not None:
            self.on_report()


def _end(process: asyncio.subprocess.Process) -> None:
    """Ask a helper to stop after the batch in hand."""
    if process.stdin is not None:
        process.stdin.close()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()


def _write(report: Report) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
    sys.stdout.buffer.flush()


def _reported(result: BatchResult) -> None:
    if result.new or result.dead:
        _write(Report(new=result.new, dead=result.dead))


def _until_orphaned(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    while sys.stdin.buffer.read(1):
        pass
    with contextlib.suppress(RuntimeError):  # the loop already closed: we are ending anyway
        loop.call_soon_threadsafe(stop)


async def _serve(config: HelperConfig) -> None:
    redis = connect(config.redis_url, config.redis_timeout_s, max_connections=4)
    engine = db.create_engine(config.database_url)
    ingester = Ingester(redis, engine, BackendMetrics(), config.options, on_commit=_reported)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ingester.stop)
    # The backend holds our stdin open and never writes to it: end of file is its death
    # (even a SIGKILL), and a helper never outlives its backend.
    threading.Thread(target=_until_orphaned, args=(loop, ingester.stop), daemon=True).start()
    settle_heap()
    try:
        _write(Report(ready=True))
        await ingester.run()
    finally:
        await engine.dispose()
        await redis.aclose()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = msgspec.json.decode(sys.stdin.buffer.readline(), type=HelperConfig)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover (uvloop is a dependency)
        pass
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
