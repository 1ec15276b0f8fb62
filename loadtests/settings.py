"""Load-test settings from the environment, and the flash-sale spike plan.

Nothing here imports Locust, so tests and the invariant CLI can use it without gevent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPORT_DIR = Path(__file__).resolve().parent / "reports"
# A spike user claims about once a second and scalpers faster: 10 units per user sell out
# within the default minute, so the sale's end (sold_out answers) is exercised too.
STOCK_PER_USER = 10


class SettingsError(ValueError):
    """An environment variable holds a value the load test cannot use; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class SpikePlan:
    """A flash-sale spike: ramp to `users` within `ramp_s`, hold for `sustain_s`, drain to 0."""

    users: int = 100
    spawn_rate: float = 0.0  # users per second while ramping; 0 means users / ramp_s
    ramp_s: float = 5.0
    sustain_s: float = 45.0
    drain_s: float = 10.0

    @property
    def total_s(self) -> float:
        """Seconds from start until the shape stops the test."""
        return self.ramp_s + self.sustain_s + self.drain_s

    @property
    def ramp_rate(self) -> float:
        """Users started per second during the ramp (at least 1)."""
        if self.spawn_rate > 0:
            return self.spawn_rate
        return max(1.0, self.users / max(self.ramp_s, 0.001))

    def at(self, elapsed_s: float) -> tuple[int, float] | None:
        """(target users, spawn rate) at `elapsed_s` seconds, or None once the spike is over."""
        if elapsed_s < self.ramp_s + self.sustain_s:
            return self.users, self.ramp_rate
        if elapsed_s < self.total_s:
            return 0, max(1.0, self.users / max(self.drain_s, 0.001))
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SpikePlan:
        """Read SPIKE_USERS, SPIKE_SPAWN_RATE, SPIKE_RAMP_S, SPIKE_SUSTAIN_S, SPIKE_DRAIN_S."""
        env = os.environ if env is None else env
        return cls(
            users=_int(env, "SPIKE_USERS", cls.users, minimum=1),
            spawn_rate=_float(env, "SPIKE_SPAWN_RATE", cls.spawn_rate),
            ramp_s=_float(env, "SPIKE_RAMP_S", cls.ramp_s),
            sustain_s=_float(env, "SPIKE_SUSTAIN_S", cls.sustain_s),
            drain_s=_float(env, "SPIKE_DRAIN_S", cls.drain_s),
        )


@dataclass(frozen=True)
class Settings:
    """Where the gateway is and how the simulated crowd behaves."""

    host: str = "http://127.0.0.1:8080"
    api_key: str = "demo-key"
    campaign: str = ""  # "": `python -m loadtests.run` creates one for the run
    admin_url: str = "http://127.0.0.1:8081"
    admin_token: str = "demo-admin-token"
    per_user_limit: int = 1
    per_device_limit: int = 0  # 0: not checked (scalpers share devices on purpose)
    exclusive: bool = True  # the load test is the only client of the campaign during the run
    replay_ratio: float = 0.2  # share of honest claims retried with the same Idempotency-Key
    scalper_devices: int = 3
    forwarded_for: bool = True  # send X-Forwarded-For with a simulated end-user address
    redeem_account: str = ""  # sent as `account` when set (direct_recharge benefits)
    report_dir: Path = REPORT_DIR
    stock: int = 0  # the run's campaign; 0: STOCK_PER_USER x SPIKE_USERS
    # Honest redemptions that must succeed (200/202); the rest may be refused or fail.
    min_redeem_rate: float = 0.99
    # The gateway's failed-redemption lockout (SPEC §6 default: 50 per IP or device in 10 min);
    # 0: the guessers' lockout is not judged.
    guess_lockout: int = 50
    progress_s: float = 5.0  # seconds between progress lines (0: none)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read HOST, API_KEY, CAMPAIGN, ADMIN_URL, ADMIN_TOKEN and the optional knobs."""
        env = os.environ if env is None else env
        return cls(
            host=env.get("HOST", cls.host).rstrip("/"),
            api_key=env.get("API_KEY", cls.api_key),
            campaign=env.get("CAMPAIGN", cls.campaign),
            admin_url=env.get("ADMIN_URL", cls.admin_url).rstrip("/"),
            admin_token=env.get("ADMIN_TOKEN", cls.admin_token),
            per_user_limit=_int(env, "PER_USER_LIMIT", cls.per_user_limit, minimum=1),
            per_device_limit=_int(env, "PER_DEVICE_LIMIT", cls.per_device_limit),
            exclusive=env.get("EXCLUSIVE", "1") not in ("0", "false", "no"),
            replay_ratio=_float(env, "REPLAY_RATIO", cls.replay_ratio),
            scalper_devices=_int(env, "SCALPER_DEVICES", cls.scalper_devices, minimum=1),
            forwarded_for=env.get("FORWARDED_FOR", "1") not in ("0", "false", "no"),
            redeem_account=env.get("REDEEM_ACCOUNT", ""),
            report_dir=Path(env.get("REPORT_DIR", str(REPORT_DIR))),
            stock=_int(env, "STOCK", cls.stock),
            min_redeem_rate=_float(env, "MIN_REDEEM_RATE", cls.min_redeem_rate),
            guess_lockout=_int(env, "GUESS_LOCKOUT", cls.guess_lockout),
            progress_s=_float(env, "PROGRESS_S", cls.progress_s),
        )

    def campaign_stock(self, plan: SpikePlan) -> int:
        """The stock of the campaign a run creates: STOCK, else 10 units per spike user."""
        return self.stock or STOCK_PER_USER * plan.users
