"""DS ``cp``: register an image from a local path, ``http(s)://`` or ``rbd://``.

Raw (and compressed raw) sources stream straight into RBD: no staging copy, zero chunks skipped so
sparse stays sparse. qcow2, vmdk, vdi and friends need qemu-img and so a file: a local
uncompressed file is converted in place; anything else is staged once under STAGING_DIR, bounded by
the free space there and removed on every path. MD5 / SHA1 from the image template are checked
against the bytes as fetched, before anything is registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import IO, Any, NamedTuple

from one_drivers.ceph import qemu_img
from one_drivers.ceph.build import build_image
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.ownership import stamp
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import clone, create, open_image
from one_drivers.ceph.session import same_cluster
from one_drivers.ceph.stream import (
    CHUNK,
    Progress,
    copy_file_extents,
    copy_into,
    parse_rate,
    read_full,
)
from one_drivers.core import log
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.core.retry import Deadline
from one_drivers.datastore.rbd.common import answer, ds_settings, target
from one_drivers.datastore.rbd.sources import (
    Opened,
    Requester,
    market_of,
    open_source,
    parse_rbd_url,
    rbd_source_settings,
    refuse_references,
    sniff_format,
)

STAGING_RESERVE = 256 * 1024 * 1024  # never fill the staging file system completely


class Checksums:
    """The MD5 / SHA1 the image template asks for, computed over the source as fetched."""

    def __init__(self, template_md5: str | None, template_sha1: str | None) -> None:
        self.expected = {k: v.strip().lower() for k, v in
                         (("md5", template_md5), ("sha1", template_sha1)) if v}
        self.hashers = {k: hashlib.new(k, usedforsecurity=False) for k in self.expected}

    def reset(self) -> None:
        self.hashers = {k: hashlib.new(k, usedforsecurity=False) for k in self.expected}

    def update(self, data: bytes) -> None:
        for h in self.hashers.values():
            h.update(data)

    def verify(self, label: str) -> None:
        for kind, want in self.expected.items():
            got = self.hashers[kind].hexdigest()
            if got != want:
                raise BadInput(f"{kind.upper()} of {label} is {got}, the template says {want}",
                               hint="the download is corrupt or the checksum is wrong")


def stage_to_file(src: Opened, settings: Settings, image_id: int, deadline: Deadline) -> int:
    """Copy a stream to an unnamed file under STAGING_DIR (``O_TMPFILE``: nothing to leave
    behind on a crash, no name anyone could swap), bounded by the space there; its descriptor."""
    staging_dir = Path(settings.get("STAGING_DIR", "/var/tmp") or "/var/tmp")
    staging_dir.mkdir(parents=True, exist_ok=True)
    for stale in staging_dir.glob(f"one-drivers-{image_id}-*"):  # an older version's debris
        with contextlib.suppress(OSError):  # another user's name in a shared directory
            stale.unlink(missing_ok=True)
    budget = shutil.disk_usage(staging_dir).free - STAGING_RESERVE
    if src.size is not None and src.size > budget:
        raise ActionFailed(f"not enough space in {staging_dir} to convert {src.label} "
                           f"({src.size >> 20} MiB needed)", hint="free space or set STAGING_DIR")
    fd = os.open(staging_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    progress = Progress(f"downloading {src.label}", src.size)
    done = 0
    try:
        while data := read_full(src.stream, CHUNK):
            done += len(data)
            if done > budget:
                raise ActionFailed(f"{src.label} does not fit in {staging_dir}",
                                   hint="free space or set STAGING_DIR")
            os.write(fd, data)
            progress.update(done)
            deadline.cap(1, "the download finished")
    except BaseException:
        os.close(fd)
        raise
    return fd


class ImportRequest(NamedTuple):
    """What to import, and for whom: an image's PATH with the checksums its template asks for
    (cp), or an operator's file (``one-drivers market import-file``)."""

    path: str
    md5: str | None
    sha1: str | None
    requester: Requester | None
    staging_id: int  # names the staging file of a conversion
    data: IO[bytes] | None = None  # the file's content, sent along by a front-end
    market: Settings | None = None  # the rbd market an app is exported from
    app_md5: str | None = None  # the app's catalogue checksum

    @classmethod
    def of_call(cls, call: Call) -> ImportRequest:
        image = call.doc.image
        return cls(image.text("PATH"), image.template.get("MD5"), image.template.get("SHA1"),
                   Requester.of(image), image.id, call.extras.get("data"),
                   market_of(call.doc, call.extras.get("remotes")),
                   image.template.get("FROM_APP_MD5"))


def import_source(pool: Pool, name: str, meta: dict[str, str], req: ImportRequest,
                  settings: Settings, deadline: Deadline, subject: str) -> None:
    market = req.market
    # an app of a market on another Ceph cluster is streamed: its catalogue checksum is checked
    cloned_app = market is not None and same_cluster(market, settings)
    sums = Checksums(req.md5 or (req.app_md5 if market is not None and not cloned_app else None),
                     req.sha1)
    src = open_source(req.path, settings, deadline, subject, tap=sums.update, data=req.data,
                      requester=req.requester, market=market)
    path = src.label  # credentials in a URL never reach a message or the log
    data_pool = pool.access.data_pool
    try:
        head = src.stream.peek(64 * 1024)
        fmt = sniff_format(head)
        refuse_references(fmt, head, path)
        log.info(f"importing {path} ({fmt}{', ' + src.compression if src.compression else ''})"
                 f" into {pool.name}/{name}")
        rate = parse_rate(settings.get("LIMIT_TRANSFER_BW"))
        snapshot = _rbd_snapshot(req.path)
        if market is not None and not cloned_app:
            snapshot = None  # another cluster's: its data is streamed below
        elif snapshot is not None and not same_cluster(
                rbd_source_settings(req.path, settings, deadline, subject), settings):
            snapshot = None  # a backup kept on another cluster: streamed too
        if fmt == "raw" and snapshot is not None and not sums.expected and not src.compression:
            # a snapshot in this very cluster (read with the datastore's own user): a clone,
            # in a moment whatever the size (a backup restored to a new image)
            with pool.other(snapshot.pool, snapshot.namespace) as src_ioctx:
                clone(src_ioctx, snapshot, pool.ioctx, name, data_pool=data_pool, meta=meta)
            log.info(f"{pool.name}/{name}: a copy-on-write clone of {snapshot}")
            return
        if fmt == "raw" and src.local_fd is not None and src.size is not None:
            sums.reset()  # the whole file is read again below, holes skipped
            create(pool.ioctx, name, src.size, data_pool=data_pool, meta=meta)
            with open_image(pool.ioctx, name) as rbd_image:
                copy_file_extents(src.local_fd, src.size, rbd_image, what=f"importing {path}",
                                  on_chunk=sums.update if sums.expected else None, rate=rate,
                                  check=lambda: deadline.cap(1, "the import finished"))
            sums.verify(path)
            return
        if fmt == "raw":
            create(pool.ioctx, name, src.size or 0, data_pool=data_pool, meta=meta)
            with open_image(pool.ioctx, name) as rbd_image:
                copy_into(src.stream, rbd_image, size_hint=src.size, what=f"importing {path}",
                          rate=rate,
                          check=lambda: deadline.cap(1, "the import finished"))
            sums.verify(path)
            return
        staged: int | None = None
        try:
            if src.local_fd is not None:
                fd = src.local_fd
                if sums.expected:
                    _drain(src.stream)  # the checksum needs every byte once
            else:
                fd = staged = stage_to_file(src, settings, req.staging_id, deadline)
            sums.verify(path)
            timeout = deadline.cap(deadline.remaining(), "converting")
            size = qemu_img.virtual_size(fd, fmt, timeout, path)
            create(pool.ioctx, name, size, data_pool=data_pool, meta=meta)
            qemu_img.convert_into_rbd(fd, fmt, pool.access, pool.name, name,
                                      deadline.cap(deadline.remaining(), "converting"))
        finally:
            if staged is not None:
                os.close(staged)
    finally:
        src.close()


def _rbd_snapshot(path: str) -> ImageSpec | None:
    """The RBD snapshot an ``rbd://`` PATH names (None for anything else, or a whole image:
    a clone needs a snapshot, and another's image is not ours to snapshot)."""
    if not path.lower().startswith("rbd://"):
        return None
    spec = parse_rbd_url(path)
    return spec if spec.snap else None


def _drain(stream: Any) -> None:
    while read_full(stream, CHUNK):
        pass


def cp(call: Call) -> str:
    settings = ds_settings(call)
    dst = target(call, settings)
    with rbd_pool(settings, call.deadline, call.subject, creating=True) as pool:
        build_image(pool, dst, meta=stamp("image", datastore=call.doc.datastore.id,
                                            image=call.doc.image.id), identity=("image",),
                    subject=call.subject, seconds=call.deadline.remaining(),
                    make=lambda name, meta: import_source(pool, name, meta,
                                                          ImportRequest.of_call(call), settings,
                                                          call.deadline, call.subject))
    return answer(dst)
