"""Process model: a master that owns the host's sockets, the embedded Valkey and N workers.

The master binds the public and admin ports (`ops/host.py`), one socket pair per worker slot,
and each worker accepts on its slot's pair, so the port never goes without a listener while
the master lives. SIGTERM (or
SIGINT) on the master: every worker stops accepting, finishes what is in flight (up to
server.shutdown_timeout_s) and exits; then the embedded Valkey stops and the master exits 0.
A worker that dies unexpectedly is replaced. SIGHUP replaces the workers one at a time (a new
one is ready before its predecessor stops): a rolling restart onto the code now on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import msgspec

from gateway.ops.host import Host
from gateway.settings import Settings, resolve_data_key
from gateway.telemetry import logs

log = logging.getLogger("gateway.ops.server")

# settings (JSON), Redis URL, data key; the slot's sockets and readiness event come after
WorkerArgs = tuple[bytes, str, bytes]


async def run_worker(
    settings: Settings,
    redis_url: str,
    data_key: bytes,
    sockets: tuple[socket.socket, socket.socket],
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve the public and admin apps until SIGTERM, then shut down gracefully."""
    from aiohttp import web

    from gateway.app import create_app

    public, admin = create_app(settings, redis_url, data_key)
    server = settings.server
    runners = [
        web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=server.keepalive_timeout_s,
            # After an early answer (408, 413) aiohttp reads what is left of the body for up
            # to this long, so the client sees the answer; short, so a trickler is gone
            # within body_timeout_s + 1 s.
            lingering_time=0.5,
            shutdown_timeout=server.shutdown_timeout_s,
        )
        for app in (public, admin)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the master decides
    for runner, sock in zip(runners, sockets, strict=True):
        await runner.setup()
        await web.SockSite(runner, sock).start()
    tune_gc()
    ready()
    log.info("worker ready", extra={"pid": os.getpid(), "port": server.port})
    await stop.wait()
    log.info("worker stopping", extra={"pid": os.getpid()})
    for runner in reversed(runners):
        await runner.cleanup()


def tune_gc() -> None:
    """Fewer, cheaper collections for a worker whose requests make short-lived objects.

    What exists once the worker is up (modules, settings, scripts) never becomes garbage:
    freezing it keeps full collections from walking it again. A request allocates a few hundred
    containers that die with it; collecting the young generation every 20,000 allocations
    instead of 700 runs the collector ~30x less often over mostly freed objects, which takes the
    collector's pauses out of the claim path's p99. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def worker_main(
    settings_json: bytes,
    redis_url: str,
    data_key: bytes,
    sockets: tuple[socket.socket, socket.socket],
    ready: Any,
) -> None:
    """Entry point of one worker process; `ready` (an Event) is set once it accepts."""
    import uvloop

    logs.configure()
    settings = msgspec.json.decode(settings_json, type=Settings)
    uvloop.run(run_worker(settings, redis_url, data_key, sockets, ready.set))


class Master:
    """Holds the host, starts Valkey (if embedded) and the workers, replaces dead workers."""

    def __init__(
        self, settings: Settings, workers: int | None = None, host: Host | None = None
    ) -> None:
        self.settings = settings
        self.workers = workers or settings.server.workers
        self._host = host
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._readiness: dict[BaseProcess, Any] = {}
        self._stopping = False
        self._rolling = False

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; StartError when the host cannot be had."""
        from gateway.valkey.connect import EmbeddedValkey

        host = self._host or Host.claim(self.settings, self.workers)
        embedded = None
        prom_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
        try:
            redis_url = self.settings.redis.url
            if redis_url == "embedded":
                redis = self.settings.redis
                embedded = EmbeddedValkey(redis.data_dir, durability=redis.durability)
                redis_url = embedded.start()
            args = (msgspec.json.encode(self.settings), redis_url, resolve_data_key(self.settings))
            self._host = host
            self._install_signals()
            self._procs = [self._spawn(args, i) for i in range(self.workers)]
            self._supervise(args)
            return 0
        finally:
            self._stop_workers(self._procs)
            if embedded is not None:
                embedded.stop()
            host.release()
            shutil.rmtree(prom_dir, ignore_errors=True)

    def _spawn(self, args: WorkerArgs, slot: int, wait_ready_s: float = 0.0) -> BaseProcess:
        assert self._host is not None
        ready = self._ctx.Event()
        proc = self._ctx.Process(target=worker_main, args=(*args, self._host.slot(slot), ready))
        proc.start()
        # The event must outlive the child's start: its semaphore is gone once collected.
        self._readiness = {p: e for p, e in self._readiness.items() if p.is_alive()}
        self._readiness[proc] = ready
        if wait_ready_s and not ready.wait(wait_ready_s):
            log.error("replacement worker not ready in time", extra={"pid": proc.pid})
        return proc

    def _install_signals(self) -> None:
        def on_stop(_signum: int, _frame: object) -> None:
            self._stopping = True

        def on_hup(_signum: int, _frame: object) -> None:
            self._rolling = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _supervise(self, args: WorkerArgs) -> None:
        while not self._stopping:
            time.sleep(0.05)
            for i, proc in enumerate(self._procs):
                if not proc.is_alive() and not self._stopping:
                    log.error("worker died; replacing it", extra={"exitcode": proc.exitcode})
                    self._procs[i] = self._spawn(args, i)
            if self._rolling:
                self._rolling = False
                self._roll(args)

    def _roll(self, args: WorkerArgs) -> None:
        """Replace each worker by a new one that is ready before the old one stops."""
        for i, old in enumerate(list(self._procs)):
            if self._stopping:
                return
            self._procs[i] = self._spawn(args, i, wait_ready_s=30.0)
            self._stop_workers([old])
        log.info("workers replaced", extra={"workers": len(self._procs)})

    def _stop_workers(self, procs: list[BaseProcess]) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.shutdown_timeout_s + 2
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)
