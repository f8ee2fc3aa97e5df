"""Make a file system or swap inside an RBD image without a kernel RBD client.

The file system is made in a sparse file under a staging directory (only its metadata takes
space) and its data extents are copied into RBD; the file is removed on every path.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

from one_drivers.ceph.rbd_ops import open_image
from one_drivers.ceph.stream import copy_file_extents
from one_drivers.core import faults
from one_drivers.core.errors import ActionFailed, BackendTimeout, BadInput
from one_drivers.core.retry import Deadline

MAKERS = {"ext2": ["mkfs.ext2", "-F", "-q"], "ext3": ["mkfs.ext3", "-F", "-q"],
          "ext4": ["mkfs.ext4", "-F", "-q"], "xfs": ["mkfs.xfs", "-f", "-q"],
          "swap": ["mkswap"]}


def check_supported(fs: str, supported: str | None) -> None:
    allowed = [f for f in (supported or "ext2,ext3,ext4,xfs").split(",") if f in MAKERS]
    if fs != "swap" and fs not in allowed:
        raise BadInput(f"file system {fs!r} is not supported",
                       hint=f"use one of {', '.join(allowed)}")


def format_into(ioctx: Any, name: str, size: int, fs: str, staging_dir: Path,
                deadline: Deadline) -> None:
    staging_dir.mkdir(parents=True, exist_ok=True)
    for stale in staging_dir.glob("one-drivers-mkfs-*"):  # named files of older versions
        with contextlib.suppress(OSError):  # another user's name in a shared directory
            stale.unlink(missing_ok=True)
    # an unnamed file: a crash (even SIGKILL) leaves nothing behind, and no name can be swapped;
    # the tool reaches it through this process's descriptor, passed to it
    fd = os.open(staging_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    tmp = f"/proc/self/fd/{fd}"
    tool = MAKERS[fs][0]
    try:
        os.ftruncate(fd, size)
        timeout = deadline.cap(300, tool)
        try:
            proc = subprocess.run([*MAKERS[fs], tmp], capture_output=True, timeout=timeout,
                                  check=False, pass_fds=(fd,))
        except subprocess.TimeoutExpired:
            raise BackendTimeout(f"{tool} did not finish within {timeout:g} s") from None
        except FileNotFoundError:
            raise ActionFailed(f"{tool} is not installed on this host") from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ActionFailed(f"{tool} failed: {err[-1] if err else proc.returncode}")
        faults.point("mkfs:formatted")
        with open_image(ioctx, name) as image:
            copy_file_extents(fd, size, image, what=f"writing the {fs} file system")
    finally:
        os.close(fd)
