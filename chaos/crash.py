"""A disk that can lose power: what a host crash leaves of the files written on it.

An ext4 filesystem on a loop device over an image file. The upper filesystem keeps written
data in the page cache until it is fsynced or written back, and only then hands it to the
loop device, which writes it into the image. So at any instant the image holds what a real
disk would: fsynced data, data the kernel already wrote back, and the journal. `crash()`
copies the image at that instant (the crash), drops the mounted filesystem with everything
still unsynced in its cache, and mounts the copy in its place: the files now hold what a
host that lost power would find when it boots, after ext4 replays its journal.

Needs root, loop devices and `mkfs.ext4`; `unavailable()` says why not when they are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

IMAGE_MB = 256


def _run(*command: str) -> str:
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


class CrashDisk:
    """A mounted loop filesystem at `mount`, backed by `image`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.mount = work / "disk"
        self.image = work / "disk.img"
        self.device = ""
        self.crashes = 0

    def create(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(exist_ok=True)
        with open(self.image, "wb") as image:
            image.truncate(IMAGE_MB << 20)
        _run("mkfs.ext4", "-q", "-F", str(self.image))
        self._attach(self.image)

    def _attach(self, image: Path) -> None:
        self.device = _run("losetup", "--find", "--show", str(image))
        _run("mount", self.device, str(self.mount))

    def _detach(self) -> None:
        if self.device:
            # Lazy: the crashed filesystem's unsynced pages go with it, never to the image.
            subprocess.run(["umount", "-l", str(self.mount)], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)
            self.device = ""

    def crash(self) -> None:
        """Power lost now: keep only what the image holds, and mount that in place.

        Call it after the writers are killed, so nothing new is written meanwhile."""
        self.crashes += 1
        survivor = self.work / f"after-crash-{self.crashes}.img"
        # A sparse copy of the image as it is this instant: the disk the host boots from.
        _run("cp", "--sparse=always", str(self.image), str(survivor))
        self._detach()
        self.image = survivor
        self._attach(survivor)

    def remove(self) -> None:
        self._detach()
        with contextlib.suppress(FileNotFoundError):
            for image in self.work.glob("*.img"):
                image.unlink()


def unavailable() -> str:
    """Why this machine cannot run a CrashDisk ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root to attach loop devices and mount"
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    return ""


@contextlib.contextmanager
def crash_disk(work: Path) -> Iterator[CrashDisk]:
    disk = CrashDisk(work)
    try:
        disk.create()
        yield disk
    finally:
        disk.remove()
