"""The backend's HTTP API: auth, envelope, report shapes, CSV, audit, wallet, health."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from backend.http.state import INGESTER
from gateway.codes import mask_code
from gateway.settings import parse
from gateway.valkey import keys
from tests.backend.conftest import backend_client
from tests.gateway.conftest import ADMIN_TOKEN, API_KEY, BASE_CONFIG, OTHER_KEY, Gateway

VIEWER = "viewer-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def api(
    gateway: Gateway, valkey_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    """The backend app on the test's ledger, without its ingest task (tests catch up)."""
    settings = parse(
        BASE_CONFIG + f'[[admin.users]]\nname = "vera"\ntoken = "{VIEWER}"\nrole = "viewer"\n',
        env={},
    )
    async with backend_client(settings, valkey_url, database_url, tmp_path) as client:
        yield client


async def _sync(api: TestClient[Any, Any]) -> None:
    await api.app[INGESTER].catch_up()


async def _json(api: TestClient[Any, Any], path: str, status: int = 200, **kw: Any) -> Any:
    response = await api.get(path, headers=kw.pop("headers", AUTH), **kw)
    assert response.status == status, await response.text()
    return await response.json()


async def test_reports_answer_any_admin_user_and_refuse_others_with_the_envelope(
    api: TestClient[Any, Any],
) -> None:
    await _json(api, "/reports/overview", headers={"Authorization": f"Bearer {VIEWER}"})
    for headers in ({}, {"Authorization": f"Bearer {API_KEY}"}):
        response = await api.get("/reports/overview", headers=headers)
        body = await response.json()
        assert response.status == 401
        assert body["error"]["code"] == "unauthorized"
        assert body["error"]["request_id"] == response.headers["X-Request-Id"]


async def test_unknown_campaign_is_404_and_bad_parameters_are_400(
    api: TestClient[Any, Any],
) -> None:
    body = await _json(api, "/reports/campaigns/nope", 404)
    assert body["error"]["code"] == "campaign_not_found"
    for path in (
        "/audit",
        "/audit?user=a&campaign=b",
        "/audit?voucher=not-a-code",
        "/audit?user=a&limit=0",
        "/reports/overview?format=xml",
        "/reports/suppliers?day=yesterday",
    ):
        assert (await _json(api, path, 400))["error"]["code"] == "invalid_request", path


async def test_campaign_report_has_the_funnel_breakdowns_and_series(
    api: TestClient[Any, Any], gateway: Gateway
) -> None:
    campaign_id = await gateway.put_campaign(stock=3)
    await gateway.admin_call("POST", f"/admin/campaigns/{campaign_id}/stock", {"add": -1})
    for user in ("a", "b", "a"):
        await gateway.claim(campaign_id, user_id=user)
    await gateway.claim(campaign_id, user_id="c", api_key=OTHER_KEY)
    code = await gateway.grant(await gateway.put_campaign(stock=1))
    await gateway.redeem(code)
    await _sync(api)
    report = await _json(api, f"/reports/campaigns/{campaign_id}")
    stats = await gateway.stats(campaign_id)
    assert report["funnel"] == {
        "stock_added": stats["stock_added"],
        "stock_left": stats["stock_left"],
        "granted": 2,
        "redeemed": 0,
        "redemption_rate": 0.0,
        "expired": 0,
        "frozen": 0,
        "revoked": 0,
        "returned": 0,
    }
    assert report["rejected"] == stats["rejected"] == {"limit_reached": 1, "sold_out": 1}
    assert report["by_client"] == {
        "app": {"granted": 2, "rejected": 1, "redeemed": 0},
        "other": {"granted": 0, "rejected": 1, "redeemed": 0},
    }
    assert sum(p["granted"] for p in report["series"]) == 2
    assert report["sell_out"]["seconds"] >= 0
    assert report["cost"] is None
    overview = await _json(api, "/reports/overview")
    assert {c["campaign_id"] for c in overview["campaigns"]} >= {campaign_id}


async def test_reports_come_as_csv_on_request(api: TestClient[Any, Any], gateway: Gateway) -> None:
    campaign_id = await gateway.put_campaign(stock=2)
    await gateway.grant(campaign_id)
    await _sync(api)
    response = await api.get("/reports/overview?format=csv", headers=AUTH)
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [(r["campaign_id"], r["granted"]) for r in rows] == [(campaign_id, "1")]
    response = await api.get(f"/reports/campaigns/{campaign_id}?format=csv", headers=AUTH)
    lines = list(csv.reader(io.StringIO(await response.text())))
    assert lines[0] == ["metric", "value"]
    assert ["funnel.granted", "1"] in lines


async def test_audit_of_a_voucher_shows_its_life_in_order_with_the_code_masked(
    api: TestClient[Any, Any], gateway: Gateway
) -> None:
    campaign_id = await gateway.put_campaign(stock=2)
    code = await gateway.grant(campaign_id, user_id="ruth")
    await gateway.admin_call("POST", f"/admin/vouchers/{code}/freeze")
    await gateway.admin_call("POST", f"/admin/vouchers/{code}/unfreeze")
    assert (await gateway.redeem(code, user_id="ruth")).status == 200
    await gateway.grant(campaign_id, user_id="sam")  # another voucher: not in this audit
    await _sync(api)
    response = await api.get(f"/audit?voucher={code.lower()}", headers=AUTH)
    text = await response.text()
    entries = (await response.json())["entries"]
    assert [e["type"] for e in entries] == [
        "claim.granted",
        "voucher.frozen",
        "voucher.unfrozen",
        "redemption.delivered",
    ]
    assert {e["voucher_code"] for e in entries} == {mask_code(code)}
    assert entries[0]["client_id"] == "app" and entries[0]["user_id"] == "ruth"
    assert code not in text
    by_user = await _json(api, "/audit?user=sam")
    assert [e["type"] for e in by_user["entries"]] == ["claim.granted"]
    by_campaign = await _json(api, f"/audit?campaign={campaign_id}")
    assert by_campaign["entries"][0]["type"] == "campaign.created"


async def test_audit_by_actor_finds_the_events_an_operator_caused(
    api: TestClient[Any, Any], redis_client: Any
) -> None:
    stream = keys.ADMIN_EVENTS
    await redis_client.sadd(keys.EVENT_STREAMS, stream)
    for actor in ("ann", "bob", "ann"):
        fields = {"type": "risk.list_changed", "ts": "2026-01-01T00:00:00Z", "actor": actor}
        await redis_client.xadd(stream, fields | {"actor_ip": "10.0.0.1", "list": "blocked_ips"})
    await _sync(api)
    entries = (await _json(api, "/audit?actor=ann"))["entries"]
    assert [(e["actor"], e["actor_ip"], e["list"]) for e in entries] == [
        ("ann", "10.0.0.1", "blocked_ips")
    ] * 2


async def test_the_wallet_shows_a_clients_own_vouchers_newest_first_in_pages(
    api: TestClient[Any, Any], gateway: Gateway
) -> None:
    codes = []
    for _ in range(5):
        codes.append(await gateway.grant(await gateway.put_campaign(stock=1), user_id="ruth"))
        await asyncio.sleep(0.002)  # distinct grant times
    await gateway.claim(await gateway.put_campaign(stock=1), user_id="ruth", api_key=OTHER_KEY)
    await gateway.admin_call("POST", f"/admin/vouchers/{codes[-1]}/freeze")
    await _sync(api)
    own = {"Authorization": f"Bearer {API_KEY}"}
    first = await _json(api, "/v1/users/ruth/vouchers?limit=3", headers=own)
    second = await _json(
        api, f"/v1/users/ruth/vouchers?limit=3&cursor={first['next']}", headers=own
    )
    listed = [v["voucher_code"] for v in first["vouchers"] + second["vouchers"]]
    assert listed == [mask_code(c) for c in reversed(codes)]
    assert second["next"] is None
    assert first["vouchers"][0]["state"] == "frozen"
    assert {v["state"] for v in second["vouchers"]} == {"issued"}
    assert all(v["expires_at"].endswith("Z") for v in first["vouchers"])
    other = await _json(
        api, "/v1/users/ruth/vouchers", headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert len(other["vouchers"]) == 1
    assert (await _json(api, "/v1/users/ruth/vouchers", 401))["error"]["code"] == "unauthorized"
    bad = await _json(api, "/v1/users/ruth/vouchers?cursor=zz", 400, headers=own)
    assert bad["error"]["code"] == "invalid_request"


async def test_supplier_report_counts_calls_and_latency_percentiles_per_day(
    api: TestClient[Any, Any], redis_client: Any
) -> None:
    stream, breakers = keys.events("EF"), keys.events(keys.SUPPLIER_TAG)
    for s in (stream, breakers):
        await redis_client.sadd(keys.EVENT_STREAMS, s)
    call = {"type": "supplier.call", "ts": "2026-01-02T03:04:05.000Z", "supplier": "alpha"}
    for latency in range(1, 101):
        fields = {"outcome": "success", "op": "place", "latency_ms": str(latency)}
        await redis_client.xadd(stream, call | fields | {"failover": str(latency % 2)})
    await redis_client.xadd(stream, call | {"outcome": "rejected_open", "failover": "0"})
    # the next UTC day, written in another zone; and a redemption event naming a supplier,
    # which no longer counts as a call
    await redis_client.xadd(
        stream, call | {"ts": "2026-01-03T08:00:00+08:00", "outcome": "unknown", "latency_ms": "9"}
    )
    delivered = {"type": "redemption.delivered", "ts": "2026-01-02T03:04:05Z"}
    await redis_client.xadd(
        stream, delivered | {"campaign_id": "c", "voucher_code": "EF12…XYZ", "user_id": "u"}
    )
    opened = {"type": "supplier.breaker_opened", "supplier": "alpha", "from_state": "closed"}
    for ts in ("2026-01-02T03:04:06.000Z", "2026-01-02T05:00:00.000Z"):
        await redis_client.xadd(breakers, opened | {"ts": ts})
    await redis_client.xadd(breakers, opened | {"supplier": "beta", "ts": "2026-01-02T06:00:00Z"})
    await _sync(api)
    rows = (await _json(api, "/reports/suppliers?day=2026-01-02"))["suppliers"]
    assert rows == [  # every row names every outcome of the answer (one CSV column each)
        {
            "supplier": "alpha",
            "day": "2026-01-02",
            "calls": {"rejected_open": 1, "success": 100},
            "p50_ms": 51,  # refusals made no call: no latency
            "p99_ms": 100,
            "failovers": 50,
            "breaker_openings": 2,
        },
        {
            "supplier": "beta",
            "day": "2026-01-02",
            "calls": {"rejected_open": 0, "success": 0},
            "p50_ms": None,
            "p99_ms": None,
            "failovers": 0,
            "breaker_openings": 1,
        },
    ]
    every = (await _json(api, "/reports/suppliers"))["suppliers"]
    assert [(r["supplier"], r["day"]) for r in every] == [
        ("alpha", "2026-01-02"),
        ("alpha", "2026-01-03"),  # 2026-01-03T00:00Z
        ("beta", "2026-01-02"),
    ]
    assert every[1]["calls"] == {"rejected_open": 0, "success": 0, "unknown": 1}
    response = await api.get("/reports/suppliers?format=csv&day=2026-01-02", headers=AUTH)
    assert response.headers["Content-Type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(await response.text())))
    assert lines[0]["calls.success"] == "100" and lines[0]["breaker_openings"] == "2"
    assert lines[1]["supplier"] == "beta" and lines[1]["p50_ms"] == ""
    bad = await _json(api, "/reports/suppliers?day=2026-13", 400)
    assert bad["error"]["code"] == "invalid_request"


async def test_health_readiness_and_metrics(api: TestClient[Any, Any]) -> None:
    assert (await api.get("/healthz")).status == 200
    assert await _json(api, "/readyz", headers={}) == {"database": True, "valkey": True}
    text = await (await api.get("/metrics")).text()
    for name in (
        "backend_events_ingested_total",
        "backend_ingest_lag_seconds",
        "backend_pending_events",
    ):
        assert name in text
