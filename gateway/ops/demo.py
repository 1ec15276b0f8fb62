"""`gateway demo`: embedded Valkey, the supplier simulator, demo campaigns, example requests."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from gateway.ops.host import Host
from gateway.ops.server import Master
from gateway.settings import Settings, load

SIM_PORT = 9100


def _request(method: str, url: str, token: str, body: object | None = None) -> int:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait_ready(base: str, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _campaigns() -> dict[str, dict[str, object]]:
    now = datetime.now(UTC)
    window = {
        "starts_at": (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ends_at": (now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "per_user_limit": 1,
        "per_device_limit": 3,
        "voucher_ttl_s": 7 * 86400,
    }
    return {
        "demo-flash-sale": {
            **window,
            "name": "Video membership flash sale",
            "stock": 1000,
            "benefit": {"kind": "voucher", "sku": "video-1m"},
        },
        "demo-recharge": {
            **window,
            "name": "Phone top-up",
            "stock": 500,
            "benefit": {
                "kind": "direct_recharge",
                "sku": "topup-10",
                "suppliers": ["alpha", "beta"],
            },
        },
        "demo-cards": {
            **window,
            "name": "Gift cards",
            "stock": 50,
            "benefit": {"kind": "card_secret", "sku": "gift-25"},
        },
    }


def _set_up(settings: Settings) -> None:
    public = f"http://127.0.0.1:{settings.server.port}"
    admin = f"http://127.0.0.1:{settings.server.admin_port}"
    if not _wait_ready(public):
        print("demo: the gateway did not become ready", file=sys.stderr)
        return
    token = settings.admin.token
    for campaign_id, body in _campaigns().items():
        _request("PUT", f"{admin}/admin/campaigns/{campaign_id}", token, body)
    cards = [{"card_no": f"GC-{i:04d}", "secret": secrets.token_hex(6)} for i in range(50)]
    _request("POST", f"{admin}/admin/campaigns/demo-cards/card-secrets", token, {"cards": cards})
    _print_examples(settings, public, admin)


def _print_examples(settings: Settings, public: str, admin: str) -> None:
    api_key = settings.clients[0].api_key
    user = f"demo-user-{secrets.token_hex(3)}"
    key = secrets.token_hex(8)
    auth = f"-H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json'"
    print(
        f"""
Benefits gateway demo is up: public API {public}, admin API {admin}, suppliers on :{SIM_PORT}.

# 1. Claim a voucher (201; run it again: same answer, Idempotent-Replayed: true)
curl -si {auth} -H 'Idempotency-Key: {key}' \\
  -d '{{"user_id": "{user}", "device_id": "demo-phone-1"}}' \\
  {public}/v1/campaigns/demo-flash-sale/claims

# 2. Redeem it (paste the voucher code from step 1)
curl -si {auth} -H 'Idempotency-Key: {key}-redeem' \\
  -d '{{"voucher_code": "<code>", "user_id": "{user}", "device_id": "demo-phone-1"}}' \\
  {public}/v1/redemptions

# 3. A direct recharge through the simulated suppliers (claim, then redeem with an account)
curl -si {auth} -H 'Idempotency-Key: {key}-topup' \\
  -d '{{"user_id": "{user}", "device_id": "demo-phone-1"}}' \\
  {public}/v1/campaigns/demo-recharge/claims

# 4. Campaign state, admin stats, metrics, events
curl -s -H 'Authorization: Bearer {api_key}' {public}/v1/campaigns/demo-flash-sale
curl -s -H 'Authorization: Bearer {settings.admin.token}' \\
  {admin}/admin/campaigns/demo-flash-sale/stats
curl -s {public}/metrics | grep gateway_claims_total
.venv/bin/gateway events tail --config config/demo.toml --from-start
""",
        flush=True,
    )


def run_demo(config: str, workers: int | None = None) -> int:
    """Start everything in the foreground; Ctrl-C stops it all."""
    from gateway.telemetry import logs

    logs.configure("WARNING")
    settings = load(config)
    # The host first: a second demo (or a gateway on these ports) is refused before the
    # running one's data is touched.
    host = Host.claim(settings)
    if host.lock is not None and Path(settings.redis.data_dir).parts[:1] == ("var",):
        host.lock.wipe()  # a fresh demo every time
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "supplier-sim",
            "--port",
            str(SIM_PORT),
            "--supplier",
            "alpha",
            "--supplier",
            "beta",
        ],
    )
    try:
        threading.Thread(target=_set_up, args=(settings,), daemon=True).start()
        return Master(settings, workers=workers, host=host).run()
    finally:
        sim.terminate()
        sim.wait(5)
