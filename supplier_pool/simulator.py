"""A real HTTP simulator of upstream suppliers, speaking the dialect of SPEC §3.2.1.

One aiohttp server hosts many named suppliers under `/s/{supplier}`; each has fault knobs that
can be changed at run time (`PUT /_sim/suppliers/{supplier}`). `GET /_sim/orders` is the order
log the tests use to prove that nothing was delivered twice.

Fault order on every order route: down, latency, error_rate (500, nothing created); then, on POST
only, timeout_rate (sleep `timeout_s`; the order exists first only with `commit_before_timeout`).
A POST's body is read before the faults, so a caller that goes away during `latency_ms` still
gets its order placed (the case a crashed gateway worker must reconcile).

A supplier serves links (link benefits) for the skus in its `link_skus`: each such order gets a
random redemption link, answered as `"link"` once the order is a success.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson
from aiohttp import web


class Knobs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fault settings of one simulated supplier; rates are probabilities in [0, 1]."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    failure_rate: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 5.0
    commit_before_timeout: bool = False
    processing_s: float = 0.0
    down: bool = False
    down_mode: Literal["503", "close"] = "503"
    link_skus: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("failure_rate", "error_rate", "timeout_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be within [0, 1]")
        for name in ("latency_ms", "latency_jitter_ms", "timeout_s", "processing_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")


class SimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Suppliers to host at start, by name, and the seed of all randomness (None: random)."""

    suppliers: dict[str, Knobs] = {}
    seed: int | None = None


class _OrderIn(msgspec.Struct, frozen=True):
    order_id: str
    sku: str = ""
    account: str = ""


@dataclass
class _Order:
    supplier: str
    order_id: str
    sku: str
    account: str
    supplier_ref: str
    created_at: float  # unix seconds
    status: str
    ready_at: float | None = None  # monotonic time when "processing" becomes "success"
    link: str = ""

    def current_status(self) -> str:
        if self.ready_at is not None and time.monotonic() >= self.ready_at:
            self.status, self.ready_at = "success", None
        return self.status

    def answer(self) -> dict[str, str]:
        status = self.current_status()
        answer = {"order_id": self.order_id, "status": status, "supplier_ref": self.supplier_ref}
        if self.link and status == "success":
            answer["link"] = self.link
        return answer

    def log_row(self) -> dict[str, Any]:
        return {
            "supplier": self.supplier,
            "order_id": self.order_id,
            "status": self.current_status(),
            "sku": self.sku,
            "account": self.account,
            "supplier_ref": self.supplier_ref,
            "link": self.link,
            "created_at": self.created_at,
        }


@dataclass
class _Supplier:
    name: str
    knobs: Knobs
    rng: random.Random
    orders: dict[str, _Order] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)


class Simulator:
    """The in-memory state behind the HTTP routes."""

    def __init__(self, config: SimConfig) -> None:
        self.seed = config.seed
        self.suppliers: dict[str, _Supplier] = {}
        self.log: list[_Order] = []
        self.stopping = asyncio.Event()
        for name, knobs in config.suppliers.items():
            self.configure(name, knobs)

    def configure(self, name: str, knobs: Knobs) -> None:
        """Create a supplier or replace its knobs (its orders and stats stay)."""
        current = self.suppliers.get(name)
        if current is not None:
            current.knobs = knobs
            return
        # A string seed per supplier keeps each supplier's dice independent and repeatable.
        rng = random.Random(None if self.seed is None else f"{self.seed}:{name}")
        self.suppliers[name] = _Supplier(name, knobs, rng)

    def place(self, supplier: _Supplier, req: _OrderIn, *, force_success: bool = False) -> _Order:
        """The order for req.order_id, created on first sight (idempotent on order_id)."""
        order = supplier.orders.get(req.order_id)
        if order is not None:
            return order
        knobs = supplier.knobs
        status, ready_at = "success", None
        if not force_success and supplier.rng.random() < knobs.failure_rate:
            status = "failed"
        elif not force_success and knobs.processing_s > 0:
            status, ready_at = "processing", time.monotonic() + knobs.processing_s
        ref = f"{supplier.name}-{len(supplier.orders) + 1}"
        order = _Order(supplier.name, req.order_id, req.sku, req.account, ref, time.time(), status)
        order.ready_at = ready_at
        if req.sku in knobs.link_skus:
            order.link = (
                f"https://links.example/{supplier.name}/{supplier.rng.getrandbits(128):032x}"
            )
        supplier.orders[req.order_id] = order
        supplier.stats["created"] += 1
        self.log.append(order)
        return order

    def clear_orders(self) -> None:
        """Forget every order of every supplier."""
        self.log.clear()
        for supplier in self.suppliers.values():
            supplier.orders.clear()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the server shuts down."""
        if seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), seconds)


SIM = web.AppKey("sim", Simulator)
_decode_order = msgspec.json.Decoder(_OrderIn).decode


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _supplier_of(request: web.Request) -> _Supplier | None:
    supplier = request.app[SIM].suppliers.get(request.match_info["supplier"])
    if supplier is not None:
        supplier.stats["calls"] += 1
        supplier.stats[request.method.lower()] += 1
    return supplier


async def _faults(request: web.Request, supplier: _Supplier) -> web.Response | None:
    """Apply down, latency and error_rate; a response here ends the request."""
    sim, knobs = request.app[SIM], supplier.knobs
    if knobs.down:
        supplier.stats["down"] += 1
        if knobs.down_mode == "close" and request.transport is not None:
            request.transport.close()  # the client sees the connection drop
        return _error(503, "supplier down")
    jitter = supplier.rng.uniform(0, knobs.latency_jitter_ms) if knobs.latency_jitter_ms else 0
    await sim.sleep((knobs.latency_ms + jitter) / 1000)
    if supplier.rng.random() < knobs.error_rate:
        supplier.stats["errors"] += 1
        return _error(500, "simulated error")
    return None


async def post_order(request: web.Request) -> web.Response:
    """POST /s/{supplier}/orders: create or re-read an order."""
    supplier = _supplier_of(request)
    if supplier is None:
        return _error(404, "unknown supplier")
    # Read before the faults, as a real supplier would: an order received in full is still
    # placed after `latency_ms` even if the caller has gone away meanwhile.
    body = await request.read()
    fault = await _faults(request, supplier)
    if fault is not None:
        return fault
    try:
        req = _decode_order(body)
    except msgspec.DecodeError as exc:
        return _error(400, str(exc))
    sim = request.app[SIM]
    knobs = supplier.knobs
    if supplier.rng.random() < knobs.timeout_rate:
        supplier.stats["timeouts"] += 1
        order = (
            sim.place(supplier, req, force_success=True) if knobs.commit_before_timeout else None
        )
        await sim.sleep(knobs.timeout_s)
        return _json(order.answer()) if order is not None else _error(504, "simulated timeout")
    return _json(sim.place(supplier, req).answer())


async def get_order(request: web.Request) -> web.Response:
    """GET /s/{supplier}/orders/{order_id}: the order, or 404 if never seen."""
    supplier = _supplier_of(request)
    if supplier is None:
        return _error(404, "unknown supplier")
    fault = await _faults(request, supplier)
    if fault is not None:
        return fault
    order = supplier.orders.get(request.match_info["order_id"])
    return _error(404, "no such order") if order is None else _json(order.answer())


async def put_supplier(request: web.Request) -> web.Response:
    """PUT /_sim/suppliers/{supplier}: create it or change some of its knobs."""
    sim = request.app[SIM]
    name = request.match_info["supplier"]
    current = sim.suppliers.get(name)
    base = msgspec.structs.asdict(current.knobs if current else Knobs())
    try:
        patch = orjson.loads(await request.read() or b"{}")
        if not isinstance(patch, dict):
            raise ValueError("body must be a JSON object")
        knobs = msgspec.convert({**base, **patch}, Knobs)
    except (ValueError, msgspec.ValidationError) as exc:  # orjson.JSONDecodeError is a ValueError
        return _error(400, str(exc))
    sim.configure(name, knobs)
    return _json(msgspec.structs.asdict(knobs))


async def list_suppliers(request: web.Request) -> web.Response:
    """GET /_sim/suppliers: every supplier's knobs."""
    suppliers = request.app[SIM].suppliers
    return _json({n: msgspec.structs.asdict(s.knobs) for n, s in suppliers.items()})


async def list_orders(request: web.Request) -> web.Response:
    """GET /_sim/orders: every order ever created, oldest first, with its current status."""
    return _json([order.log_row() for order in request.app[SIM].log])


async def clear_orders(request: web.Request) -> web.Response:
    """DELETE /_sim/orders: forget every order."""
    request.app[SIM].clear_orders()
    return web.Response(status=204)


async def get_stats(request: web.Request) -> web.Response:
    """GET /_sim/stats: per-supplier counts (calls, post, get, errors, timeouts, down, created)."""
    suppliers = request.app[SIM].suppliers
    return _json({n: dict(s.stats) for n, s in suppliers.items()})


async def clear_stats(request: web.Request) -> web.Response:
    """DELETE /_sim/stats: zero every counter."""
    for supplier in request.app[SIM].suppliers.values():
        supplier.stats.clear()
    return web.Response(status=204)


async def _wake_sleepers(app: web.Application) -> None:
    app[SIM].stopping.set()


def build_app(config: SimConfig | None = None) -> web.Application:
    """The simulator as an aiohttp application (state under the `SIM` app key)."""
    app = web.Application()
    app[SIM] = Simulator(config or SimConfig())
    app.on_shutdown.append(_wake_sleepers)
    app.router.add_post("/s/{supplier}/orders", post_order)
    app.router.add_get("/s/{supplier}/orders/{order_id}", get_order)
    app.router.add_get("/_sim/suppliers", list_suppliers)
    app.router.add_put("/_sim/suppliers/{supplier}", put_supplier)
    app.router.add_get("/_sim/orders", list_orders)
    app.router.add_delete("/_sim/orders", clear_orders)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_delete("/_sim/stats", clear_stats)
    return app


def _as_config(suppliers: Iterable[str] | Mapping[str, Knobs], seed: int | None) -> SimConfig:
    if isinstance(suppliers, Mapping):
        return SimConfig(suppliers=dict(suppliers), seed=seed)
    return SimConfig(suppliers={name: Knobs() for name in suppliers}, seed=seed)


@contextlib.asynccontextmanager
async def running_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    suppliers: Iterable[str] | Mapping[str, Knobs] = ("alpha", "beta"),
    seed: int | None = None,
) -> AsyncIterator[str]:
    """Serve the simulator while the block runs; yields its base address, e.g. http://h:p."""
    runner = web.AppRunner(build_app(_as_config(suppliers, seed)), shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()


async def _serve(host: str, port: int, config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_simulator(host, port, config.suppliers, config.seed) as base:
        print(f"supplier-sim listening on {base}", flush=True)
        for name in config.suppliers:
            print(f"  {name}: base_url {base}/s/{name}", flush=True)
        await stop.wait()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supplier-sim", description="Simulated suppliers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--supplier", action="append", default=[], help="repeatable")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--knobs", default="{}", help='JSON per supplier, e.g. {"beta": {"latency_ms": 50}}'
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `supplier-sim` until SIGINT/SIGTERM, under uvloop; returns the exit status."""
    import uvloop

    args = _parser().parse_args(argv)
    try:
        knobs = msgspec.json.decode(args.knobs, type=dict[str, Knobs])
    except msgspec.DecodeError as exc:  # includes ValidationError
        print(f"supplier-sim: --knobs: {exc}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys([*args.supplier, *knobs])) or ["alpha", "beta"]
    config = SimConfig({n: knobs.get(n, Knobs()) for n in names}, seed=args.seed)
    uvloop.run(_serve(args.host, args.port, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
