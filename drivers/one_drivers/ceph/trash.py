"""``one-drivers rbd trash-purge``: remove expired RBD trash entries of OpenNebula's images.

Run from a timer. An entry whose deferment has not expired, or whose image still has clones, is
skipped as normal (Ceph answers PermissionError / ImageHasSnapshots / ImageBusy for those).
Only ``one-*`` entries moved there by a user (us) are considered.
"""

from __future__ import annotations

import datetime
from typing import Any

from one_drivers.core import log


def purge(ioctx: Any, *, now: datetime.datetime | None = None) -> dict[str, int]:
    import rbd

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
            rbd.RBD().trash_remove(ioctx, entry["id"], False)
        except rbd.PermissionError:
            counts["not_expired"] += 1
        except (rbd.ImageHasSnapshots, rbd.ImageBusy):
            counts["has_clones"] += 1
        else:
            counts["removed"] += 1
            log.info(f"purged {entry['name']} from the RBD trash")
    return counts
