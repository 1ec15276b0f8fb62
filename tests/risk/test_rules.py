"""Risk rules: the kind registry, defaults and merging, validation messages, assess."""

from __future__ import annotations

import pytest

from risk import (
    KINDS,
    Decision,
    RiskConfigError,
    RiskRule,
    RuleHit,
    assess,
    default_rules,
    fires,
    merge_rules,
    validate_rules,
    velocity_key,
)

DENY = RiskRule("ip_deny", "claims_per_ip", threshold=20, window_s=60)
CHALLENGE = RiskRule(
    "ip_challenge", "claims_per_ip", threshold=10, window_s=60, decision="challenge"
)
SHADOW_DENY = RiskRule("dev_watch", "distinct_users_per_device", 3, 3600, mode="shadow")


def test_every_kind_says_what_it_watches():
    assert set(KINDS) == {
        "claims_per_ip",
        "distinct_users_per_device",
        "distinct_devices_per_user",
        "failed_redemptions_per_ip",
        "failed_redemptions_per_device",
    }
    for kind in KINDS.values():
        assert kind.description
        assert (kind.member is not None) == (kind.counts == "distinct")
    assert (KINDS["failed_redemptions_per_device"].route, KINDS["claims_per_ip"].route) == (
        "redeem",
        "claim",
    )
    assert (KINDS["distinct_users_per_device"].per, KINDS["distinct_users_per_device"].member) == (
        "device",
        "user",
    )


def test_defaults_lock_out_code_guessing():
    assert default_rules() == [
        RiskRule("default_failed_redemptions_per_ip", "failed_redemptions_per_ip", 50, 600),
        RiskRule("default_failed_redemptions_per_device", "failed_redemptions_per_device", 50, 600),
    ]
    assert all(r.decision == "deny" and r.mode == "enforce" for r in default_rules())


def test_merge_keeps_defaults_and_adds_configured():
    assert merge_rules([DENY]) == [*default_rules(), DENY]
    assert merge_rules([]) == default_rules()


def test_a_configured_rule_replaces_the_default_of_its_kind_only():
    stricter = RiskRule("ip_lockout", "failed_redemptions_per_ip", 10, 600, mode="shadow")
    merged = merge_rules([stricter])
    assert [r.id for r in merged] == ["default_failed_redemptions_per_device", "ip_lockout"]


def test_fires_when_this_request_would_exceed_the_threshold():
    lockout = default_rules()[0]
    assert not fires(lockout, 49)  # the 50th failure is still allowed
    assert fires(lockout, 50)  # the 51st attempt after 50 failures is refused
    assert not fires(lockout, 50, is_new=False)  # a known distinct member adds nothing


def test_velocity_key_is_per_rule_and_identity():
    assert velocity_key(DENY, "10.0.0.1") == "rv:ip_deny:10.0.0.1"
    assert velocity_key(CHALLENGE, "10.0.0.1") != velocity_key(DENY, "10.0.0.1")


@pytest.mark.parametrize(
    ("hits", "outcome"),
    [
        ([], "allow"),
        ([(DENY, False), (CHALLENGE, False)], "allow"),
        ([(CHALLENGE, True)], "challenge"),
        ([(DENY, True), (CHALLENGE, True)], "deny"),
        ([(CHALLENGE, True), (DENY, True)], "deny"),
        ([(SHADOW_DENY, True)], "allow"),
        ([(SHADOW_DENY, True), (CHALLENGE, True)], "challenge"),
    ],
)
def test_assess(hits, outcome):
    decision = assess([RuleHit(rule, fired) for rule, fired in hits])
    assert decision == Decision(outcome, tuple(rule for rule, fired in hits if fired))


def test_shadow_hits_are_reported_but_never_block():
    decision = assess([RuleHit(SHADOW_DENY, True), RuleHit(DENY, False)])
    assert decision.outcome == "allow"
    assert decision.fired == (SHADOW_DENY,)


def test_valid_rules_decode_with_defaults():
    raw = [{"id": "ip_challenge", "kind": "claims_per_ip", "threshold": 10, "window_s": 60}]
    raw[0]["decision"] = "challenge"
    assert validate_rules(raw) == [CHALLENGE]
    assert validate_rules([DENY]) == [DENY]


def rule(**overrides):
    base = {"id": "r", "kind": "claims_per_ip", "threshold": 5, "window_s": 60}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "risk.rules must be a list of rules"),
        (
            [rule(id="a"), rule(id="b"), rule(kind="x")],
            "risk.rules[2].kind: unknown kind 'x' (known: claims_per_ip, distinct_users_per_device,"
            " distinct_devices_per_user, failed_redemptions_per_ip, failed_redemptions_per_device)",
        ),
        ([rule(threshold=0)], "risk.rules[0].threshold must be >= 1"),
        ([rule(window_s=0)], "risk.rules[0].window_s must be >= 1"),
        ([rule(threshold=None)], "risk.rules[0].threshold is required"),
        ([rule(extra=1)], "risk.rules[0].extra is not a known key"),
        ([rule(decision="block")], "risk.rules[0].decision must be one of deny, challenge"),
        ([rule(mode="log")], "risk.rules[0].mode must be one of enforce, shadow"),
        ([rule(id="a:b")], "risk.rules[0].id must be 1-64 of A-Z a-z 0-9 _ . -"),
        ([rule(id="")], "risk.rules[0].id must be 1-64 of A-Z a-z 0-9 _ . -"),
        ([rule(id="a"), rule(id="a")], "risk.rules[1].id: duplicate id 'a' (also risk.rules[0])"),
        (
            [rule(id="default_failed_redemptions_per_ip")],
            "risk.rules[0].id: 'default_failed_redemptions_per_ip' is a default's id;"
            " only a failed_redemptions_per_ip rule may use it",
        ),
    ],
)
def test_bad_rules_name_the_key(raw, message):
    with pytest.raises(RiskConfigError) as caught:
        validate_rules(raw)
    assert str(caught.value) == message


def test_a_default_id_may_be_reused_by_its_own_kind():
    raw = [rule(id="default_failed_redemptions_per_ip", kind="failed_redemptions_per_ip")]
    assert [r.id for r in merge_rules(validate_rules(raw))] == [
        "default_failed_redemptions_per_device",
        "default_failed_redemptions_per_ip",
    ]
