"""Named admin users: roles on the admin routes, and who acted (and from where) in every event.

Also the campaign's cost fields (`unit_cost`, `currency`): validated, stored, echoed, evented.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway import codes
from gateway.admin.campaigns import OPTIONAL_FIELDS
from gateway.admin.routes import MIN_ROLE
from gateway.app import SERVICES, create_app
from gateway.settings import parse
from gateway.valkey import keys
from gateway.valkey.library import read_lua
from risk.lists import list_key
from tests.gateway.conftest import campaign_body

ROOT_TOKEN = "root-token-123"  # admin.token: an `admin` named `admin`
TOKENS = {
    "admin": ROOT_TOKEN,
    "olga": "operator-token",  # operator
    "vic": "viewer-token",  # viewer
    "ada": "admin-user-token",  # admin
}
API_KEY = "client-key"
PROXY_CLIENT_IP = "203.0.113.7"

CONFIG = f"""
[server]
max_body_bytes = 4096
trusted_proxies = ["127.0.0.1"]
[admin]
token = "{ROOT_TOKEN}"
[[admin.users]]
name = "olga"
token = "{TOKENS["olga"]}"
role = "operator"
[[admin.users]]
name = "vic"
token = "{TOKENS["vic"]}"
role = "viewer"
[[admin.users]]
name = "ada"
token = "{TOKENS["ada"]}"
role = "admin"
[security]
data_key = "{"B" * 43}="
[[clients]]
id = "app"
api_key = "{API_KEY}"
[[suppliers]]
id = "alpha"
base_url = "http://127.0.0.1:9/s/alpha"
"""


class Admin:
    """The admin and public test clients, calling as a named user."""

    def __init__(self, admin: TestClient[Any, Any], public: TestClient[Any, Any], redis: Any):
        self.admin = admin
        self.public = public
        self.redis = redis

    async def call(
        self,
        user: str | None,
        method: str,
        path: str,
        body: Any = None,
        forwarded_for: str | None = None,
    ) -> Any:
        headers = {}
        if user is not None:
            headers["Authorization"] = f"Bearer {TOKENS.get(user, user)}"
        if forwarded_for is not None:
            headers["X-Forwarded-For"] = forwarded_for
        return await self.admin.request(method, path, json=body, headers=headers)

    async def put_campaign(self, user: str = "admin", **overrides: Any) -> str:
        campaign_id = f"roles-{uuid.uuid4().hex[:8]}"
        response = await self.call(
            user, "PUT", f"/admin/campaigns/{campaign_id}", campaign_body(**overrides)
        )
        assert response.status == 201, await response.text()
        return campaign_id

    async def grant(self, campaign_id: str) -> str:
        response = await self.public.post(
            f"/v1/campaigns/{campaign_id}/claims",
            json={"user_id": "ruth", "device_id": "dev"},
            headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status == 201, await response.text()
        return str((await response.json())["voucher"]["code"])

    async def events(self, stream: str) -> list[dict[str, str]]:
        return [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await self.redis.xrange(stream)
        ]

    async def campaign_events(self, campaign_id: str) -> list[dict[str, str]]:
        return await self.events(keys.events(keys.shard_tag(campaign_id)))


@pytest.fixture
async def gw(valkey_url: str, redis_client: Any) -> AsyncIterator[Admin]:
    public_app, admin_app = create_app(parse(CONFIG, env={}), valkey_url)
    public = TestClient(TestServer(public_app))
    admin = TestClient(TestServer(admin_app))
    await public.start_server()
    await admin.start_server()
    try:
        yield Admin(admin, public, redis_client)
    finally:
        await admin.close()
        await public.close()


async def error(response: Any) -> dict[str, Any]:
    return dict((await response.json())["error"])


# Roles.


async def test_a_viewer_reads_but_may_not_change(gw: Admin) -> None:
    campaign = await gw.put_campaign()
    for path in (f"/admin/campaigns/{campaign}", f"/admin/campaigns/{campaign}/stats"):
        assert (await gw.call("vic", "GET", path)).status == 200
    assert (await gw.call("vic", "GET", "/admin/suppliers")).status == 200
    assert (await gw.call("vic", "HEAD", f"/admin/campaigns/{campaign}")).status == 200

    put = await gw.call("vic", "PUT", f"/admin/campaigns/{campaign}", campaign_body(name="x"))
    assert put.status == 403
    body = await error(put)
    assert body["code"] == "forbidden"
    assert body["message"] and body["request_id"]
    stock = await gw.call("vic", "POST", f"/admin/campaigns/{campaign}/stock", {"add": 5})
    assert stock.status == 403
    pause = await gw.call("vic", "POST", f"/admin/campaigns/{campaign}/pause")
    assert pause.status == 403
    # Refused before anything was written.
    document = await (await gw.call("vic", "GET", f"/admin/campaigns/{campaign}")).json()
    assert (document["name"], document["stock_left"], document["state"]) == ("test", 10, "active")
    assert [e["type"] for e in await gw.campaign_events(campaign)] == ["campaign.created"]


async def test_an_operator_runs_campaigns_but_not_lists_or_suppliers(gw: Admin) -> None:
    campaign = await gw.put_campaign("olga")
    stock = await gw.call("olga", "POST", f"/admin/campaigns/{campaign}/stock", {"add": 5})
    assert stock.status == 200 and (await stock.json())["stock_left"] == 15
    for action in ("pause", "resume"):
        assert (
            await gw.call("olga", "POST", f"/admin/campaigns/{campaign}/{action}")
        ).status == 200
    update = await gw.call("olga", "PUT", f"/admin/campaigns/{campaign}", campaign_body(name="n"))
    assert update.status == 200
    code = await gw.grant(campaign)
    assert (await gw.call("olga", "POST", f"/admin/vouchers/{code}/freeze")).status == 200

    listed = await gw.call("olga", "PUT", "/admin/risk/lists/blocked_users", {"add": ["mallory"]})
    assert listed.status == 403 and (await error(listed))["code"] == "forbidden"
    assert await gw.redis.scard(list_key("blocked_users")) == 0
    forced = await gw.call("olga", "POST", "/admin/suppliers/alpha/force-open")
    assert forced.status == 403 and (await error(forced))["code"] == "forbidden"
    suppliers = await (await gw.call("olga", "GET", "/admin/suppliers")).json()
    assert suppliers["suppliers"][0]["state"] == "closed"


@pytest.mark.parametrize("user", ["ada", "admin"])
async def test_an_admin_may_do_everything(gw: Admin, user: str) -> None:
    campaign = await gw.put_campaign(user)
    calls = [
        ("POST", f"/admin/campaigns/{campaign}/stock", {"add": 1}),
        ("POST", f"/admin/campaigns/{campaign}/pause", None),
        ("POST", f"/admin/campaigns/{campaign}/resume", None),
        ("GET", f"/admin/campaigns/{campaign}/stats", None),
        ("PUT", "/admin/risk/lists/blocked_users", {"add": ["mallory"]}),
        ("POST", "/admin/suppliers/alpha/force-open", None),
        ("POST", "/admin/suppliers/alpha/reset", None),
    ]
    for method, path, body in calls:
        response = await gw.call(user, method, path, body)
        assert response.status == 200, (path, await response.text())


@pytest.mark.parametrize("user", [None, "not-a-token", f"{ROOT_TOKEN}x", ""])
async def test_an_unknown_or_missing_token_is_401(gw: Admin, user: str | None) -> None:
    response = await gw.call(user, "GET", "/admin/suppliers")
    assert response.status == 401
    assert (await error(response))["code"] == "unauthorized"


async def test_unrouted_paths_answer_404_to_any_known_user(gw: Admin) -> None:
    assert (await gw.call("vic", "GET", "/admin/nothing-here")).status == 404
    assert (await gw.call(None, "GET", "/admin/nothing-here")).status == 401


def test_the_role_table_names_a_role_for_every_route() -> None:
    _, admin_app = create_app(parse(CONFIG, env={}), "redis://127.0.0.1:1/0")
    routed = {
        (r.method, r.resource.canonical)
        for r in admin_app.router.routes()
        if r.resource is not None
        and r.method != "HEAD"
        # the API's own description and docs page are open to anyone (docs_page.open_docs)
        and not r.resource.canonical.startswith(("/docs", "/openapi.json"))
    }
    assert routed == set(MIN_ROLE)
    assert {role for (method, _), role in MIN_ROLE.items() if method == "GET"} == {"viewer"}
    assert MIN_ROLE[("PUT", "/admin/risk/lists/{list}")] == "admin"


# Who acted, in the events.


async def test_every_admin_change_names_its_actor_and_ip(gw: Admin) -> None:
    as_olga: dict[str, Any] = {"forwarded_for": PROXY_CLIENT_IP}
    campaign = await gw.put_campaign("olga")  # no X-Forwarded-For: the TCP peer
    c = f"/admin/campaigns/{campaign}"
    assert (await gw.call("olga", "PUT", c, campaign_body(name="n"), **as_olga)).status == 200
    assert (await gw.call("olga", "POST", f"{c}/stock", {"add": 2}, **as_olga)).status == 200
    assert (await gw.call("olga", "POST", f"{c}/pause", **as_olga)).status == 200
    assert (await gw.call("olga", "POST", f"{c}/resume", **as_olga)).status == 200
    cards = {"cards": [{"card_no": "N1", "secret": "S1"}]}
    assert (await gw.call("olga", "POST", f"{c}/card-secrets", cards, **as_olga)).status == 200
    code = await gw.grant(campaign)
    for action in ("freeze", "unfreeze"):
        path = f"/admin/vouchers/{code}/{action}"
        assert (await gw.call("olga", "POST", path, **as_olga)).status == 200
    lists = {"add": ["mallory"]}
    assert (await gw.call("ada", "PUT", "/admin/risk/lists/blocked_users", lists)).status == 200
    for action in ("force-open", "force-closed", "reset"):
        path = f"/admin/suppliers/alpha/{action}"
        assert (await gw.call("admin", "POST", path, forwarded_for="198.51.100.2")).status == 200

    by_type = {
        e["type"]: (e["actor"], e["actor_ip"])
        for e in await gw.campaign_events(campaign)
        if e["type"].startswith("campaign.")
    }
    assert by_type == {
        "campaign.created": ("olga", "127.0.0.1"),
        "campaign.updated": ("olga", PROXY_CLIENT_IP),
        "campaign.stock_changed": ("olga", PROXY_CLIENT_IP),
        "campaign.paused": ("olga", PROXY_CLIENT_IP),
        "campaign.resumed": ("olga", PROXY_CLIENT_IP),
        "campaign.cards_added": ("olga", PROXY_CLIENT_IP),
    }
    vouchers = await gw.events(keys.events(codes.code_tag(code)))
    frozen = [e for e in vouchers if e["type"].startswith("voucher.")]
    assert [(e["type"], e["actor"], e["actor_ip"]) for e in frozen] == [
        ("voucher.frozen", "olga", PROXY_CLIENT_IP),
        ("voucher.unfrozen", "olga", PROXY_CLIENT_IP),
    ]
    admin_events = [
        (e["type"], e["actor"], e["actor_ip"]) for e in await gw.events(keys.ADMIN_EVENTS)
    ]
    assert admin_events == [
        ("risk.list_changed", "ada", "127.0.0.1"),
        ("supplier.force_open", "admin", "198.51.100.2"),
        ("supplier.force_closed", "admin", "198.51.100.2"),
        ("supplier.reset", "admin", "198.51.100.2"),
    ]


async def test_an_untrusted_peer_cannot_choose_its_actor_ip(
    valkey_url: str, redis_client: Any
) -> None:
    config = CONFIG.replace('trusted_proxies = ["127.0.0.1"]', "trusted_proxies = []")
    public_app, admin_app = create_app(parse(config, env={}), valkey_url)
    # The public app's start connects the services both apps share.
    async with TestClient(TestServer(public_app)), TestClient(TestServer(admin_app)) as client:
        response = await client.put(
            "/admin/campaigns/spoof",
            json=campaign_body(),
            headers={"Authorization": f"Bearer {TOKENS['olga']}", "X-Forwarded-For": "10.9.9.9"},
        )
        assert response.status == 201
    events = await redis_client.xrange(keys.events(keys.shard_tag("spoof")))
    assert events[0][1][b"actor_ip"] == b"127.0.0.1"


async def test_a_stock_change_carries_the_stock_before_and_after(gw: Admin) -> None:
    campaign = await gw.put_campaign(stock=10)
    c = f"/admin/campaigns/{campaign}"
    assert (await gw.call("olga", "POST", f"{c}/stock", {"add": 5})).status == 200
    assert (await gw.call("olga", "POST", f"{c}/stock", {"add": -100})).status == 200
    events = await gw.campaign_events(campaign)
    assert (events[0]["stock_added"], events[0]["stock_left"]) == ("10", "10")
    changes = [
        (e["add"], e["stock_left_before"], e["stock_left"], e["stock_added"])
        for e in events
        if e["type"] == "campaign.stock_changed"
    ]
    # A removal past zero is clamped: stock_added moves by what was really removed.
    assert changes == [("5", "10", "15", "15"), ("-100", "15", "0", "0")]


async def test_a_pause_says_whether_the_campaign_was_paused(gw: Admin) -> None:
    campaign = await gw.put_campaign()
    for _ in range(2):
        assert (await gw.call("olga", "POST", f"/admin/campaigns/{campaign}/pause")).status == 200
    paused = [e for e in await gw.campaign_events(campaign) if e["type"] == "campaign.paused"]
    assert [e["paused_before"] for e in paused] == ["0", "1"]


async def test_a_list_change_carries_its_counts_and_size(gw: Admin) -> None:
    path = "/admin/risk/lists/blocked_users"
    assert (await gw.call("ada", "PUT", path, {"add": ["a", "b", "c"]})).status == 200
    assert (await gw.call("ada", "PUT", path, {"add": ["d"], "remove": ["a", "b"]})).status == 200
    events = await gw.events(keys.ADMIN_EVENTS)
    assert [(e["list"], e["added"], e["removed"], e["size"]) for e in events] == [
        ("blocked_users", "3", "0", "3"),
        ("blocked_users", "1", "2", "2"),
    ]


async def test_a_breaker_change_carries_the_state_before_and_after(gw: Admin) -> None:
    for action in ("force-open", "reset"):
        assert (await gw.call("ada", "POST", f"/admin/suppliers/alpha/{action}")).status == 200
    events = await gw.events(keys.ADMIN_EVENTS)
    assert [(e["type"], e["supplier"], e["state_before"], e["state"]) for e in events] == [
        ("supplier.force_open", "alpha", "closed", "forced_open"),
        ("supplier.reset", "alpha", "forced_open", "closed"),
    ]


async def test_a_freeze_event_carries_the_claim_id_never_the_code(gw: Admin) -> None:
    campaign = await gw.put_campaign()
    code = await gw.grant(campaign)
    assert (await gw.call("olga", "POST", f"/admin/vouchers/{code}/freeze")).status == 200
    events = await gw.events(keys.events(codes.code_tag(code)))
    granted = next(e for e in events if e["type"] == "claim.granted")
    frozen = next(e for e in events if e["type"] == "voucher.frozen")
    claim_ids = gw.public.server.app[SERVICES].claim_ids
    assert frozen["claim_id"] == granted["claim_id"] == claim_ids.of(code)
    assert frozen["voucher_code"] == codes.mask_code(code)
    assert code not in json.dumps(frozen)


# Campaign cost fields, and what a campaign update says changed.


async def test_cost_fields_are_stored_echoed_and_evented(gw: Admin) -> None:
    campaign = await gw.put_campaign("olga", unit_cost=250, currency="EUR")
    document = await (await gw.call("vic", "GET", f"/admin/campaigns/{campaign}")).json()
    assert (document["unit_cost"], document["currency"]) == (250, "EUR")
    created = (await gw.campaign_events(campaign))[0]
    assert (created["unit_cost"], created["currency"]) == ("250", "EUR")
    after = json.loads(created["after"])
    assert after["unit_cost"] == "250" and after["per_user_limit"] == "1"
    assert after["name"] == "test" and "before" not in created


async def test_an_update_carries_only_what_changed(gw: Admin) -> None:
    campaign = await gw.put_campaign(unit_cost=250, currency="EUR")
    body = campaign_body(per_user_limit=2, unit_cost=300)  # currency left out: removed
    response = await gw.call("olga", "PUT", f"/admin/campaigns/{campaign}", body)
    assert response.status == 200
    document = await response.json()
    assert document["unit_cost"] == 300 and "currency" not in document
    updated = (await gw.campaign_events(campaign))[-1]
    assert updated["type"] == "campaign.updated"
    assert json.loads(updated["before"]) == {
        "per_user_limit": "1",
        "unit_cost": "250",
        "currency": "EUR",
    }
    assert json.loads(updated["after"]) == {
        "per_user_limit": "2",
        "unit_cost": "300",
        "currency": None,
    }
    assert updated["unit_cost"] == "300" and "currency" not in updated

    again = await gw.call("olga", "PUT", f"/admin/campaigns/{campaign}", body)
    assert again.status == 200
    unchanged = (await gw.campaign_events(campaign))[-1]
    assert (unchanged["before"], unchanged["after"]) == ("{}", "{}")


async def test_a_campaign_without_cost_fields_has_none(gw: Admin) -> None:
    campaign = await gw.put_campaign()
    document = await (await gw.call("vic", "GET", f"/admin/campaigns/{campaign}")).json()
    assert "unit_cost" not in document and "currency" not in document
    created = (await gw.campaign_events(campaign))[0]
    assert "unit_cost" not in created and "currency" not in created


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unit_cost", -1),
        ("unit_cost", "250"),
        ("unit_cost", 2.5),
        ("unit_cost", 10**13),
        ("currency", "eur"),
        ("currency", "EURO"),
        ("currency", "E1R"),
        ("currency", ""),
        ("currency", 978),
    ],
)
async def test_bad_cost_fields_are_400_naming_the_field(gw: Admin, field: str, value: Any) -> None:
    campaign_id = f"bad-{uuid.uuid4().hex[:8]}"
    response = await gw.call(
        "olga", "PUT", f"/admin/campaigns/{campaign_id}", campaign_body(**{field: value})
    )
    assert response.status == 400
    body = await error(response)
    assert body["code"] == "invalid_request"
    assert f"`{field}`" in body["message"]
    assert (await gw.call("olga", "GET", f"/admin/campaigns/{campaign_id}")).status == 404


def test_the_script_removes_the_optional_fields_the_admin_reads() -> None:
    lua = read_lua("gateway.admin", "lua/admin_campaign.lua")
    declared = re.search(r"^local OPTIONAL = \{(.*?)\}$", lua, re.MULTILINE | re.DOTALL)
    assert declared is not None
    assert tuple(re.findall(r"'(\w+)'", declared.group(1))) == OPTIONAL_FIELDS
