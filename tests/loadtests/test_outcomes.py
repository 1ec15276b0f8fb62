"""Which answers the Locust users count as success, and the replay rule (no Locust imported)."""

from __future__ import annotations

import pytest

from loadtests import outcomes
from loadtests.settings import Settings, SettingsError, SpikePlan

GRANT = {
    "claim_id": "c1",
    "campaign_id": "x",
    "user_id": "u",
    "voucher": {"code": "V", "expires_at": "t"},
}


def envelope(code: str) -> dict[str, object]:
    return {"error": {"code": code, "message": "m", "request_id": "r"}}


@pytest.mark.parametrize(
    ("expected", "status", "code"),
    [
        (outcomes.CLAIM, 201, ""),
        (outcomes.CLAIM, 409, "sold_out"),
        (outcomes.CLAIM, 409, "limit_reached"),
        (outcomes.CLAIM, 429, "rate_limited"),
        (outcomes.CLAIM, 403, "risk_denied"),
        (outcomes.GUESS, 404, "voucher_not_found"),
        (outcomes.GUESS, 429, "rate_limited"),
        (outcomes.REDEEM, 200, ""),
        (outcomes.REDEEM, 202, ""),
        (outcomes.REDEEM, 409, "voucher_redeemed"),
    ],
)
def test_business_answers_are_success(expected: outcomes.Expected, status: int, code: str) -> None:
    assert outcomes.problem(expected, status, code) is None


@pytest.mark.parametrize(
    ("expected", "status", "code", "why"),
    [
        (outcomes.CLAIM, 500, "internal", "unexpected 500 internal"),
        (outcomes.CLAIM, 503, "overloaded", "unexpected 503 overloaded"),
        (outcomes.CLAIM, 409, "request_in_progress", "unexpected 409 request_in_progress"),
        (outcomes.CLAIM, 400, "invalid_request", "unexpected 400 invalid_request"),
        (outcomes.CLAIM, 404, "campaign_not_found", "unexpected 404 campaign_not_found"),
        (outcomes.CLAIM, 409, "", "unexpected 409 (no error code)"),
        (outcomes.GUESS, 200, "", "unexpected 200"),
        (outcomes.CLAIM, 0, "", "no response"),
    ],
)
def test_other_answers_are_failures(
    expected: outcomes.Expected, status: int, code: str, why: str
) -> None:
    assert outcomes.problem(expected, status, code) == why


def test_body_decoding() -> None:
    assert outcomes.error_code(outcomes.decode(b'{"error": {"code": "sold_out"}}')) == "sold_out"
    assert outcomes.decode(b"not json") is None
    assert outcomes.decode(b"[1]") is None
    assert outcomes.error_code(None) == ""
    assert outcomes.grant_problem(GRANT) is None
    assert outcomes.grant_problem({"claim_id": "c"}) == "201 without voucher.code"
    assert outcomes.grant_problem(None) == "201 without claim_id"


def test_ambiguous_claims() -> None:
    assert outcomes.claim_maybe_granted(0, "")
    assert outcomes.claim_maybe_granted(500, "internal")
    assert not outcomes.claim_maybe_granted(503, "unavailable")
    assert not outcomes.claim_maybe_granted(409, "sold_out")


def test_replay_of_a_grant_must_repeat_it() -> None:
    first = (201, GRANT)
    assert outcomes.replay_problem(first, (201, dict(GRANT)), "true") is None
    assert outcomes.replay_problem(first, (201, GRANT), "") == (
        "replayed 201 without Idempotent-Replayed"
    )
    other = {**GRANT, "claim_id": "c2"}
    assert "different body" in (outcomes.replay_problem(first, (201, other), "true") or "")
    assert "answered 409 sold_out" in (
        outcomes.replay_problem(first, (409, envelope("sold_out")), "true") or ""
    )


def test_replay_may_be_refused_by_unstored_answers() -> None:
    for status in (429, 503, 403):
        assert outcomes.replay_problem((201, GRANT), (status, envelope("x")), "") is None


def test_replay_of_a_stored_rejection() -> None:
    first = (409, envelope("limit_reached"))
    assert outcomes.replay_problem(first, (409, envelope("limit_reached")), "true") is None
    assert outcomes.replay_problem(first, (201, GRANT), "") is not None
    # sold_out may come from the in-process flag: not stored, any repeat is fine
    assert (
        outcomes.replay_problem((409, envelope("sold_out")), (409, envelope("sold_out")), "")
        is None
    )


def test_spike_plan_ramps_holds_drains_and_stops() -> None:
    plan = SpikePlan(users=100, ramp_s=5, sustain_s=45, drain_s=10)
    assert plan.total_s == 60
    assert plan.at(0) == (100, 20.0)
    assert plan.at(49.9) == (100, 20.0)
    assert plan.at(50) == (0, 10.0)
    assert plan.at(60) is None
    assert SpikePlan(users=10, spawn_rate=3).at(1) == (10, 3)


def test_settings_from_env() -> None:
    plan = SpikePlan.from_env({"SPIKE_USERS": "500", "SPIKE_RAMP_S": "2"})
    assert (plan.users, plan.ramp_rate) == (500, 250.0)
    settings = Settings.from_env({"HOST": "http://h:1/", "EXCLUSIVE": "0", "PER_USER_LIMIT": "2"})
    assert (settings.host, settings.exclusive, settings.per_user_limit) == ("http://h:1", False, 2)
    assert Settings.from_env({}) == Settings()
    with pytest.raises(SettingsError, match="SPIKE_USERS: expected an integer"):
        SpikePlan.from_env({"SPIKE_USERS": "many"})
    with pytest.raises(SettingsError, match="PER_USER_LIMIT: must be >= 1"):
        Settings.from_env({"PER_USER_LIMIT": "0"})
