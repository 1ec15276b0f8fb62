"""Load shapes for Locust; the schedule itself lives in `loadtests.settings.SpikePlan`."""

from __future__ import annotations

from locust import LoadTestShape

from loadtests.settings import SpikePlan


class FlashSaleShape(LoadTestShape):
    """A flash sale: ramp to SPIKE_USERS within SPIKE_RAMP_S, hold SPIKE_SUSTAIN_S, drain.

    Defaults: 100 users, 5 s ramp, 45 s sustain, 10 s drain (60 s in all); then the test stops.
    """

    plan = SpikePlan.from_env()

    def tick(self) -> tuple[int, float] | None:
        return self.plan.at(self.get_run_time())
