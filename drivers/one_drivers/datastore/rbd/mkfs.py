"""DS ``mkfs``: an empty datablock of SIZE MB, formatted when FS is given.

FORMAT=save_as only reserves the name: the image is written later by the TM's cpds.
"""

from __future__ import annotations

from pathlib import Path

from one_drivers.ceph.build import build_image
from one_drivers.ceph.formatting import check_supported, format_into
from one_drivers.ceph.ownership import stamp
from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import create
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import BadInput
from one_drivers.datastore.rbd.common import ds_settings, source_answer, target


def mkfs(call: Call) -> str:
    settings = ds_settings(call)
    image = call.doc.image
    dst = target(call, settings)
    if image.format.lower() == "save_as":
        return source_answer(dst)  # the name only; cpds fills it
    size = image.size_mb * 1024 * 1024
    if size <= 0:
        raise BadInput(f"SIZE is {image.size_mb} MB", hint="a datablock needs a positive SIZE")
    fs = (image.fs or image.template.get("FS") or "").lower() or None
    if fs:
        check_supported(fs, settings.get("SUPPORTED_FS"))
    staging_dir = Path(settings.get("STAGING_DIR", "/var/tmp") or "/var/tmp")

    with rbd_pool(settings, call.deadline, call.subject, creating=True) as pool:

        def make(name: str, meta: dict[str, str]) -> None:
            create(pool.ioctx, name, size, data_pool=pool.access.data_pool, meta=meta)
            if fs:
                log.info(f"formatting {image.size_mb} MB as {fs}")
                format_into(pool.ioctx, name, size, fs, staging_dir, call.deadline)

        build_image(pool, dst, meta=stamp("image", datastore=call.doc.datastore.id,
                                            image=image.id), identity=("image",),
                    make=make, subject=call.subject, seconds=call.deadline.remaining())
    return source_answer(dst)
