"""System datastore ``monitor`` (called by the DS MAD with the DS protocol).

stdout: USED_MB / TOTAL_MB / FREE_MB of the pool, from one ``df`` (as the datastore driver).
With MONITOR_VM_DISKS=1, per-VM disk sizes go to monitord as one MONITOR_VM message
(``MONITOR_VM SUCCESS -1 0 base64(zlib(payload))`` over UDP), payload lines
``VM=[ID=<vm>, MONITOR="<base64 of DISK_SIZE=[ID=<disk>, SIZE=<MB>] ...>"]``. Sizes are what
each disk holds itself (a clone's shared parent data is not counted), read from the object map
(fast-diff): the cost grows with the VMs' disks, not with how many images the pool holds.
"""

from __future__ import annotations

import base64
import re
import socket
import zlib
from collections import defaultdict
from typing import Any

from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, open_image
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.datastore.rbd.monitor import capacity

MIB = 1024 * 1024
CLONE_DISK = re.compile(r"^one-\d+-(\d+)-(\d+)$")
VOLATILE_DISK = re.compile(r"^one-sys-(\d+)-(\d+)$")
MAX_DATAGRAM = 60_000


def allocated_mb(image: Any) -> int:
    total = 0

    def count(offset: int, length: int, exists: bool) -> None:
        nonlocal total
        if exists:
            total += length

    image.diff_iterate(0, image.size(), None, count, include_parent=False, whole_object=True)
    return -(-total // MIB)


def vm_disk_sizes(pool: Pool) -> dict[int, dict[int, int]]:
    import rbd

    sizes: dict[int, dict[int, int]] = defaultdict(dict)
    for name in rbd.RBD().list(pool.ioctx):
        match = CLONE_DISK.match(name) or VOLATILE_DISK.match(name)
        if not match:
            continue
        vm, disk = int(match.group(1)), int(match.group(2))
        try:
            with open_image(pool.ioctx, name, read_only=True) as image:
                sizes[vm][disk] = allocated_mb(image)
        except rbd.ImageNotFound:
            continue  # removed while we looked
    return sizes


def messages(sizes: dict[int, dict[int, int]]) -> list[bytes]:
    """MONITOR_VM datagrams, split so that none exceeds what UDP carries."""
    lines = []
    for vm, disks in sorted(sizes.items()):
        monitor = " ".join(f"DISK_SIZE=[ID={d}, SIZE={s}]" for d, s in sorted(disks.items()))
        encoded = base64.b64encode(monitor.encode()).decode()
        lines.append(f'VM=[ID={vm}, MONITOR="{encoded}"]')
    out, chunk = [], []
    for line in lines:
        chunk.append(line)
        payload = base64.b64encode(zlib.compress("\n".join(chunk).encode()))
        if len(payload) > MAX_DATAGRAM and len(chunk) > 1:
            chunk.pop()
            out.append(_datagram(chunk))
            chunk = [line]
    if chunk:
        out.append(_datagram(chunk))
    return out


def _datagram(lines: list[str]) -> bytes:
    payload = base64.b64encode(zlib.compress(("\n".join(lines) + "\n").encode()))
    return b"MONITOR_VM SUCCESS -1 0 " + payload + b"\n"


def monitor(call: Call) -> str:
    settings = call.settings.over(call.doc.datastore.template)
    with rbd_pool(settings, call.deadline, call.subject) as pool, \
            ceph_errors("monitoring the system datastore", call.subject):
        df = pool.session.mon_command({"prefix": "df", "detail": "detail"},
                                      "the pool usage query")
        answer = capacity(df, pool.name, pool.access.data_pool).render()
        if call.doc.monitor_vm_disks:
            sizes = vm_disk_sizes(pool)
            address = settings.get("MONITORD_ADDRESS", "127.0.0.1") or "127.0.0.1"
            port = settings.int("MONITORD_PORT", 4124)
            with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                               socket.SOCK_DGRAM) as sock:
                for datagram in messages(sizes):
                    sock.sendto(datagram, (address, port))
            log.info(f"sent disk sizes of {len(sizes)} VM(s) to monitord at {address}:{port}")
    return answer
