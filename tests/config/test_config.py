"""Configuration: one bad fixture per kind of error, each message naming the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import ConfigError, load, parse

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

EXPECTED = {
    "bad_port_type.toml": "server.port: Expected `int`, got `str`",
    "bad_port_range.toml": "server.port: must be 0..65535",
    "bad_missing_admin_token.toml": "admin.token: required",
    "bad_redis_url.toml": "redis.url: must be 'embedded'",
    "bad_data_key.toml": "security.data_key: must decode to 32 bytes",
    "bad_duplicate_client.toml": "clients[1].id: duplicate client id 'app'",
    "bad_signature_without_secret.toml": "clients[0].secret: required when require_signature",
    "bad_supplier_url.toml": "suppliers[0].base_url: must be an http(s) URL",
    "bad_limit_window.toml": "limits.claim[0].window_s must be >= 1",
    "bad_limit_dimension.toml": "limits.claim[0].by must be one of",
    "bad_limit_route.toml": "limits.checkout: unknown route 'checkout'",
    "bad_rule_kind.toml": "risk.rules[0].kind: unknown kind 'moon_phase'",
    "bad_rule_mode.toml": "risk.rules[0].mode must be one of enforce, shadow",
    "bad_trusted_proxy.toml": "server.trusted_proxies[1]: not an address or CIDR",
    "bad_unknown_key.toml": "server.workerz: unknown key",
    "bad_toml_syntax.toml": "config: not valid TOML",
    "bad_admin_duplicate_name.toml": "admin.users[1].name: duplicate admin user name 'olga'",
    "bad_admin_reused_token.toml": "admin.users[1].token: the same token is given to two",
    "bad_admin_role.toml": "admin.users[0].role: Invalid enum value 'root'",
    # durability and failover (SPEC 5a, 7)
    "bad_redis_durability.toml": "redis.durability: Invalid enum value 'always'",
    "bad_redis_durability_timeout.toml": "redis.durability_timeout_ms: must be 1..60000",
    "bad_redis_replica_embedded.toml": "redis.durability: 'replica' needs a Valkey with a replica",
    "bad_redis_sentinel_url.toml": "redis.url: a Sentinel URL is redis+sentinel://host:port",
}


def test_every_bad_fixture_has_an_expected_message() -> None:
    assert sorted(p.name for p in HERE.glob("bad_*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_is_refused_with_a_message_naming_the_key(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(HERE / name, env={})
    assert str(caught.value).startswith(EXPECTED[name])


def test_check_config_cli_exits_2_and_names_the_key() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(HERE / "bad_limit_window.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "limits.claim[0].window_s" in result.stderr


@pytest.mark.parametrize("path", ["config/demo.toml", "bench/gateway.toml"])
def test_shipped_configs_are_valid(path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(ROOT / path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{ROOT / path}: ok")


def test_environment_overrides_secrets() -> None:
    raw = b'[admin]\ntoken = "file"\n[[clients]]\nid = "shop-app.eu"\napi_key = "file-key"\n'
    settings = parse(
        raw,
        env={
            "GATEWAY_ADMIN_TOKEN": "env-token",
            "GATEWAY_CLIENT_SHOP_APP_EU_API_KEY": "env-key",
            "GATEWAY_CLIENT_SHOP_APP_EU_CHALLENGE_SECRET": "env-challenge",
            "GATEWAY_DATA_KEY": "A" * 43 + "=",
        },
    )
    assert settings.admin.token == "env-token"
    assert settings.clients[0].api_key == "env-key"
    assert settings.clients[0].challenge_secret == "env-challenge"
    assert settings.security.data_key == "A" * 43 + "="


def test_admin_token_may_come_only_from_the_environment() -> None:
    settings = parse(b"", env={"GATEWAY_ADMIN_TOKEN": "only-env"})
    assert settings.admin.token == "only-env"


def test_configured_rule_replaces_the_default_of_its_kind() -> None:
    raw = b"""[admin]
token = "t"
[[risk.rules]]
id = "strict_guessing"
kind = "failed_redemptions_per_ip"
threshold = 10
window_s = 300
"""
    rules = {r.kind: r for r in parse(raw, env={}).risk_rules}
    assert rules["failed_redemptions_per_ip"].threshold == 10
    assert rules["failed_redemptions_per_device"].threshold == 50


def test_check_config_reports_every_planted_error_in_one_run(tmp_path: Path) -> None:
    planted = tmp_path / "two_errors.toml"
    planted.write_text(
        '[server]\nworkerz = 4\nport = 70000\n[redis]\nurl = "memcached://x"\n'
        '[admin]\ntoken = "t"\n[[suppliers]]\nid = "a"\nbase_url = "ftp://x"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(planted)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    for problem in (
        "server.workerz: unknown key (did you mean `workers`?)",
        "server.port: must be 0..65535, got 70000",
        "redis.url: must be 'embedded'",
        "suppliers[0].base_url: must be an http(s) URL",
    ):
        assert problem in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistyped_section_is_reported_once_and_the_others_still_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("[admin]\ntoken = 5\n[server]\nworkers = 0\n", env={})
    assert caught.value.problems == [
        "admin.token: Expected `str`, got `int`",
        "server.workers: must be 1..256, got 0",
    ]


def test_admin_token_is_an_admin_named_admin_beside_the_named_users() -> None:
    raw = b"""[admin]
token = "root-token"
[[admin.users]]
name = "vic"
token = "viewer-token"
role = "viewer"
"""
    operators = parse(raw, env={}).admin.operators
    assert [(u.name, u.token, u.role) for u in operators] == [
        ("admin", "root-token", "admin"),
        ("vic", "viewer-token", "viewer"),
    ]


def test_named_users_alone_need_no_admin_token() -> None:
    raw = b'[[admin.users]]\nname = "ada"\ntoken = "admin-token"\nrole = "admin"\n'
    assert [u.name for u in parse(raw, env={}).admin.operators] == ["ada"]


def test_a_named_user_may_not_take_the_name_admin_beside_admin_token() -> None:
    raw = b"""[admin]
token = "root-token"
[[admin.users]]
name = "admin"
token = "other-token"
role = "viewer"
"""
    with pytest.raises(ConfigError, match=r"admin.users\[0\].name: duplicate admin user name"):
        parse(raw, env={})
