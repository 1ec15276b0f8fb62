"""`POST /admin/claw-back` (SPEC §10): the backend finds an identity's vouchers in the ledger
and revokes them through the gateway's admin API over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from backend.clawback import gateway_admin_url
from backend.http.state import INGESTER
from gateway.app import create_app as gateway_app
from gateway.codes import mask_code
from gateway.settings import ConfigError, parse
from gateway.valkey import keys
from tests.backend.conftest import backend_client
from tests.gateway.conftest import ADMIN_TOKEN, API_KEY, Gateway
from tests.support.served import free_port
from tests.support.waiting import eventually

TOKENS = {"ada": "ada-token", "otto": "otto-token", "vera": "vera-token"}
CONFIG = f"""
[server]
max_body_bytes = 4096
trusted_proxies = ["127.0.0.1"]
[admin]
token = "{ADMIN_TOKEN}"
[[admin.users]]
name = "ada"
token = "ada-token"
role = "admin"
[[admin.users]]
name = "otto"
token = "otto-token"
role = "operator"
[[admin.users]]
name = "vera"
token = "vera-token"
role = "viewer"
[security]
data_key = "{"D" * 43}="
[[clients]]
id = "app"
api_key = "{API_KEY}"
"""
COUNTS = ("matched", "revoked", "returned", "redeemed", "pending", "expired", "failed")
Client = TestClient[Any, Any]
BackendFactory = Callable[[str], AbstractAsyncContextManager[Client]]


def counts(**given: int) -> dict[str, Any]:
    return {name: given.get(name, 0) for name in COUNTS} | {"failures": {}}


@pytest.fixture
async def gw(valkey_url: str, redis_client: Any) -> AsyncIterator[Gateway]:
    """The gateway (public + admin app) on real loopback ports, with named admin users."""
    settings = parse(CONFIG, env={})
    public_app, admin_app = gateway_app(settings, valkey_url)
    public, admin = TestClient(TestServer(public_app)), TestClient(TestServer(admin_app))
    await public.start_server()
    await admin.start_server()
    try:
        yield Gateway(public, admin, settings, redis_client)
    finally:
        await admin.close()
        await public.close()


@pytest.fixture
def backend_on(valkey_url: str, database_url: str, tmp_path: Path) -> BackendFactory:
    """A backend app on the test's ledger (no ingest task), calling the gateway at the URL."""

    @asynccontextmanager
    async def start(gateway_url: str) -> AsyncIterator[Client]:
        settings = parse(CONFIG + f'[backend]\ngateway_url = "{gateway_url}"\n', env={})
        async with backend_client(settings, valkey_url, database_url, tmp_path) as client:
            yield client

    return start


@pytest.fixture
async def api(gw: Gateway, backend_on: BackendFactory) -> AsyncIterator[Client]:
    async with backend_on(str(gw.admin.make_url("")).rstrip("/")) as client:
        yield client


async def claw_back(api: Client, body: Any, user: str = "ada", status: int = 200) -> Any:
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    response = await api.post("/admin/claw-back", json=body, headers=headers)
    assert response.status == status, await response.text()
    return await response.json()


async def grant(gw: Gateway, campaign: str, user: str, device: str, ip: str) -> str:
    response = await gw.claim(campaign, user, device, headers={"X-Forwarded-For": ip})
    assert response.status == 201, await response.text()
    return str((await response.json())["voucher"]["code"])


class Sale:
    """Two campaigns; a scalper `sam` on three devices and three addresses, one of his
    vouchers redeemed; `ruth` on her own device and address."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def start(self) -> Sale:
        gw = self.gw
        self.a = await gw.put_campaign(stock=20, per_user_limit=10)
        self.b = await gw.put_campaign(stock=20, per_user_limit=10)
        self.sam = {
            "a-d1-ip1": await grant(gw, self.a, "sam", "d1", "203.0.113.1"),
            "a-d2-ip1": await grant(gw, self.a, "sam", "d2", "203.0.113.1"),
            "a-d1-ip2": await grant(gw, self.a, "sam", "d1", "203.0.113.2"),
            "b-d1-ip2": await grant(gw, self.b, "sam", "d1", "203.0.113.2"),
            "b-d3-ip3": await grant(gw, self.b, "sam", "d3", "203.0.113.3"),
        }
        self.ruth = [
            await grant(gw, self.a, "ruth", "r1", "198.51.100.9"),
            await grant(gw, self.b, "ruth", "r1", "198.51.100.9"),
        ]
        redeemed = await gw.redeem(self.sam["a-d1-ip2"], user_id="sam", device_id="d1")
        assert redeemed.status == 200, await redeemed.text()
        return self

    async def revoked_events(self, code: str) -> list[dict[str, str]]:
        stream = keys.events(keys.shard_tag(self.a if code in self.codes(self.a) else self.b))
        entries = [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await self.gw.redis.xrange(stream)
        ]
        return [
            e
            for e in entries
            if e["type"] == "voucher.revoked" and e["voucher_code"] == mask_code(code)
        ]

    def codes(self, campaign: str) -> list[str]:
        prefix = "a-" if campaign == self.a else "b-"
        return [code for name, code in self.sam.items() if name.startswith(prefix)]


async def caught_up(api: Client) -> None:
    await api.app[INGESTER].catch_up()


async def redeem_status(gw: Gateway, code: str, user: str, device: str) -> tuple[int, str]:
    response = await gw.redeem(code, user_id=user, device_id=device)
    body = await response.json()
    return response.status, body["error"]["code"] if response.status >= 400 else "ok"


async def test_claw_back_by_user_revokes_every_unredeemed_voucher_and_gives_the_units_back(
    gw: Gateway, api: Client
) -> None:
    sale = await Sale(gw).start()
    before_a, before_b = await gw.stats(sale.a), await gw.stats(sale.b)
    await caught_up(api)

    body = {"user_id": "sam", "return_stock": True, "reason": "scalper"}
    answer = await claw_back(api, body)
    assert answer == counts(matched=5, revoked=4, returned=4, redeemed=1)

    after_a, after_b = await gw.stats(sale.a), await gw.stats(sale.b)
    assert (after_a["revoked"], after_a["returned"], after_b["revoked"], after_b["returned"]) == (
        2,
        2,
        2,
        2,
    )
    assert after_a["stock_left"] == before_a["stock_left"] + 2
    assert after_b["stock_left"] == before_b["stock_left"] + 2
    assert after_a["redeemed"] == before_a["redeemed"] == 1
    for name, code in sale.sam.items():
        if name != "a-d1-ip2":
            device = name.split("-")[1]
            assert await redeem_status(gw, code, "sam", device) == (409, "voucher_revoked")
            (event,) = await sale.revoked_events(code)
            assert (event["actor"], event["reason"], event["returned"]) == (
                "ada",
                "claw-back: scalper",
                "true",
            )
    for code in sale.ruth:  # the other user untouched
        assert await redeem_status(gw, code, "ruth", "r1") == (200, "ok")

    # The same call again: the same counts, nothing more given back.
    after_a, after_b = await gw.stats(sale.a), await gw.stats(sale.b)
    assert await claw_back(api, body) == answer
    assert (await gw.stats(sale.a), await gw.stats(sale.b)) == (after_a, after_b)
    for name, code in sale.sam.items():
        assert len(await sale.revoked_events(code)) == (0 if name == "a-d1-ip2" else 1)

    # Once the ledger has caught up, the same: revoked vouchers are sent again, and the
    # gateway answers them as the first time.
    await caught_up(api)
    assert await claw_back(api, body) == answer
    assert (await gw.stats(sale.a))["returned"] == 2


async def test_claw_back_by_device_or_address_within_one_campaign(gw: Gateway, api: Client) -> None:
    sale = await Sale(gw).start()
    await caught_up(api)

    by_device = {"device_id": "d1", "campaign_id": sale.a, "return_stock": False}
    assert await claw_back(api, by_device) == counts(matched=2, revoked=1, redeemed=1)
    stats_a = await gw.stats(sale.a)
    assert (stats_a["revoked"], stats_a["returned"]) == (1, 0)
    assert await redeem_status(gw, sale.sam["a-d1-ip1"], "sam", "d1") == (409, "voucher_revoked")

    by_ip = {"ip": "203.0.113.2", "campaign_id": sale.b}  # return_stock defaults to true
    assert await claw_back(api, by_ip) == counts(matched=1, revoked=1, returned=1)
    stats_b = await gw.stats(sale.b)
    assert (stats_b["revoked"], stats_b["returned"]) == (1, 1)
    assert await redeem_status(gw, sale.sam["b-d1-ip2"], "sam", "d1") == (409, "voucher_revoked")

    # Outside the campaign and the identity, nothing moved.
    assert await redeem_status(gw, sale.sam["a-d2-ip1"], "sam", "d2") == (200, "ok")
    assert await redeem_status(gw, sale.sam["b-d3-ip3"], "sam", "d3") == (200, "ok")
    nobody = {"user_id": "nobody"}
    assert await claw_back(api, nobody) == counts()


async def test_the_act_is_in_the_audit_with_its_actor_request_and_counts(
    gw: Gateway, api: Client
) -> None:
    await Sale(gw).start()
    await caught_up(api)
    answer = await claw_back(api, {"user_id": "sam", "reason": "resold"})
    await caught_up(api)

    headers = {"Authorization": f"Bearer {TOKENS['vera']}"}
    by_actor = await (await api.get("/audit?actor=ada", headers=headers)).json()
    acts = [e for e in by_actor["entries"] if e["type"] == "admin.claw_back"]
    assert len(acts) == 1
    (act,) = acts
    assert (act["actor"], act["actor_ip"], act["user_id"]) == ("ada", "127.0.0.1", "sam")
    assert (act["reason"], act["return_stock"], act["result"]) == ("resold", "true", "done")
    assert {name: int(act[name]) for name in COUNTS} == {name: answer[name] for name in COUNTS}
    assert json.loads(act["failures"]) == {}
    # The revokes it caused are the actor's too, and the user's trail shows the act.
    assert sum(e["type"] == "voucher.revoked" for e in by_actor["entries"]) == 4
    by_user = await (await api.get("/audit?user=sam", headers=headers)).json()
    assert "admin.claw_back" in [e["type"] for e in by_user["entries"]]


async def test_only_admins_may_claw_back_and_the_gateway_is_left_alone(
    gw: Gateway, api: Client
) -> None:
    sale = await Sale(gw).start()
    await caught_up(api)
    for user in ("vera", "otto"):
        refused = await claw_back(api, {"user_id": "sam"}, user=user, status=403)
        assert refused["error"]["code"] == "forbidden"
    for headers in ({}, {"Authorization": f"Bearer {API_KEY}"}):
        response = await api.post("/admin/claw-back", json={"user_id": "sam"}, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"
    assert (await gw.stats(sale.a))["revoked"] == 0
    # admin.token is an admin named `admin`.
    response = await api.post(
        "/admin/claw-back",
        json={"user_id": "ruth"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status == 200
    assert await response.json() == counts(matched=2, revoked=2, returned=2)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"return_stock": True},
        {"user_id": "sam", "device_id": "d1"},
        {"user_id": ""},
        {"user_id": "a\nb"},
        {"user_id": "x" * 129},
        {"user_id": "sam", "return_stock": "yes"},
        {"user_id": "sam", "campaign_id": ""},
        {"user_id": "sam", "reason": "r" * 501},
        {"user_id": "sam", "extra": 1},
        ["sam"],
    ],
)
async def test_bad_bodies_are_400_invalid_request(api: Client, body: Any) -> None:
    refused = await claw_back(api, body, status=400)
    assert refused["error"]["code"] == "invalid_request"


async def test_a_body_that_is_not_json_is_400(api: Client) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['ada']}"}
    for data, kind in (
        ("user_id=sam", "application/x-www-form-urlencoded"),
        ("{", "application/json"),
    ):
        response = await api.post(
            "/admin/claw-back", data=data, headers=headers | {"Content-Type": kind}
        )
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_request"


async def test_gateway_unreachable_is_503_and_a_retry_finishes_the_claw_back(
    gw: Gateway, backend_on: BackendFactory
) -> None:
    sale = await Sale(gw).start()
    async with backend_on(f"http://127.0.0.1:{free_port()}") as cut_off:
        await caught_up(cut_off)
        refused = await claw_back(cut_off, {"user_id": "sam"}, status=503)
        assert refused["error"]["code"] == "unavailable"
        assert (await gw.stats(sale.a))["revoked"] == 0
        await caught_up(cut_off)
        trail = (await (await cut_off.get("/audit?actor=ada", headers=auth("ada"))).json())[
            "entries"
        ]
        assert [(e["type"], e["result"]) for e in trail] == [("admin.claw_back", "unavailable")]

    async with backend_on(str(gw.admin.make_url("")).rstrip("/")) as api:
        answer = await claw_back(api, {"user_id": "sam"})
        assert answer == counts(matched=5, revoked=4, returned=4, redeemed=1)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


async def test_what_the_ledger_has_not_seen_yet_is_counted_as_the_gateway_answers(
    gw: Gateway, api: Client
) -> None:
    short = await gw.put_campaign(stock=5, per_user_limit=5, voucher_ttl_s=1)
    sale = await gw.put_campaign(stock=5, per_user_limit=5)
    lapsed = await grant(gw, short, "eve", "e1", "192.0.2.1")
    used, kept = [await grant(gw, sale, "eve", "e1", "192.0.2.1") for _ in range(2)]
    await caught_up(api)
    # Redeemed after the ledger looked: the gateway's 409 voucher_redeemed says so.
    assert (await gw.redeem(used, user_id="eve", device_id="e1")).status == 200
    await eventually(lambda: expired_by_now(api, lapsed), within_s=30, step=0.1)

    answer = await claw_back(api, {"user_id": "eve"})
    assert answer == counts(matched=3, revoked=1, returned=1, redeemed=1, expired=1)
    assert (await gw.stats(short))["revoked"] == 0  # an expired voucher keeps its unit spent
    assert await redeem_status(gw, kept, "eve", "e1") == (409, "voucher_revoked")


async def expired_by_now(api: Client, code: str) -> bool:
    """The ledger's own view (the wallet computes expiry when read) says the code expired."""
    wallet = await api.get("/v1/users/eve/vouchers", headers={"Authorization": f"Bearer {API_KEY}"})
    vouchers = (await wallet.json())["vouchers"]
    return any(v["voucher_code"] == mask_code(code) and v["state"] == "expired" for v in vouchers)


def test_the_gateway_url_is_configured_or_the_admin_port_on_the_server_host() -> None:
    def url(config: str) -> str:
        return gateway_admin_url(parse('[admin]\ntoken = "t"\n' + config, env={}))

    assert url("") == "http://127.0.0.1:8081"
    assert url('[server]\nhost = "10.0.0.5"\nadmin_port = 9001\n') == "http://10.0.0.5:9001"
    assert url('[server]\nhost = "::"\n') == "http://[::1]:8081"
    assert url('[backend]\ngateway_url = "https://gw.internal:8443/"\n') == (
        "https://gw.internal:8443"
    )
    with pytest.raises(ConfigError, match=r"backend\.gateway_url: must be an http\(s\) URL"):
        url('[backend]\ngateway_url = "gw.internal:8081"\n')
