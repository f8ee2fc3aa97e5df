"""DS ``stat``: the size in MB an image will take, for every source ``cp`` accepts.

Virtual size for qcow2 and the like (from the header, or qemu-img for local files), the
decompressed size for compressed sources. oned waits at most 90 s for it (STAT_TIMEOUT).
"""

from __future__ import annotations

from one_drivers.ceph import qemu_img
from one_drivers.ceph.stream import CHUNK, read_full
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed
from one_drivers.datastore.rbd.common import ds_settings
from one_drivers.datastore.rbd.sources import (
    header_virtual_size,
    open_source,
    refuse_references,
    sniff_format,
)

MIB = 1024 * 1024


def size_bytes(call: Call) -> int:
    settings = ds_settings(call)
    # oned's stat message is <IMAGE><PATH/></IMAGE>: no owner to check, and only a size leaves
    src = open_source(call.doc.image.text("PATH"), settings, call.deadline, call.subject)
    path = src.label
    try:
        head = src.stream.peek(64 * 1024)
        fmt = sniff_format(head)
        refuse_references(fmt, head, path)
        if fmt != "raw":
            if src.local_fd is not None:
                return qemu_img.virtual_size(src.local_fd, fmt,
                                             call.deadline.cap(60, "qemu-img info"), path)
            size = header_virtual_size(fmt, head)
            if size is None:
                raise ActionFailed(f"cannot tell the virtual size of {fmt} image {path} "
                                   "without downloading it")
            return size
        if src.size is not None:
            return src.size
        total = 0  # compressed raw: count what it expands to
        while data := read_full(src.stream, CHUNK):
            total += len(data)
            call.deadline.cap(1, "the size was counted")
        return total
    finally:
        src.close()


def stat(call: Call) -> str:
    return str(-(-size_bytes(call) // MIB))  # rounded up: the image must fit
