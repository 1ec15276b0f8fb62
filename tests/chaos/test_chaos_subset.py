"""The chaos suite at its QUICK scale: each implemented scenario runs against real processes
(Valkey, `gateway serve`, the supplier simulator) and must pass every one of its checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import run_one, table
from chaos.scenarios import QUICK, SCENARIOS, Scenario

RUNNABLE = [s for s in SCENARIOS if s.run is not None]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", RUNNABLE, ids=lambda s: f"{s.name}-{s.mode}")
async def test_scenario_survives_its_fault_at_quick_scale(scenario: Scenario) -> None:
    result = await run_one(scenario, QUICK)
    failed = [c for c in result.checks if not c.passed]
    assert result.status == "pass", (result.note, failed, result.figures)
    assert result.checks and result.figures


def test_modes_and_faults_not_on_this_branch_are_todo_rows_never_passes() -> None:
    todo = [s for s in SCENARIOS if s.run is None]
    assert {(s.name, s.mode) for s in todo} >= {
        ("valkey_kill", "fsync"),
        ("valkey_kill", "replica"),
        ("primary_failover", "replica"),
        ("primary_failover", "everysec"),
    }
    assert all(s.todo for s in todo)


async def test_a_todo_row_is_reported_as_todo_with_its_reason(tmp_path: Path) -> None:
    scenario = next(s for s in SCENARIOS if s.run is None)
    result = await run_one(scenario, QUICK)
    assert (result.status, result.checks, result.note) == ("todo", [], scenario.todo)
    printed = table([result], {(scenario.name, scenario.mode): scenario.fault})
    assert f"| {scenario.name} | {scenario.mode} |" in printed and "| TODO |" in printed
