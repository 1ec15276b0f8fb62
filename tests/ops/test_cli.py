"""The CLI ends with one line and a non-zero exit on known failures: never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from gateway.valkey import keys
from tests.support.served import config_text, free_port

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, redis_url: str) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(redis_url, free_port(), free_port(), workers=1))
    return config


def test_events_tail_into_head_stops_quietly_on_the_closed_pipe(
    tmp_path: Path, valkey_url: str, sync_redis: redis.Redis
):
    # More events than a pipe holds, so the tail is still writing when `head` goes away.
    sync_redis.flushall()
    sync_redis.sadd(keys.EVENT_STREAMS, keys.ADMIN_EVENTS)
    pipe = sync_redis.pipeline()
    for i in range(3000):
        pipe.xadd(
            keys.ADMIN_EVENTS, {"type": "campaign.stock_changed", "ts": str(i), "pad": "x" * 64}
        )
    pipe.execute()
    config = write_config(tmp_path, valkey_url)
    script = (
        f"{sys.executable} -m gateway events tail --config {config} --from-start | head -1; "
        'echo "status=${PIPESTATUS[0]}" >&2'
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert orjson.loads(lines[0])["stream"] == keys.ADMIN_EVENTS
    assert "Traceback" not in result.stderr
    assert "status=1" in result.stderr


def test_events_tail_with_valkey_down_says_so_in_one_line(tmp_path: Path):
    config = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "events", "tail", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("events tail:")]
    assert len(errors) == 1 and "cannot read from Valkey" in errors[0]


def test_every_cli_option_has_help_text():
    from gateway.__main__ import parser

    missing = []
    top = parser()
    stack = [top]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if action.choices and hasattr(action, "_name_parser_map"):
                stack.extend(action._name_parser_map.values())
            elif not action.help and action.dest != "help":
                missing.append(f"{current.prog} {action.dest}")
    assert missing == []
