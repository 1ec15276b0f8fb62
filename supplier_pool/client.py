"""The supplier adapter interface and the built-in generic JSON adapter (SPEC §3.2.1).

An adapter turns one supplier's dialect into three answers: an `OrderResult`, `None` (the
supplier never saw the order), or `UnknownOutcome` (the order may or may not exist). It knows
nothing of breakers, bulkheads or failover; that is `pool.py`'s job.
"""

from __future__ import annotations

from typing import Literal, Protocol
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

OrderStatus = Literal["success", "failed", "processing"]


class OrderResult(msgspec.Struct, frozen=True):
    """A supplier's answer about one order."""

    order_id: str
    status: OrderStatus
    supplier_ref: str = ""
    # A redemption link (link benefits): a bearer secret, so it is kept out of every repr.
    link: str = ""

    def __repr__(self) -> str:
        return f"OrderResult({self.order_id!r}, {self.status!r}, {self.supplier_ref!r})"


class UnknownOutcome(Exception):
    """Timeout, connection error or reset, 5xx, unparseable body: the order may or may not exist."""


class NotSent(UnknownOutcome):
    """The connection could not be opened, so no request left: the supplier has no such order.

    A subclass of `UnknownOutcome` so that code which only knows the parent stays on the safe
    side; the pool treats it as a definite no after a `place_order`.
    """


class SupplierAdapter(Protocol):
    """What the pool needs from a supplier, whatever dialect it speaks."""

    supplier_id: str

    async def place_order(self, order_id: str, sku: str, account: str) -> OrderResult:
        """Place (or re-read, suppliers being idempotent on order_id) an order."""
        ...

    async def get_order(self, order_id: str) -> OrderResult | None:
        """Read an order back; None means the supplier answered that it never saw it."""
        ...

    async def close(self) -> None:
        """Release connections; the adapter is not used afterwards."""
        ...


class _OrderRequest(msgspec.Struct, frozen=True):
    order_id: str
    sku: str
    account: str


_encode_request = msgspec.json.Encoder().encode
_decode_result = msgspec.json.Decoder(OrderResult).decode
_JSON_HEADERS = {"Content-Type": "application/json"}


class GenericJsonAdapter:
    """The JSON dialect of SPEC §3.2.1 over one aiohttp session per supplier."""

    def __init__(
        self, supplier_id: str, base_url: str, timeout_s: float, max_concurrency: int
    ) -> None:
        self.supplier_id = supplier_id
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_concurrency = max_concurrency
        self._session: aiohttp.ClientSession | None = None

    async def place_order(self, order_id: str, sku: str, account: str) -> OrderResult:
        """POST the order; any answer but a well-formed 200 raises UnknownOutcome."""
        body = _encode_request(_OrderRequest(order_id=order_id, sku=sku, account=account))
        url = URL(f"{self._base_url}/orders", encoded=True)
        status, payload = await self._request("POST", url, body)
        if status != 200:
            raise UnknownOutcome(f"{self.supplier_id}: POST answered {status}")
        return self._parse(order_id, payload)

    async def get_order(self, order_id: str) -> OrderResult | None:
        """GET the order; 404 gives None, any other non-200 raises UnknownOutcome."""
        url = URL(f"{self._base_url}/orders/{quote(order_id, safe='')}", encoded=True)
        status, payload = await self._request("GET", url)
        if status == 404:
            return None
        if status != 200:
            raise UnknownOutcome(f"{self.supplier_id}: GET answered {status}")
        return self._parse(order_id, payload)

    async def close(self) -> None:
        """Close the session (and its connector) if one was opened."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _session_now(self) -> aiohttp.ClientSession:
        # Created lazily so that it binds to the loop that actually runs the calls.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_concurrency)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _request(self, method: str, url: URL, body: bytes | None = None) -> tuple[int, bytes]:
        headers = _JSON_HEADERS if body is not None else None
        try:
            session = self._session_now()
            async with session.request(method, url, data=body, headers=headers) as resp:
                return resp.status, await resp.read()
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"{self.supplier_id}: cannot connect: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UnknownOutcome(f"{self.supplier_id}: {type(exc).__name__}: {exc}") from exc

    def _parse(self, order_id: str, payload: bytes) -> OrderResult:
        try:
            result = _decode_result(payload)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            raise UnknownOutcome(f"{self.supplier_id}: unparseable body: {exc}") from exc
        if result.order_id != order_id:
            raise UnknownOutcome(f"{self.supplier_id}: answered for order {result.order_id!r}")
        return result
