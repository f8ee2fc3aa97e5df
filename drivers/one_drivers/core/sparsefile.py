"""Sparse disk data over a pipe: only data extents travel, holes stay holes on both ends.

Used between the front-end and a host over ssh (``.ssh`` TM actions): the host side runs
``python -m one_drivers.core.sparsefile receive|send PATH``. The stream is a header with the total
size, then ``(offset, length, bytes)`` records, then an end mark; a reader that does not see the
end mark fails, so a cut connection never leaves a silently truncated disk.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import IO

MAGIC = b"ODSPARSE1"
END = 0xFFFFFFFFFFFFFFFF
CHUNK = 4 * 1024 * 1024
_HEAD = struct.Struct(">Q")
_RECORD = struct.Struct(">QI")


class Truncated(Exception):
    pass


def file_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data in a sparse file (SEEK_DATA / SEEK_HOLE)."""
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end - start))
        offset = end
    return extents


def write_stream(out: IO[bytes], size: int, chunks: Iterable[tuple[int, bytes]]) -> None:
    out.write(MAGIC + _HEAD.pack(size))
    for offset, data in chunks:
        if data and data.count(0) != len(data):  # zero runs stay holes
            out.write(_RECORD.pack(offset, len(data)))
            out.write(data)
    out.write(_HEAD.pack(END))
    out.flush()


def _read_exact(inp: IO[bytes], n: int) -> bytes:
    parts, left = [], n
    while left:
        part = inp.read(left)
        if not part:
            raise Truncated(f"the stream ended {left} bytes early")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_stream(inp: IO[bytes]) -> tuple[int, Iterator[tuple[int, bytes]]]:
    """The total size, and the data records (the iterator raises Truncated on a cut stream)."""
    if _read_exact(inp, len(MAGIC)) != MAGIC:
        raise Truncated("not a one-drivers sparse stream")
    (size,) = _HEAD.unpack(_read_exact(inp, _HEAD.size))

    def records() -> Iterator[tuple[int, bytes]]:
        while True:
            (offset,) = _HEAD.unpack(_read_exact(inp, _HEAD.size))
            if offset == END:
                return
            (length,) = struct.unpack(">I", _read_exact(inp, 4))
            yield offset, _read_exact(inp, length)

    return size, records()


def file_chunks(fd: int, size: int) -> Iterator[tuple[int, bytes]]:
    for start, length in file_extents(fd, size):
        for off in range(start, start + length, CHUNK):
            yield off, os.pread(fd, min(CHUNK, start + length - off), off)


def send_file(path: str, out: IO[bytes]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        write_stream(out, size, file_chunks(fd, size))
    finally:
        os.close(fd)


def receive_file(inp: IO[bytes], path: str) -> int:
    """Write the stream to ``path`` (via a temporary name, renamed when complete)."""
    tmp = f"{path}.one-drivers-tmp"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        size, records = read_stream(inp)
        for offset, data in records:
            os.pwrite(fd, data, offset)
        os.ftruncate(fd, size)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return size


def mark_for_monitoring(path: str, tm_mad: str) -> None:
    """``path`` is a VM disk in a local system datastore (``<location>/<ds>/<vm>/disk.N``): mark
    the datastore's directory as the ssh TM does (``.monitor`` naming the TM), so the host's
    monitoring reports its space (OpenNebula's monitor_ds probe reads only marked ones)."""
    marker = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), ".monitor")
    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(tm_mad + "\n")


def main(argv: list[str]) -> int:
    mark = argv[3] if len(argv) == 4 and argv[2] == "--monitor" else None
    if argv[:1] not in (["send"], ["receive"]) or len(argv) != (4 if mark else 2):
        sys.stderr.write("usage: python -m one_drivers.core.sparsefile send PATH | "
                         "receive PATH [--monitor TM_MAD]\n")
        return 2
    try:
        if argv[0] == "send":
            send_file(argv[1], sys.stdout.buffer)
        else:
            receive_file(sys.stdin.buffer, argv[1])
            if mark:
                mark_for_monitoring(argv[1], mark)
    except (OSError, Truncated) as exc:
        sys.stderr.write(f"{argv[1]}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
