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
LINK_SKU = "ebook-1"  # the simulated suppliers answer a redemption link for this sku


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
        "demo-links": {
            **window,
            "name": "E-book download links",
            "stock": 200,
            "benefit": {"kind": "link", "sku": LINK_SKU, "suppliers": ["alpha", "beta"]},
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


# Reads the voucher code out of a claim's 201 answer, for the redeem steps.
PICK_CODE = (
    ".venv/bin/python -c "
    """'import json,sys; print(json.load(sys.stdin)["voucher"]["code"])'"""
)


def _claim_and_redeem(
    public: str, auth: str, campaign_id: str, key: str, user: str, extra: str = ""
) -> str:
    """A shell snippet: claim (or replay the claim), keep its code, redeem it (200)."""
    who = f'"user_id": "{user}", "device_id": "demo-phone-1"'
    return f"""CODE=$(curl -s {auth} -H 'Idempotency-Key: {key}' \\
  -d '{{{who}}}' \\
  {public}/v1/campaigns/{campaign_id}/claims | {PICK_CODE}) && echo "voucher $CODE" && \\
curl -si {auth} -H 'Idempotency-Key: {key}-redeem' \\
  -d '{{"voucher_code": "'"$CODE"'", {who}{extra}}}' \\
  {public}/v1/redemptions"""


def _print_examples(settings: Settings, public: str, admin: str) -> None:
    """Commands that paste and run as printed, from the repository root (where `make run` is)."""
    api_key = settings.clients[0].api_key
    user = f"demo-user-{secrets.token_hex(3)}"
    key = secrets.token_hex(8)
    auth = f"-H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json'"
    sale, topup, cards, link = (
        _claim_and_redeem(public, auth, "demo-flash-sale", f"{key}-sale", user),
        _claim_and_redeem(
            public, auth, "demo-recharge", f"{key}-topup", user, ', "account": "+15550100"'
        ),
        _claim_and_redeem(public, auth, "demo-cards", f"{key}-cards", user),
        _claim_and_redeem(public, auth, "demo-links", f"{key}-links", user),
    )
    print(
        f"""
Benefits gateway demo is up: public API {public}, admin API {admin}, suppliers on :{SIM_PORT}.
API docs: {public}/docs and {admin}/docs. Run these from the repository root.

# 1. Claim a voucher (201; run it again: same answer, Idempotent-Replayed: true)
curl -si {auth} -H 'Idempotency-Key: {key}-sale' \\
  -d '{{"user_id": "{user}", "device_id": "demo-phone-1"}}' \\
  {public}/v1/campaigns/demo-flash-sale/claims

# 2. Redeem it (200 delivered): the claim again with the same key is a replay, so it hands
#    over the same voucher code (run it again: the same 200, replayed)
{sale}

# 3. A direct recharge (demo-recharge): claim, then redeem to an account through the
#    simulated suppliers (200 delivered, with the supplier and its reference)
{topup}

# 4. A card secret (demo-cards): claim, then redeem (200 delivered, with card_no and secret)
{cards}

# 5. A link (demo-links): claim, then redeem (200 delivered, with the supplier's url;
#    stored sealed, shown to this client only)
{link}

# 6. Campaign state, admin stats, metrics, events. Sold-outs are counted differently: admin
#    stats count only the refusals Valkey decided; /metrics also counts the sold_out answers
#    a worker gave from its in-process sold-out flag without asking Valkey, so after a
#    sell-out /metrics shows more sold_out than the stats do.
curl -s -H 'Authorization: Bearer {api_key}' {public}/v1/campaigns/demo-flash-sale
curl -s -H 'Authorization: Bearer {settings.admin.token}' \\
  {admin}/admin/campaigns/demo-flash-sale/stats
curl -s {public}/metrics | grep gateway_claims_total
.venv/bin/gateway events tail --config config/demo.toml --from-start --no-follow

# make loadtest runs on a campaign of its own; the demo's campaigns stay as they are.
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
    host = Host.claim(settings, workers)
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
            "--knobs",
            orjson.dumps({s: {"link_skus": [LINK_SKU]} for s in ("alpha", "beta")}).decode(),
        ],
    )
    try:
        threading.Thread(target=_set_up, args=(settings,), daemon=True).start()
        return Master(settings, workers=workers, host=host).run()
    finally:
        sim.terminate()
        sim.wait(5)
