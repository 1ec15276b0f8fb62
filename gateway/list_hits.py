"""Block-list hits: answered in process, still counted and evented (SPEC 6: every hit is both).

A list hit needs no Redis to decide, so its event is one plain XADD. It is throttled to one
event per blocked identity and stream every `every_s` seconds: a flood from a blocked address
must not become a flood of Redis writes. The metric counts every hit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.errors import ApiError
from gateway.models import Caller
from gateway.telemetry import metrics
from gateway.timefmt import rfc3339_ms
from gateway.valkey.calls import redis_call

log = logging.getLogger("gateway.risk")


class ListHits:
    def __init__(
        self,
        scripts: Any,
        max_len: int,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scripts = scripts
        self._max_len = max_len
        self._every_s = every_s
        self._clock = clock
        self._last: dict[tuple[str, str, str], float] = {}

    async def record(
        self,
        stream: str,
        list_name: str,
        campaign_id: str,
        user_id: str,
        device_id: str,
        caller: Caller,
    ) -> None:
        """Count the hit; append its `risk.hit` event unless this identity had one just now."""
        metrics.risk_decisions.labels(list_name, "deny", "enforce").inc()
        now = self._clock()
        blocked = {"blocked_users": user_id, "blocked_devices": device_id}.get(list_name, caller.ip)
        key = (stream, list_name, blocked)
        if now - self._last.get(key, float("-inf")) < self._every_s:
            return
        if len(self._last) > 100_000:
            self._last.clear()
        self._last[key] = now
        fields = {
            "type": "risk.hit",
            "ts": rfc3339_ms(int(now * 1000)),
            "campaign_id": campaign_id,
            "user_id": user_id,
            "device_id": device_id,
            "ip": caller.ip,
            "request_id": caller.request_id,
            "client_id": caller.client_id,
            "rules": list_name,
            "decision": "deny",
        }
        command = ["XADD", stream, "MAXLEN", "~", self._max_len, "*"]
        for name, value in fields.items():
            command += [name, value]
        try:
            await redis_call("risk_list_event", self._scripts.execute(*command))
        except ApiError:  # Redis down: the 403 stands, the event is lost (logged)
            log.warning("list hit event not written", extra={"request_id": caller.request_id})
