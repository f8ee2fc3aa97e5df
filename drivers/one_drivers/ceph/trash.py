"""``one-drivers rbd trash-purge``: remove expired RBD trash entries of OpenNebula's images.

Run from a timer. Entries are images moved there by us: with CEPH_TRASH (a deferment), hidden
sources whose clones still live, and disks deleted with DELETE_MODE=deferred. An expired entry's
snapshots are removed first (Ceph will not remove an image that has some), unless something still
hangs from one of them: then the entry waits, as does one whose deferment has not expired. After
a removal the parent's clone snapshot is released, as a direct delete would.
"""

from __future__ import annotations

import datetime
from typing import Any

from one_drivers.core import log


def _drop_snapshots(ioctx: Any, entry: dict[str, Any], cluster: Any) -> tuple[bool, Any]:
    """Remove an expired entry's snapshots; (False, None) when a clone still needs one."""
    import rbd

    from one_drivers.ceph.rbd_ops import children, parent, release_snap_ids, user_snaps

    image = rbd.Image(ioctx, image_id=entry["id"])
    try:
        up = parent(image)
        snaps = [s["name"] for s in user_snaps(image)]
        if any(children(image, s) for s in snaps):
            return False, None
        release_snap_ids(cluster, ioctx, image)
        for snap in snaps:
            if image.is_protected_snap(snap):
                image.unprotect_snap(snap)
            image.remove_snap(snap)
        return True, up
    finally:
        image.close()


def purge(ioctx: Any, *, now: datetime.datetime | None = None,
          cluster: Any = None) -> dict[str, int]:
    import rbd

    # librbd reports naive UTC datetimes
    now = now or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    counts = {"removed": 0, "not_expired": 0, "has_clones": 0}
    for entry in list(rbd.RBD().trash_list(ioctx)):
        if not entry["name"].startswith("one-"):
            continue
        if entry.get("source", "USER") != "USER":  # mirroring / migration entries are not ours
            continue
        end = entry.get("deferment_end_time")
        if isinstance(end, datetime.datetime) and end > now:
            counts["not_expired"] += 1
            continue
        try:
            free, up = _drop_snapshots(ioctx, entry, cluster)
            if not free:
                counts["has_clones"] += 1
                continue
            rbd.RBD().trash_remove(ioctx, entry["id"], False)
        except rbd.PermissionError:
            counts["not_expired"] += 1
            continue
        except (rbd.ImageHasSnapshots, rbd.ImageBusy):
            counts["has_clones"] += 1  # or a killed writer's watch has not expired yet
            continue
        except rbd.ImageNotFound:
            continue  # purged meanwhile by another run
        counts["removed"] += 1
        log.info(f"purged {entry['name']} from the RBD trash")
        if up is not None and cluster is not None:
            from one_drivers.ceph.cloning import release_parent

            release_parent(cluster, up)
    return counts
