"""promtool for the rule tests, from Debian's `prometheus` package: installed once if missing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# The package index download and the install together; a slow mirror needs minutes.
INSTALL_TIMEOUT_S = 900


def _run(command: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"installing promtool: `{' '.join(command)}` ran over {INSTALL_TIMEOUT_S} s")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        pytest.fail(f"installing promtool: `{' '.join(command)}` exited {done.returncode}:\n{tail}")


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary's path; installs Debian's `prometheus` package when it is missing.

    Never skips (a skipped check is a silent pass in CI): without apt-get or root, it fails
    and says how to install promtool by hand.
    """
    found = shutil.which("promtool")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            "promtool is not on PATH and cannot be installed here (needs apt-get as root); "
            "install it with `apt-get install prometheus` or put a promtool binary on PATH"
        )
    _run(["apt-get", "update"])
    _run(["apt-get", "install", "-y", "--no-install-recommends", "prometheus"])
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("the prometheus package installed but promtool is still not on PATH")
    return found
