"""Stream bytes into an RBD image: sparse, pipelined, bounded in memory.

Zero chunks are skipped (a fresh RBD image reads as zeros), so sparse input stays sparse in Ceph.
Writes go out as asynchronous librbd requests with a bounded window, which is what lets one
Python process keep up with ``rbd import``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from one_drivers.ceph.session import translate
from one_drivers.core import faults, log
from one_drivers.core.sparsefile import file_extents


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


CHUNK = 4 * 1024 * 1024  # one RBD object
WINDOW = 8  # writes in flight (32 MiB of buffers); more does not help one OSD
_ZERO = bytes(CHUNK)


def parse_rate(value: str | None) -> float | None:
    """LIMIT_TRANSFER_BW as curl's --limit-rate reads it: bytes/s, K/M/G suffixes."""
    if not value:
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    v = value.strip().upper().removesuffix("B")
    mult = units.get(v[-1:], 1)
    number = float(v[:-1] if v[-1:] in units else v)
    return number * mult if number > 0 else None


class Progress:
    """INFO lines for long copies: at most one every ``every`` seconds."""

    def __init__(self, what: str, total: int | None, every: float = 5.0) -> None:
        self.what, self.total, self.every = what, total, every
        self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        mib = done >> 20
        if self.total:
            log.info(f"{self.what}: {mib} MiB of {self.total >> 20} MiB "
                     f"({100 * done // self.total}%)")
        else:
            log.info(f"{self.what}: {mib} MiB")


class Pacer:
    """Between chunks of a copy: progress lines, the LIMIT_TRANSFER_BW cap, the deadline."""

    def __init__(self, what: str, total: int | None, rate: float | None,
                 check: Callable[[], object] | None) -> None:
        self.progress = Progress(what, total)
        self.rate, self.check = rate, check
        self.start = time.monotonic()

    def advance(self, done: int) -> None:
        faults.point("copy:progress")
        self.progress.update(done)
        if self.rate:
            ahead = done / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)
        if self.check is not None:
            self.check()


class SparseWriter:
    """Pipelined writes into an open rbd.Image, skipping zero chunks."""

    def __init__(self, image: Any, window: int = WINDOW) -> None:
        self.image = image
        self.slots = threading.Semaphore(window)
        self.window = window
        self.errors: list[int] = []
        self.written = 0

    def _done(self, completion: Any) -> None:
        rv = completion.get_return_value()
        if rv < 0:
            self.errors.append(rv)
        self.slots.release()

    def write(self, offset: int, data: bytes) -> None:
        if not data or (data == _ZERO if len(data) == CHUNK else not any_nonzero(data)):
            return
        if self.errors:
            self._raise()
        self.slots.acquire()
        self.image.aio_write(data, offset, self._done)
        self.written += len(data)

    def finish(self) -> None:
        for _ in range(self.window):  # wait for every request in flight
            self.slots.acquire()
        for _ in range(self.window):
            self.slots.release()
        if self.errors:
            self._raise()
        self.image.flush()

    def _raise(self) -> None:
        code = -self.errors[0]
        raise translate(OSError(code, os.strerror(code)), f"writing to {self.image.get_name()}")


def any_nonzero(data: bytes) -> bool:
    return data.count(0) != len(data)


def read_full(stream: Readable, size: int) -> bytes:
    """Read exactly ``size`` bytes unless EOF comes first."""
    parts = []
    left = size
    while left:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def copy_into(stream: Readable, image: Any, *, size_hint: int | None, what: str,
              on_chunk: Callable[[bytes], None] | None = None,
              rate: float | None = None, check: Callable[[], object] | None = None) -> int:
    """Copy ``stream`` into ``image`` from offset 0; grow the image as needed and set its final
    size to the number of bytes read. Returns that size.

    ``on_chunk`` sees every byte (checksums), ``rate`` caps bytes per second, ``check`` runs
    between chunks (deadline).
    """
    writer = SparseWriter(image)
    pacer = Pacer(what, size_hint, rate, check)
    capacity = image.size()
    offset = 0
    while True:
        data = read_full(stream, CHUNK)
        if not data:
            break
        if on_chunk is not None:
            on_chunk(data)
        end = offset + len(data)
        if end > capacity:
            capacity = max(end, capacity * 2, CHUNK)
            writer.finish()  # no resize under in-flight writes
            image.resize(capacity)
        writer.write(offset, data)
        offset = end
        pacer.advance(offset)
    writer.finish()
    if capacity != offset:
        image.resize(offset)
    return offset


def copy_file_extents(fd: int, size: int, image: Any, *, what: str,
                      on_chunk: Callable[[bytes], None] | None = None,
                      rate: float | None = None, check: Callable[[], object] | None = None,
                      ) -> None:
    """Copy a local file into ``image`` (already ``size`` bytes) reading only its data extents:
    holes are neither read nor written (``rbd import`` reads them). ``on_chunk`` still sees the
    whole content in order, holes as zeros, for checksums."""
    writer = SparseWriter(image)
    pacer = Pacer(what, size, rate, check)
    pos = 0
    for off, length in [*file_extents(fd, size), (size, 0)]:
        while on_chunk is not None and pos < off:  # a hole
            n = min(CHUNK, off - pos)
            on_chunk(_ZERO[:n])
            pos += n
        pos = off
        for chunk_off in range(off, off + length, CHUNK):
            data = os.pread(fd, min(CHUNK, off + length - chunk_off), chunk_off)
            if on_chunk is not None:
                on_chunk(data)
            writer.write(chunk_off, data)
            pos = chunk_off + len(data)
            pacer.advance(pos)
    writer.finish()


def image_chunks(image: Any, size: int) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of the image's allocated extents only, in order (holes are skipped)."""
    extents: list[tuple[int, int]] = []
    image.diff_iterate(0, size, None,
                       lambda off, n, present: extents.append((off, n)) if present else None)
    for off, length in extents:
        for pos in range(off, off + length, CHUNK):
            yield pos, image.read(pos, min(CHUNK, off + length - pos))
