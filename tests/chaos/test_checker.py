"""The checker finds each breach it is there to find, in planted histories and order logs."""

from __future__ import annotations

import pytest

from chaos import checker
from chaos.recorder import History, Op, classify


def grant(key: str, user: str, code: str, started: float = 0.0, campaign: str = "c") -> Op:
    return Op("claim", key, user, started, 0.01, "ok", 201, value=code, campaign=campaign)


def test_two_vouchers_for_one_key_or_one_user_are_duplicates() -> None:
    clean = History([grant("k1", "u1", "A"), grant("k1", "u1", "A"), grant("k2", "u2", "B")])
    assert checker.duplicate_grants(clean) == 0
    same_key = History([grant("k1", "u1", "A"), grant("k1", "u1", "B")])
    assert checker.duplicate_grants(same_key) == 2  # the key and the user
    same_user = History([grant("k1", "u1", "A"), grant("k2", "u1", "B")])
    assert checker.duplicate_grants(same_user) == 1


def test_oversell_counts_by_the_gateway_and_by_distinct_vouchers_seen() -> None:
    history = History([grant(f"k{i}", f"u{i}", f"C{i}") for i in range(3)])
    history.ops.append(grant("k9", "u9", "X", campaign="other"))
    assert checker.oversell(history, {"campaign_id": "c", "stock_added": 3, "granted": 3}) == 0
    assert checker.oversell(history, {"campaign_id": "c", "stock_added": 3, "granted": 5}) == 2
    assert checker.oversell(history, {"campaign_id": "c", "stock_added": 2, "granted": 2}) == 1


def test_a_grant_replayed_to_a_key_first_answered_unknown_was_hidden_by_the_unknown() -> None:
    unknown = Op("claim", "k1", "u1", 0.0, 0.5, "unknown", 503, code="unavailable")
    replayed = grant("k1", "u1", "A")
    replayed.replayed = True
    fresh = grant("k2", "u2", "B")
    assert checker.hidden_grants(History([unknown, replayed, fresh])) == 1
    assert checker.hidden_grants(History([unknown, grant("k1", "u1", "A")])) == 0


def test_a_second_successful_order_for_a_redemption_or_voucher_is_a_double_delivery() -> None:
    once = [
        {"order_id": "r1", "account": "V1", "status": "success"},
        {"order_id": "r2", "account": "V1", "status": "failed"},
    ]
    assert checker.double_deliveries(once) == 0
    twice = [*once, {"order_id": "r3", "account": "V1", "status": "success"}]
    assert checker.double_deliveries(twice) == 1


def test_recovery_is_measured_from_the_fault_to_the_first_answer_sent_after_it() -> None:
    history = History([grant("k1", "u1", "A", started=9.0), grant("k2", "u2", "B", started=10.5)])
    assert checker.recovery_s(history, 10.0) == pytest.approx(0.51)
    assert checker.recovery_s(History(), 10.0) == float("inf")


def test_timeouts_and_outcome_unknown_503s_are_unknown_plain_refusals_are_not() -> None:
    error = {"error": {"code": "unavailable"}}
    assert classify(503, error, {"Outcome-Unknown": "true"}) == ("unknown", "unavailable")
    assert classify(503, error, {}) == ("refused", "unavailable")
    assert classify(502, "bad gateway", {}) == ("unknown", "502")
    assert classify(409, {"error": {"code": "sold_out"}}, {}) == ("refused", "sold_out")
    assert classify(201, {}, {}) == ("ok", "")


def test_a_lost_grant_counts_back_from_the_first_fault_after_its_request_was_sent() -> None:
    history = History(
        [
            # Sent 0.8 s before the fault at 10.0, answered just after it: lost in that fault.
            Op("claim", "k1", "u1", 9.2, 0.81, "ok", 201, value="V1"),
            Op("claim", "k2", "u2", 9.9, 0.05, "ok", 201, value="V2"),
            Op("claim", "k3", "u3", 12.0, 0.01, "ok", 201, value="KEPT"),
        ]
    )
    assert checker.loss_window_s(history, {"V1", "V2"}, [10.0, 15.0]) == pytest.approx(0.8)
    assert checker.loss_window_s(history, set(), [10.0, 15.0]) == 0.0
