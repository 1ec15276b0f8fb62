"""Process model: a master that owns the embedded Valkey and N SO_REUSEPORT worker processes.

SIGTERM (or SIGINT) on the master: every worker stops accepting, finishes what is in flight
(up to server.shutdown_timeout_s) and exits; then the embedded Valkey stops and the master
exits 0. A worker that dies unexpectedly is replaced.
"""

from __future__ import annotations

import asyncio
import base64
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
from multiprocessing.process import BaseProcess
from pathlib import Path

import msgspec

from gateway.settings import Settings, data_key_bytes
from gateway.telemetry import logs

log = logging.getLogger("gateway.ops.server")


def resolve_data_key(settings: Settings) -> bytes:
    """The AES-GCM key: from config/env, else var/data.key (created 0600 on first start)."""
    if settings.security.data_key:
        return data_key_bytes(settings.security.data_key)
    path = Path(settings.redis.data_dir) / "data.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return data_key_bytes(path.read_text().strip())


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that every worker binds to the same port (the kernel balances)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def run_worker(settings: Settings, redis_url: str, data_key: bytes) -> None:
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
    for runner, port in zip(runners, (server.port, server.admin_port), strict=True):
        await runner.setup()
        await web.SockSite(runner, reuseport_socket(server.host, port)).start()
    tune_gc()
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


def worker_main(settings_json: bytes, redis_url: str, data_key: bytes) -> None:
    """Entry point of one worker process."""
    import uvloop

    logs.configure()
    settings = msgspec.json.decode(settings_json, type=Settings)
    uvloop.run(run_worker(settings, redis_url, data_key))


class Master:
    """Starts Valkey (if embedded) and the workers, replaces dead workers, stops on signal."""

    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.workers = workers or settings.server.workers
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._stopping = False

    def _spawn(self, settings_json: bytes, redis_url: str, data_key: bytes) -> BaseProcess:
        proc = self._ctx.Process(target=worker_main, args=(settings_json, redis_url, data_key))
        proc.start()
        return proc

    def run(self) -> int:
        from gateway.valkey.connect import EmbeddedValkey

        embedded = None
        redis_url = self.settings.redis.url
        if redis_url == "embedded":
            embedded = EmbeddedValkey(self.settings.redis.data_dir)
            redis_url = embedded.start()
        prom_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
        try:
            data_key = resolve_data_key(self.settings)
            settings_json = msgspec.json.encode(self.settings)
            self._install_signals()
            self._procs = [
                self._spawn(settings_json, redis_url, data_key) for _ in range(self.workers)
            ]
            self._supervise(settings_json, redis_url, data_key)
            return 0
        finally:
            self._stop_workers()
            if embedded is not None:
                embedded.stop()
            shutil.rmtree(prom_dir, ignore_errors=True)

    def _install_signals(self) -> None:
        def on_signal(_signum: int, _frame: object) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _supervise(self, settings_json: bytes, redis_url: str, data_key: bytes) -> None:
        while not self._stopping:
            time.sleep(0.2)
            for i, proc in enumerate(self._procs):
                if not proc.is_alive() and not self._stopping:
                    log.error("worker died; replacing it", extra={"exitcode": proc.exitcode})
                    self._procs[i] = self._spawn(settings_json, redis_url, data_key)

    def _stop_workers(self) -> None:
        for proc in self._procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.shutdown_timeout_s + 2
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)
