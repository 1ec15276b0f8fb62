"""What one gateway holds on its host: its data directory and its listening sockets.

The master takes both before anything else starts, so a second gateway on the same port or
data directory fails at once with the cause, instead of sharing the port or the data. The
master keeps the sockets open for its whole life and every worker accepts on them: a worker
that dies leaves the port listening, and the kernel queues connections for its replacement.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from dataclasses import dataclass, field
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


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or StartError naming the address and the cause."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEADDR only: a port left in TIME_WAIT is reusable, one in use is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def uses_data_dir(settings: Settings) -> bool:
    """The data directory holds the embedded Valkey or the generated data key."""
    return settings.redis.url == "embedded" or not settings.security.data_key


@dataclass
class Host:
    """The data directory lock (when the data directory is used) and the two sockets."""

    lock: DataDirLock | None
    public: socket.socket
    admin: socket.socket
    extra: list[socket.socket] = field(default_factory=list)

    @classmethod
    def claim(cls, settings: Settings) -> Host:
        """Lock the data directory, then bind both ports; StartError on the first refusal."""
        lock = DataDirLock(settings.redis.data_dir) if uses_data_dir(settings) else None
        server = settings.server
        try:
            public = listening_socket(server.host, server.port)
            try:
                admin = listening_socket(server.host, server.admin_port)
            except StartError:
                public.close()
                raise
        except StartError:
            if lock is not None:
                lock.release()
            raise
        return cls(lock, public, admin)

    def release(self) -> None:
        for sock in (self.public, self.admin):
            sock.close()
        if self.lock is not None:
            self.lock.release()
