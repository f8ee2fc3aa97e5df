"""How other drivers reach an ``rbdbackup`` datastore's backups: its Ceph access, from oned.

A restore reads a backup from wherever the backup datastore keeps it, which may be another Ceph
cluster than the disks' (the datastore's CEPH_CONF / CEPH_USER / CEPH_KEY). A restored image's
source says which backup datastore it comes from (``rbd://backup-<datastore id>/...``, signed by
the restore's grant), and the reader asks oned for that datastore's template: the credentials
never travel in the URL, and only an ``rbdbackup`` datastore's can be used that way.
"""

from __future__ import annotations

import re

from one_drivers.core.config import Settings
from one_drivers.core.errors import PermissionDenied
from one_drivers.core.oned import Oned
from one_drivers.core.retry import Deadline

HOST = re.compile(r"^backup-(?P<id>\d+)$")


def url_host(ds_id: int) -> str:
    return f"backup-{ds_id}"


def datastore_of(host: str) -> int | None:
    """The backup datastore an ``rbd://`` URL's host names (None: not such a URL)."""
    match = HOST.match(host or "")
    return int(match["id"]) if match else None


def backup_settings(ds_id: int, deadline: Deadline, timeout: float = 15,
                    subject: str = "") -> Settings:
    """The settings a reader of datastore ``ds_id``'s backups uses: this driver's defaults and
    the datastore's template, as its own actions see them."""
    from one_drivers.core.registry import get_driver

    ds = Oned(timeout=deadline.cap(timeout, "asking oned")).datastore(ds_id)
    if ds.ds_mad != "rbdbackup":
        raise PermissionDenied(f"datastore {ds_id} is not an rbdbackup datastore "
                               f"(DS_MAD {ds.ds_mad or '-'}): its images are not backups to read",
                               hint="restore a backup through its own datastore")
    return Settings([get_driver("datastore", "rbdbackup").default_values()],
                    subject=subject).over(ds.template)
