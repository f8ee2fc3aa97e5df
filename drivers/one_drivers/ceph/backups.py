"""VM disk backups kept as RBD images: what the TM's pre/postbackup and the ``rbdbackup``
datastore share.

On the VM's disk, ``one_backup_<n>`` (upstream's name) is the point in time of backup ``n``
(OpenNebula's increment id: 0 for a full backup or a chain's first, LAST_INCREMENT_ID + 1 after).
Only the newest committed one is kept between backups: it is the base the next increment is the
difference from. In the backup pool each disk of a backup chain is one image,
``one-backup-<vm>-<disk>-<chain>``, whose snapshot ``<n>`` holds the whole disk as it was at
backup ``n``: an increment writes only what changed since ``n - 1`` (librbd's diff, streamed, no
file anywhere) and snapshots the result. So any increment is a full image to restore from (a
clone of its snapshot), and dropping old increments only removes snapshots.

The ``backup_id`` OpenNebula stores as SOURCE is ``<pool>/one-backup-<vm>-<chain>@<n>``: the
chain's images are that name with ``-<disk>`` inserted before the ``@``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from one_drivers.core.documents import VM
from one_drivers.core.errors import BadInput

SNAP_PREFIX = "one_backup_"
_BACKUP_ID = re.compile(r"^(?P<pool>[A-Za-z0-9_.-]+)/(?P<base>one-backup-\d+-[a-z0-9]+)"
                        r"@(?P<n>\d+)$")


class Plan(NamedTuple):
    """What this backup is: ``n``, and whether it continues a chain (an increment)."""

    n: int
    increment: bool  # INCREMENT mode with a chain to continue (else: a full copy)
    incremental: bool  # INCREMENT mode at all (the snapshot is kept for the next one)
    chain_image: int  # OpenNebula's image id of the chain (-1: none yet)
    last: int  # LAST_INCREMENT_ID (-1: none)


def plan(vm: VM) -> Plan:
    cfg = "BACKUPS/BACKUP_CONFIG/"
    mode = (vm.opt(cfg + "MODE") or "FULL").upper()
    chain = int(vm.opt(cfg + "INCREMENTAL_BACKUP_ID") or -1)
    last = int(vm.opt(cfg + "LAST_INCREMENT_ID") or -1)
    incremental = mode == "INCREMENT"
    increment = incremental and chain >= 0 and last >= 0
    return Plan(last + 1 if increment else 0, increment, incremental, chain, last)


def snap_name(n: int) -> str:
    return f"{SNAP_PREFIX}{n}"


def backup_snaps(image: Any) -> dict[int, str]:
    """The ``one_backup_<n>`` snapshots of an open disk image, by ``n``."""
    out = {}
    for snap in image.list_snaps():
        name = snap["name"]
        if name.startswith(SNAP_PREFIX) and name[len(SNAP_PREFIX):].isdigit():
            out[int(name[len(SNAP_PREFIX):])] = name
    return out


def failed(vm: VM) -> bool:
    """oned's VMM MAD adds BACKUP_RESULT=FAILURE to the VM it gives postbackup on failure."""
    return (vm.opt("BACKUP_RESULT") or "").upper() == "FAILURE"


def disk_ids(spec: str) -> list[int]:
    """The ``0:1:3`` list of disks a backup covers."""
    try:
        ids = [int(d) for d in spec.split(":") if d != ""]
    except ValueError:
        raise BadInput(f"{spec!r} is not a list of disk ids (0:1:...)") from None
    if not ids:
        raise BadInput("the backup names no disk")
    return ids


class BackupId(NamedTuple):
    pool: str
    base: str
    n: int

    def __str__(self) -> str:
        return f"{self.pool}/{self.base}@{self.n}"

    def image(self, disk_id: int) -> str:
        return f"{self.base}-{disk_id}"

    @classmethod
    def parse(cls, text: str) -> BackupId:
        match = _BACKUP_ID.match(text.strip())
        if match is None:
            raise BadInput(f"{text!r} is not a backup of this driver (pool/one-backup-<vm>-<chain>"
                           "@<n>)")
        return cls(match["pool"], match["base"], int(match["n"]))


def increment(image: Any, wanted: int) -> BackupId:
    """The backup id of increment ``wanted`` (-1: the last) of a BACKUP image document (its
    BACKUP_INCREMENTS, or its SOURCE for a full backup)."""
    from one_drivers.core.xmlview import XmlView

    sources = {int(i.opt("ID") or -1): i.opt("SOURCE") or ""
               for i in image.children("BACKUP_INCREMENTS/INCREMENT", XmlView)}
    if not sources and image.source:
        sources = {BackupId.parse(image.source).n: image.source}
    n = max(sources) if wanted < 0 and sources else wanted
    if n not in sources:
        raise BadInput(f"backup image {image.id} has no increment {n}")
    return BackupId.parse(sources[n])


def chain_images(ioctx: Any, base: str) -> Iterator[str]:
    """The per-disk images of a chain (``<base>-<disk>``) in the pool."""
    import rbd

    pattern = re.compile(rf"^{re.escape(base)}-\d+$")
    for name in rbd.RBD().list(ioctx):
        if pattern.match(name):
            yield name
