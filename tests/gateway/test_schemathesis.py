"""The served /openapi.json tells the truth about the claim and campaign routes (schemathesis).

Schemathesis' CLI generates valid and invalid requests from the document and checks every
answer: never a 5xx, a status the document declares, a body matching the declared schema. Half
the generated campaign ids are swapped for a campaign created beforehand (a schemathesis
dictionary binding), so grants, limits and sold-out answers are checked too, not only 404s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.gateway.test_multiworker import ADMIN
from tests.support.served import API_KEY, serve

CAMPAIGN = "schema-camp"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
OPERATIONS = ("claim", "getCampaign")
CONFIG = f"""
[dictionaries.campaigns]
values = ["{CAMPAIGN}"]

[parameters]
"path.campaign_id" = {{ dictionary = "campaigns", probability = 0.5 }}
"""


def run_schemathesis(tmp_path: Path, public: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        f"{public}/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {API_KEY}",
        "--max-examples",
        "50",
        "--workers",
        "1",
        "--request-timeout",
        "5",
        "--no-color",
    ]
    for operation in OPERATIONS:
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
