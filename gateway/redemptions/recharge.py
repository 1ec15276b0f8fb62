"""Direct recharge and links: a reserved redemption goes to the supplier pool and is settled.

The pool tries suppliers by priority, asking one whose outcome is unknown before failing over.
Before each call the supplier's id is persisted (`attempt`), so a crash leaves enough for the
reconciler to ask that supplier what happened (`resolve`). `redeem_settle.lua` moves a
redemption on only while it is still pending, so the live path and the reconciler can never
both settle it. A link the supplier answers is sealed (cards.seal_link) before it is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway import codes
from gateway.errors import business
from gateway.redemptions.cards import seal_link
from gateway.settings import Settings
from gateway.telemetry import metrics
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from gateway.valkey.calls import redis_call
from supplier_pool.pool import Delivered, Failed, Pending, SupplierPool


class Abandoned(Exception):
    """The redemption stopped being pending (settled elsewhere): call no supplier."""


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DirectRecharge:
    """Calls suppliers for reserved redemptions and settles them, live or when found pending."""

    def __init__(
        self,
        redis: Any,
        scripts: Any,
        settings: Settings,
        pool: SupplierPool,
        claim_ids: codes.ClaimIds,
        data_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._claim_ids = claim_ids
        self._data_key = data_key
        self._scripts = scripts
        self._pool = pool
        self._clock = clock
        self._max_len = settings.redis.stream_max_len
        self._sweep_after_ms = int(settings.redemption.sweep_after_s * 1000)
        self._recheck_ms = int(settings.redemption.reconcile_interval_s * 1000)

    async def record(self, tag: str, rid: str) -> dict[str, str]:
        """The redemption's record (redeem.lua writes it), {} if there is none."""
        raw = await redis_call("redemption_read", self._redis.hgetall(keys.redemption(tag, rid)))
        return {text(k): text(v) for k, v in raw.items()}

    async def settle(
        self,
        tag: str,
        rid: str,
        code: str,
        action: str,
        supplier: str = "",
        ref: str = "",
        failure: str = "",
        link: str = "",
    ) -> str:
        """Move a pending redemption on; returns its status afterwards ('' if unknown).
        `link` is the supplier's link in clear: only its sealed form goes to Valkey."""
        now_ms = int(self._clock() * 1000)
        status = await redis_call(
            "redeem_settle",
            self._scripts.redeem_settle(
                keys=[
                    keys.redemption(tag, rid),
                    keys.events(tag),
                    keys.pending(tag),
                    keys.voucher(tag, code),
                ],
                args=[
                    action,
                    now_ms,
                    rfc3339_ms(now_ms),
                    keys.campaign(tag, ""),
                    supplier,
                    ref,
                    now_ms + self._recheck_ms,
                    self._max_len,
                    failure,
                    rid,
                    self._claim_ids.of(code),
                    self._sealed(rid, link),
                ],
            ),
        )
        return text(status)

    def _sealed(self, rid: str, link: str) -> str:
        # Without a data key nothing may be stored: admin refuses link campaigns then.
        if not link or self._data_key is None:
            return ""
        return seal_link(self._data_key, rid, link)

    async def deliver(
        self, tag: str, rid: str, code: str, sku: str, suppliers: str, account: str
    ) -> None:
        """Call suppliers for a just-reserved redemption; raises when none delivered."""

        async def before_attempt(supplier_id: str) -> None:
            if await self.settle(tag, rid, code, "attempt", supplier_id) != "pending":
                raise Abandoned(rid)

        # Bounded well inside the sweep delay: the reconciler never meets a live attempt.
        budget = self._sweep_after_ms / 2000
        try:
            async with asyncio.timeout(budget):
                outcome = await self._pool.deliver(
                    rid, sku, account, suppliers.split(","), before_attempt=before_attempt
                )
        except (TimeoutError, Abandoned):
            outcome = Pending("")
        if isinstance(outcome, Delivered):
            await self.settle(
                tag,
                rid,
                code,
                "delivered",
                outcome.supplier_id,
                outcome.supplier_ref,
                link=outcome.link,
            )
            metrics.redemptions.labels("delivered").inc()
        elif isinstance(outcome, Pending):
            await self.settle(tag, rid, code, "pending", outcome.supplier_id)
            metrics.redemptions.labels("pending").inc()
        else:
            await self.settle(tag, rid, code, "release", failure="suppliers_unavailable")
            metrics.redemptions.labels("suppliers_unavailable").inc()
            raise business("suppliers_unavailable", {"Retry-After": "5"})

    async def resolve(self, tag: str, rid: str) -> str:
        """A redemption found pending: ask the supplier that may hold the order (SPEC 3.2.1)
        and settle accordingly; returns its status afterwards."""
        fields = await self.record(tag, rid)
        if fields.get("status") != "pending":
            await self._redis.zrem(keys.pending(tag), rid)  # settled since it was queued
            return fields.get("status", "")
        code, supplier = fields["code"], fields.get("supplier", "")
        if not supplier:
            return await self.settle(tag, rid, code, "release", failure="abandoned")
        outcome = await self._pool.settle(rid, supplier)
        if isinstance(outcome, Delivered):
            metrics.redemptions.labels("delivered").inc()
            return await self.settle(
                tag, rid, code, "delivered", supplier, outcome.supplier_ref, link=outcome.link
            )
        if isinstance(outcome, Failed):
            metrics.redemptions.labels("failed").inc()
            return await self.settle(tag, rid, code, "failed", failure="supplier_failed")
        return await self.settle(tag, rid, code, "pending", supplier)
