"""DS ``mkfs``: an empty datablock of SIZE MB, formatted when FS is given.

Without a kernel RBD client there is no block device to format, so the file system is made in a
sparse file under STAGING_DIR (only its metadata takes space) and its data extents are copied into
RBD. FORMAT=save_as only reserves the name: the image is written later by the TM's cpds.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import create, open_image
from one_drivers.ceph.stream import copy_file_extents
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BackendTimeout, BadInput
from one_drivers.core.retry import Deadline
from one_drivers.datastore.rbd.build import build_image
from one_drivers.datastore.rbd.common import answer, ds_settings, target

MKFS_OPTIONS = {"ext2": ["-F", "-q"], "ext3": ["-F", "-q"], "ext4": ["-F", "-q"],
                "xfs": ["-f", "-q"]}


def format_into(pool: Pool, name: str, size: int, fs: str, staging_dir: Path,
                deadline: Deadline) -> None:
    staging_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="one-drivers-mkfs-", dir=staging_dir)
    try:
        os.ftruncate(fd, size)
        timeout = deadline.cap(300, f"mkfs.{fs}")
        try:
            proc = subprocess.run([f"mkfs.{fs}", *MKFS_OPTIONS[fs], tmp], capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BackendTimeout(f"mkfs.{fs} did not finish within {timeout:g} s") from None
        except FileNotFoundError:
            raise ActionFailed(f"mkfs.{fs} is not installed on this host") from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ActionFailed(f"mkfs.{fs} failed: {err[-1] if err else proc.returncode}")
        with open_image(pool.ioctx, name) as image:
            copy_file_extents(fd, size, image, what=f"writing the {fs} file system")
    finally:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)


def mkfs(call: Call) -> str:
    settings = ds_settings(call)
    image = call.doc.image
    dst = target(call, settings)
    if image.format.lower() == "save_as":
        return answer(dst)  # the name only; cpds fills it
    size = image.size_mb * 1024 * 1024
    if size <= 0:
        raise BadInput(f"SIZE is {image.size_mb} MB", hint="a datablock needs a positive SIZE")
    fs = (image.fs or image.template.get("FS") or "").lower() or None
    supported = (settings.get("SUPPORTED_FS") or "ext2,ext3,ext4,xfs").split(",")
    if fs and (fs not in supported or fs not in MKFS_OPTIONS):
        raise BadInput(f"file system {fs!r} is not supported",
                       hint=f"use one of {', '.join(s for s in supported if s in MKFS_OPTIONS)}")
    staging_dir = Path(settings.get("STAGING_DIR", "/var/tmp") or "/var/tmp")

    def make(name: str, meta: dict[str, str]) -> None:
        create(pool.ioctx, name, size, data_pool=pool.access.data_pool, meta=meta)
        if fs:
            log.info(f"formatting {image.size_mb} MB as {fs}")
            format_into(pool, name, size, fs, staging_dir, call.deadline)

    with rbd_pool(settings, call.deadline, call.subject) as pool:
        build_image(pool, dst, image_id=image.id, datastore_id=call.doc.datastore.id,
                    make=make, subject=call.subject)
    return answer(dst)
