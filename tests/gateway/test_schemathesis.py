"""The served /openapi.json tells the truth about the public and the admin routes (schemathesis).

Schemathesis' CLI generates valid and invalid requests from the document and checks every
answer: never a 5xx, a status the document declares, a body matching the declared schema. Half
the generated campaign ids are swapped for a campaign created beforehand (a schemathesis
dictionary binding), so grants, limits and sold-out answers are checked too, not only 404s.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.gateway.test_multiworker import ADMIN
from tests.support.served import ADMIN_TOKEN, API_KEY, serve

CAMPAIGN = "schema-camp"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
OPERATIONS = ("claim", "getCampaign")
CONFIG = f"""
[dictionaries.campaigns]
values = ["{CAMPAIGN}"]

[parameters]
"path.campaign_id" = {{ dictionary = "campaigns", probability = 0.5 }}
"""


def run_schemathesis(
    tmp_path: Path,
    base: str,
    operations: tuple[str, ...] = OPERATIONS,
    token: str = API_KEY,
    max_examples: int = 50,
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--request-timeout",
        "5",
        "--no-color",
    ]
    for operation in operations:
        command += ["--include-operation-id", operation]
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False
    )


async def test_claim_and_campaign_routes_conform_to_the_served_openapi_document(
    tmp_path: Path, valkey_url: str, redis_client: Any
) -> None:
    with serve(tmp_path, valkey_url, workers=1) as served:
        body = {
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2099-01-01T00:00:00Z",
            "stock": 1_000_000,
            "per_user_limit": 1,
            "benefit": {"kind": "voucher"},
        }
        async with aiohttp.ClientSession() as session:
            async with session.put(
                f"{served.admin}/admin/campaigns/{CAMPAIGN}", json=body, headers=ADMIN
            ) as response:
                assert response.status == 201
            result = run_schemathesis(tmp_path, served.public)
            async with session.get(
                f"{served.admin}/admin/campaigns/{CAMPAIGN}/stats", headers=ADMIN
            ) as response:
                stats = await response.json()

    report = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout, report
    assert "Tested: 2" in result.stdout, report  # both operations ran
    # The run reached the real campaign: its grants and rejections were checked too.
    assert stats["granted"] > 0, (stats, report)
    assert stats["rejected"].get("limit_reached", 0) > 0, (stats, report)


# Every admin operation but the supplier breakers (the served config has no suppliers: 404s).
ADMIN_OPERATIONS = (
    "putCampaign",
    "getCampaign",
    "changeStock",
    "pauseCampaign",
    "resumeCampaign",
    "campaignStats",
    "addCardSecrets",
    "freezeVoucher",
    "unfreezeVoucher",
    "updateRiskList",
    "listSuppliers",
)


async def test_admin_routes_conform_to_the_admin_ports_openapi_document(
    tmp_path: Path, valkey_url: str, redis_client: Any
) -> None:
    with serve(tmp_path, valkey_url, workers=1) as served:
        async with aiohttp.ClientSession() as session:
            body = {
                "starts_at": "2020-01-01T00:00:00Z",
                "ends_at": "2099-01-01T00:00:00Z",
                "stock": 10,
                "benefit": {"kind": "card_secret"},
            }
            async with session.put(
                f"{served.admin}/admin/campaigns/{CAMPAIGN}", json=body, headers=ADMIN
            ) as response:
                assert response.status == 201
        result = run_schemathesis(
            tmp_path, served.admin, ADMIN_OPERATIONS, ADMIN_TOKEN, max_examples=15
        )
    report = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    # Warnings (404s for random voucher codes, 400s for random campaign windows) are expected.
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 100, report
    assert f"Tested: {len(ADMIN_OPERATIONS)}" in result.stdout, report
