"""Debian packages the benchmark needs, installed with apt-get when it runs as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

JEMALLOC_SONAME = "libjemalloc.so.2"
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/lib")


def ensure(package: str, present: Callable[[], bool]) -> bool:
    """True when `present()` holds, after `apt-get install package` if it did not and we may."""
    if present():
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{package} not found: apt-get update && apt-get install -y {package}", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, timeout=300)
        if present():
            return True
    print(f"{package} is missing: apt-get install -y {package}", file=sys.stderr)
    return False


def jemalloc() -> str | None:
    """The path of Debian's jemalloc (package libjemalloc2), installing it if we may."""

    def path() -> str | None:
        return next(
            (str(p) for d in _LIBRARY_DIRS if (p := Path(d) / JEMALLOC_SONAME).is_file()), None
        )

    return path() if ensure("libjemalloc2", lambda: path() is not None) else None
