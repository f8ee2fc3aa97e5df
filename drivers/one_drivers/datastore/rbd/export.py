"""DS ``export`` (for a marketplace): ``<IMPORT_INFO>`` with an ``rbd://`` URL ``cp`` imports
(with the importing datastore's own credentials: the URL carries none).

The MD5 comes from the image template when it has one; otherwise it is computed by reading the
image, holes hashed as zeros without reading them.
"""

from __future__ import annotations

import hashlib
import socket
import urllib.parse

from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, open_image
from one_drivers.ceph.stream import CHUNK, Progress
from one_drivers.core.contract import Call
from one_drivers.core.xmlview import escape
from one_drivers.datastore.rbd.common import ds_settings, source_spec

MIB = 1024 * 1024
_ZEROS = bytes(CHUNK)


def md5_of(image: object, what: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    size: int = image.size()  # type: ignore[attr-defined]
    extents: list[tuple[int, int]] = []
    image.diff_iterate(0, size, None,  # type: ignore[attr-defined]
                       lambda off, n, present: extents.append((off, n)) if present else None)
    progress = Progress(f"checksumming {what}", size)
    pos = 0
    for off, length in [*extents, (size, 0)]:
        while pos < off:  # a hole: zeros, not read
            n = min(CHUNK, off - pos)
            digest.update(_ZEROS[:n])
            pos += n
        end = off + length
        while pos < end:
            n = min(CHUNK, end - pos)
            digest.update(image.read(pos, n))  # type: ignore[attr-defined]
            pos += n
            progress.update(pos)
    return digest.hexdigest()


def export(call: Call) -> str:
    settings = ds_settings(call)
    spec = source_spec(call, settings)
    # no user, key or configuration path in the URL: the importing datastore reads it with its
    # own credentials, from the pools it allows (RBD_SOURCE_POOLS)
    host = settings.get("EXPORT_HOST") or socket.getfqdn()
    url = f"rbd://{host}/{urllib.parse.quote(spec.pool)}/{urllib.parse.quote(spec.name)}"
    with rbd_pool(settings.over({"POOL_NAME": spec.pool}), call.deadline, call.subject) as pool, \
            ceph_errors(f"reading {spec}", call.subject), \
            open_image(pool.ioctx, spec.name, read_only=True) as image:
        size_mb = -(-image.size() // MIB)
        md5 = call.doc.image.template.get("MD5") or md5_of(image, str(spec))
    return ("<IMPORT_INFO>"
            f"<IMPORT_SOURCE>{escape(url)}</IMPORT_SOURCE>"
            f"<MD5>{escape(md5)}</MD5><SIZE>{size_mb}</SIZE><FORMAT>raw</FORMAT>"
            "<DISPOSE>NO</DISPOSE></IMPORT_INFO>")
