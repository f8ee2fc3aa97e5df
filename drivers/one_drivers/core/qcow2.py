"""A qcow2 (version 3) file written front to back in one pass: what upstream's backup
datastores (``rsync``, ``restic``) read as a disk backup, made without a temporary file.

``qemu-img convert`` needs a seekable output, so upstream writes a raw export on the host and
converts it (twice the disk's size in staging). Here the clusters the file will hold are known
before any data is read (from librbd's diff), so the whole layout is planned first: header,
refcount table and blocks, L1 table, L2 tables, then the data clusters in guest order. Every
byte is then produced in file order and can go down a pipe.

Clusters absent from the file read from the backing file when a chain is rebuilt (upstream
rebases increments with ``qemu-img rebase -u``) and as zeros otherwise; a cluster a backup must
show as zeroed over its backing (discarded since the previous backup) carries the v3 zero flag.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
L2_ENTRIES = CLUSTER // 8
REFCOUNT_ORDER = 4  # 16-bit refcounts: qemu-img's default
RC_ENTRIES = CLUSTER * 8 // (1 << REFCOUNT_ORDER)
COPIED = 1 << 63  # refcount exactly 1: what qemu sets on every cluster it owns alone
ZERO = 1  # L2 entry flag (v3): the cluster reads as zeros whatever the backing holds
HEADER_LENGTH = 104
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")
RUN = 64  # data clusters read and sent at once (4 MiB)

DATA, ZEROED = "data", "zero"


def _clusters(nbytes: int) -> int:
    return -(-nbytes // CLUSTER)


class Layout(NamedTuple):
    """Where everything of the file goes, in clusters."""

    size: int  # the virtual disk's size in bytes
    l1_entries: int
    refcount_table: int  # first cluster of the refcount table
    refcount_table_clusters: int
    refcount_blocks: int
    refcount_block_count: int
    l1_table: int
    l2_tables: dict[int, int]  # L1 index -> cluster of its L2 table
    data: dict[int, int]  # guest cluster -> file cluster
    zeroed: frozenset[int]  # guest clusters with the zero flag
    total: int  # clusters in the file

    @property
    def file_size(self) -> int:
        return self.total * CLUSTER


def plan(size: int, kinds: Mapping[int, str]) -> Layout:
    """The layout of a ``size``-byte disk whose file holds ``kinds`` (guest cluster -> DATA or
    ZEROED); every other cluster is left out."""
    if size <= 0:
        raise ValueError("a qcow2 disk needs a size")
    bad = [c for c in kinds if not 0 <= c < _clusters(size)]
    if bad:
        raise ValueError(f"cluster {bad[0]} is beyond the disk's {size} bytes")
    l1_entries = -(-_clusters(size) // L2_ENTRIES)
    l1_clusters = _clusters(l1_entries * 8)
    tables = sorted({c // L2_ENTRIES for c in kinds})
    data = sorted(c for c, kind in kinds.items() if kind == DATA)
    fixed = 1 + l1_clusters + len(tables) + len(data)
    rt = rb = 1
    while True:  # the refcount structures count themselves too
        blocks = -(-(fixed + rt + rb) // RC_ENTRIES)
        table = _clusters(blocks * 8)
        if (blocks, table) == (rb, rt):
            break
        rb, rt = blocks, table
    refcount_blocks = 1 + rt
    l1 = refcount_blocks + rb
    first_l2 = l1 + l1_clusters
    first_data = first_l2 + len(tables)
    return Layout(size, l1_entries, 1, rt, refcount_blocks, rb, l1,
                  {t: first_l2 + i for i, t in enumerate(tables)},
                  {c: first_data + i for i, c in enumerate(data)},
                  frozenset(c for c, kind in kinds.items() if kind == ZEROED),
                  first_data + len(data))


def _header(lay: Layout) -> bytes:
    sectors = -(-lay.size // 512) * 512  # QEMU sizes disks in sectors, as qemu-img convert
    head = _HEADER.pack(b"QFI\xfb", 3, 0, 0, CLUSTER_BITS, sectors, 0, lay.l1_entries,
                        lay.l1_table * CLUSTER, lay.refcount_table * CLUSTER,
                        lay.refcount_table_clusters, 0, 0, 0, 0, 0, REFCOUNT_ORDER,
                        HEADER_LENGTH)
    return head + bytes(CLUSTER - len(head))  # then the end of header extensions: zeros


def _metadata(lay: Layout) -> Iterator[bytes]:
    """Every metadata cluster, in file order (header to the last L2 table)."""
    yield _header(lay)
    table = bytearray(lay.refcount_table_clusters * CLUSTER)
    for i in range(lay.refcount_block_count):
        struct.pack_into(">Q", table, i * 8, (lay.refcount_blocks + i) * CLUSTER)
    yield bytes(table)
    for b in range(lay.refcount_block_count):  # every cluster of the file counted once
        used = max(0, min(RC_ENTRIES, lay.total - b * RC_ENTRIES))
        yield struct.pack(f">{used}H", *([1] * used)) + bytes(CLUSTER - 2 * used)
    l1 = bytearray(_clusters(lay.l1_entries * 8) * CLUSTER)
    for index, cluster in lay.l2_tables.items():
        struct.pack_into(">Q", l1, index * 8, cluster * CLUSTER | COPIED)
    yield bytes(l1)
    for index in lay.l2_tables:
        l2 = bytearray(CLUSTER)
        base = index * L2_ENTRIES
        for slot in range(L2_ENTRIES):
            guest = base + slot
            if guest in lay.data:
                struct.pack_into(">Q", l2, slot * 8, lay.data[guest] * CLUSTER | COPIED)
            elif guest in lay.zeroed:
                struct.pack_into(">Q", l2, slot * 8, ZERO)
        yield bytes(l2)


def chunks(lay: Layout, read: Callable[[int, int], bytes]) -> Iterator[tuple[int, bytes]]:
    """``(file offset, bytes)`` of the whole file in order; ``read(offset, length)`` gives the
    disk's bytes (runs of up to :data:`RUN` adjacent clusters at a time)."""
    offset = 0
    for cluster in _metadata(lay):
        yield offset, cluster
        offset += len(cluster)
    guests = sorted(lay.data)
    i = 0
    while i < len(guests):
        j = i + 1
        while j < len(guests) and j - i < RUN and guests[j] == guests[j - 1] + 1:
            j += 1
        start = guests[i] * CLUSTER
        want = (j - i) * CLUSTER
        data = read(start, min(want, lay.size - start))
        yield lay.data[guests[i]] * CLUSTER, data + bytes(want - len(data))
        i = j


def kinds_from_extents(size: int, extents: list[tuple[int, int, bool]]) -> dict[int, str]:
    """The clusters a backup file must hold, from librbd's diff ``(offset, length, exists)``:
    any cluster with written data is DATA; one the diff shows entirely discarded is ZEROED (over
    an older backup it must read as zeros); one only partly discarded is DATA too (the rest of
    it is read from the snapshot)."""
    kinds: dict[int, str] = {}
    gone: dict[int, int] = {}
    for offset, length, exists in extents:
        first, last = offset // CLUSTER, (offset + length - 1) // CLUSTER
        for c in range(first, last + 1):
            if exists:
                kinds[c] = DATA
            else:
                lo, hi = max(offset, c * CLUSTER), min(offset + length, (c + 1) * CLUSTER)
                gone[c] = gone.get(c, 0) + hi - lo
    for c, nbytes in gone.items():
        if c in kinds:
            continue
        whole = min(CLUSTER, size - c * CLUSTER)
        kinds[c] = ZEROED if nbytes >= whole else DATA
    return kinds
