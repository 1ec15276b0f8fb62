"""`gateway preflight`: the campaign rehearsal prints its report and checks the invariants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.ops.preflight import Campaign, Rehearsal, Spiker, invariants

ROOT = Path(__file__).resolve().parent.parent


def test_preflight_of_the_demo_campaign_prints_the_report_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "preflight", str(ROOT / "config/demo-campaign.toml")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert set(lines) >= {"requests", "sell-out", "latency", "answers", "stats", "invariants"}
    assert "granted 500, left 0" in lines["stats"]
    assert lines["invariants"].split()[-1] == "ok"


def _spiker(granted: dict[str, list[str]]) -> Spiker:
    rehearsal = Rehearsal(campaign=Campaign(id="c", stock=2))
    spiker = Spiker(rehearsal, "http://unused")
    for user, ids in granted.items():
        spiker.granted[user] = ids
        for claim_id in ids:
            spiker.by_key[f"key-{claim_id}"].add(claim_id)
    return spiker


def test_invariants_flag_an_oversell_and_a_user_over_allowance() -> None:
    spiker = _spiker({"u1": ["a", "b"], "u2": ["c"]})
    stats = {"granted": 3, "stock_added": 2, "stock_left": 0}
    breaches = invariants(spiker.rehearsal, spiker, stats)
    assert any(b.startswith("oversold") for b in breaches)
    assert any("over their allowance" in b for b in breaches)


def test_invariants_hold_for_a_clean_sale() -> None:
    spiker = _spiker({"u1": ["a"], "u2": ["b"]})
    stats = {"granted": 2, "stock_added": 2, "stock_left": 0}
    assert invariants(spiker.rehearsal, spiker, stats) == []
