"""Copy one RBD image's data into another through this client, extent by extent.

Only what the source holds is read (librbd's diff: allocated extents, or what changed since a
snapshot); holes become discards. Chunks travel COPY_THREADS at a time: librbd releases the
GIL and Ceph serves them in parallel, where one at a time (each read, then written) is bound by
the round trips. Used by backups (full and incremental) and marketplace apps.
"""

from __future__ import annotations

from typing import Any

from one_drivers.ceph.stream import CHUNK

COPY_THREADS = 8


def extents(src: Any, since: str | None = None) -> list[tuple[int, int, bool]]:
    """``(offset, length, present)`` of ``src``: its allocated data (``since`` None), or
    everything that changed since the snapshot ``since`` (data and new holes)."""
    out: list[tuple[int, int, bool]] = []
    src.diff_iterate(0, src.size(), since, lambda off, n, present: out.append((off, n, present)))
    return [e for e in out if e[2]] if since is None else out


def copy_extents(src: Any, dst: Any, spans: list[tuple[int, int, bool]]) -> int:
    """Write ``spans`` of ``src`` into ``dst``: data where present, holes discarded; the
    number of bytes written. A stop (a cancel, the deadline) drops the chunks not started."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = []
    for off, length, present in spans:
        if not present:
            dst.discard(off, length)
            continue
        chunks += [(pos, min(CHUNK, off + length - pos))
                   for pos in range(off, off + length, CHUNK)]

    def one(chunk: tuple[int, int]) -> int:
        data = src.read(*chunk)
        dst.write(data, chunk[0])
        return len(data)

    pool = ThreadPoolExecutor(COPY_THREADS)
    try:
        return sum(pool.map(one, chunks))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
