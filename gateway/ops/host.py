"""What one gateway holds on its host: its data directory and its listening sockets.

The master takes both before anything else starts, so a second gateway on the same port or
data directory fails at once with the cause, instead of sharing the port or the data. It binds
one SO_REUSEPORT socket per worker slot (the kernel spreads connections evenly over them) and
keeps them open for its whole life: a worker that dies leaves its slot's socket listening, and
the kernel queues that socket's connections for the replacement, which accepts on it.

A port is taken for us first by a probe socket without SO_REUSEPORT: it cannot join another
gateway's group of SO_REUSEPORT sockets, so a second gateway is refused instead of silently
sharing the port; our own group is then bound once the probe has shown the port free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import Settings

LOCK_NAME = "gateway.lock"
BACKLOG = 4096


class StartError(RuntimeError):
    """The gateway cannot start on this host; the message says what and why."""


class DataDirLock:
    """An exclusive lock on `data_dir/gateway.lock`, held until the process exits."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / LOCK_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartError(
                f"data directory {self.data_dir} is in use by another gateway (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def wipe(self) -> None:
        """Remove everything in the data directory but the lock itself."""
        for entry in self.data_dir.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _socket(host: str, reuseport: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR: a port left in TIME_WAIT is reusable, one in use is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def listening_sockets(host: str, port: int, slots: int) -> list[socket.socket]:
    """`slots` SO_REUSEPORT sockets listening on host:port, or StartError naming the address
    and the cause when something else holds it."""
    probe = _socket(host, reuseport=False)
    try:
        probe.bind((host, port))
        port = probe.getsockname()[1]  # port 0: the one the kernel chose, for every slot
    except OSError as exc:
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(slots):
            sock = _socket(host, reuseport=True)
            sockets.append(sock)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets


def uses_data_dir(settings: Settings) -> bool:
    """The data directory holds the embedded Valkey or the generated data key."""
    return settings.redis.url == "embedded" or not settings.security.data_key


@dataclass
class Host:
    """The data directory lock (when the data directory is used) and, per worker slot, its
    public and admin sockets."""

    lock: DataDirLock | None
    public: list[socket.socket]
    admin: list[socket.socket]

    @classmethod
    def claim(cls, settings: Settings, workers: int | None = None) -> Host:
        """Lock the data directory, then bind both ports for every worker slot; StartError on
        the first refusal."""
        lock = DataDirLock(settings.redis.data_dir) if uses_data_dir(settings) else None
        server, slots = settings.server, workers or settings.server.workers
        try:
            public = listening_sockets(server.host, server.port, slots)
            try:
                admin = listening_sockets(server.host, server.admin_port, slots)
            except StartError:
                for sock in public:
                    sock.close()
                raise
        except StartError:
            if lock is not None:
                lock.release()
            raise
        return cls(lock, public, admin)

    def slot(self, i: int) -> tuple[socket.socket, socket.socket]:
        """Worker slot i's (public, admin) sockets."""
        return self.public[i], self.admin[i]

    def release(self) -> None:
        for sock in (*self.public, *self.admin):
            sock.close()
        if self.lock is not None:
            self.lock.release()
