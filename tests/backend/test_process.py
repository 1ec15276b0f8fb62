"""`gateway backend --config FILE`: its own process, its own port, the gateway's settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from backend.__main__ import redis_url
from backend.db import async_url
from gateway.settings import ConfigError, parse
from tests.support.served import free_port


async def _wait_ready(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url) as response:
                    return response.status
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise AssertionError("the backend never answered")


@pytest.mark.timeout(60)
async def test_gateway_backend_serves_on_its_port_with_a_sqlite_ledger_in_the_data_dir(
    tmp_path: Path, valkey_url: str
) -> None:
    port = free_port()
    config = tmp_path / "backend.toml"
    config.write_text(
        f'[redis]\nurl = "{valkey_url}"\ndata_dir = "{tmp_path / "var"}"\n'
        f'[admin]\ntoken = "t"\n[backend]\nport = {port}\n'
    )
    gateway = Path(sys.executable).parent / "gateway"
    process = await asyncio.create_subprocess_exec(
        str(gateway),
        "backend",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert await _wait_ready(f"http://127.0.0.1:{port}/readyz") == 200
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
    assert (tmp_path / "var" / "ledger.db").exists()
    # The data key the gateway would use (none configured: generated into the data dir), read
    # the same way: claw-back and the audit turn claim ids into codes with it.
    assert (tmp_path / "var" / "data.key").exists()


def test_an_embedded_redis_url_needs_a_running_gateway(tmp_path: Path) -> None:
    settings = parse(f'[redis]\ndata_dir = "{tmp_path}"\n[admin]\ntoken = "t"\n', env={})
    with pytest.raises(ConfigError, match=r"redis\.url: embedded"):
        redis_url(settings)
    (tmp_path / "valkey").mkdir()
    (tmp_path / "valkey" / "url").write_text("redis://127.0.0.1:7777/0\n")
    assert redis_url(settings) == "redis://127.0.0.1:7777/0"


def test_database_urls_map_to_async_drivers_and_a_relative_sqlite_path_to_the_data_dir(
    tmp_path: Path,
) -> None:
    assert async_url("sqlite:///ledger.db", tmp_path) == f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
    assert async_url("sqlite:////abs/l.db", tmp_path) == "sqlite+aiosqlite:////abs/l.db"
    assert async_url("postgresql://u@h/db", tmp_path) == "postgresql+asyncpg://u@h/db"
