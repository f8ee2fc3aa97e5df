"""Where ``cp`` and ``stat`` read images from: a local path, ``http(s)://`` or ``rbd://``.

Each source is a byte stream with an optional known size. Compressed streams (gzip, bzip2, xz) are
decompressed on the fly unless NO_DECOMPRESS; the first bytes after that tell the disk format.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.session import CephAccess, CephSession
from one_drivers.core.config import Settings
from one_drivers.core.errors import ActionFailed, BackendUnavailable, BadInput, NotFound
from one_drivers.core.retry import Deadline

PEEK = 64 * 1024

COMPRESSIONS = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
# disk formats qemu-img converts to raw; everything else is taken as raw
FORMAT_MAGIC = [
    (0, b"QFI\xfb", "qcow2"),
    (0, b"KDMV", "vmdk"),
    (0, b"# Disk DescriptorFile", "vmdk"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),
    (0, b"vhdxfile", "vhdx"),
    (0, b"conectix", "vpc"),
    (0, b"QED\x00", "qed"),
]


class Peekable:
    """A read-only stream whose first bytes can be looked at without consuming them."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.buffer = b""

    def peek(self, n: int) -> bytes:
        while len(self.buffer) < n:
            more = self.raw.read(n - len(self.buffer))
            if not more:
                break
            self.buffer += more
        return self.buffer[:n]

    def read(self, n: int = -1) -> bytes:
        if self.buffer:
            if n < 0 or n >= len(self.buffer):
                data, self.buffer = self.buffer, b""
                rest = self.raw.read(-1 if n < 0 else n - len(data))
                return data + (rest or b"")
            data, self.buffer = self.buffer[:n], self.buffer[n:]
            return data
        return self.raw.read(n)

    def close(self) -> None:
        self.raw.close()


@dataclass
class Opened:
    stream: Peekable
    size: int | None  # bytes of the stream as it is read (None when unknown)
    label: str
    closer: list[Any]
    compression: str | None = None
    local_path: Path | None = None  # when the source is a plain local file

    def close(self) -> None:
        for obj in reversed(self.closer):
            try:
                obj.close()
            except Exception:  # noqa: S112 - closing a source must not hide the real error
                continue


def check_path_allowed(path: Path, settings: Settings) -> None:
    """RESTRICTED_DIRS / SAFE_DIRS as upstream's check_restricted applies them."""
    restricted = (settings.get("RESTRICTED_DIRS") or "").split()
    safe = (settings.get("SAFE_DIRS") or "").split()
    real = path.resolve()

    def under(dirs: list[str]) -> bool:
        return any(real == Path(d).resolve() or Path(d).resolve() in real.parents for d in dirs)

    if restricted and under(restricted) and not under(safe):
        raise BadInput(f"{path} is in a restricted directory (RESTRICTED_DIRS)",
                       hint="move it under SAFE_DIRS or register it from a URL")


class RbdReader:
    """Sequential reads from an RBD image (another pool or cluster) for ``rbd://`` sources."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.size = image.size()
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        if n <= 0:
            return b""
        data: bytes = self.image.read(self.pos, n)
        self.pos += len(data)
        return data

    def close(self) -> None:
        pass


def parse_rbd_url(url: str) -> tuple[ImageSpec, dict[str, str]]:
    """``rbd://[user@]host/pool/image[@snap]?CEPH_USER=..&CEPH_KEY=..&CEPH_CONF=..``."""
    parts = urllib.parse.urlsplit(url)
    spec = ImageSpec.parse(urllib.parse.unquote(parts.path.lstrip("/")))
    query = {k.upper(): v for k, v in urllib.parse.parse_qsl(parts.query)}
    if parts.username and "CEPH_USER" not in query:
        query["CEPH_USER"] = parts.username
    return spec, query


class Tap:
    """Passes every byte read through ``fn`` (checksums of the source as it was fetched)."""

    def __init__(self, raw: Any, fn: Callable[[bytes], None]) -> None:
        self.raw, self.fn = raw, fn

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.raw.read(n)
        if data:
            self.fn(data)
        return data

    def close(self) -> None:
        self.raw.close()


def open_source(path: str, settings: Settings, deadline: Deadline, subject: str,
                tap: Callable[[bytes], None] | None = None,
                data: IO[bytes] | None = None) -> Opened:
    """Open ``path`` for reading, decompressing unless NO_DECOMPRESS; ``tap`` sees the bytes
    as fetched (before decompression). ``data`` is the file's content when a front-end sent it
    along (BRIDGE_LIST mode): the path was checked there."""
    timeout = deadline.cap(settings.float("SOURCE_TIMEOUT", 60), "opening the source")
    closer: list[Any] = []
    local: Path | None = None
    scheme = urllib.parse.urlsplit(path).scheme.lower()
    if scheme in ("http", "https"):
        raw, size = _open_http(path, timeout)
    elif scheme == "rbd":
        raw, size = _open_rbd(path, settings, deadline, subject, closer)
    elif scheme in ("", "file") and data is not None:
        raw, size = data, None
    elif scheme in ("", "file"):
        local = Path(urllib.parse.urlsplit(path).path if scheme else path)
        check_path_allowed(local, settings)
        try:
            raw = open(local, "rb")  # noqa: SIM115 - closed by Opened.close
        except FileNotFoundError:
            raise NotFound(f"source {local} does not exist") from None
        except OSError as exc:
            raise ActionFailed(f"cannot read source {local}: {exc.strerror}") from None
        size = os.fstat(raw.fileno()).st_size
    else:
        raise BadInput(f"unsupported source {path!r}",
                       hint="use a local path, http(s):// or rbd://")
    closer.append(raw)
    source: Any = Tap(raw, tap) if tap else raw
    stream = Peekable(source)
    opened = Opened(stream, size, path, closer, local_path=local)
    if not settings.bool("NO_DECOMPRESS", False):
        head = stream.peek(6)
        for magic, kind in COMPRESSIONS.items():
            if head.startswith(magic):
                opened.compression = kind
                opened.stream = Peekable(_decompressor(kind, stream))
                opened.size = None
                opened.local_path = None
                break
    return opened


def _decompressor(kind: str, stream: Peekable) -> Any:
    raw: Any = stream  # the stdlib wants a file object; read() is all it uses
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    return lzma.LZMAFile(raw, mode="rb")


def _open_http(url: str, timeout: float) -> tuple[IO[bytes], int | None]:
    import urllib.error  # ~17 ms of imports: only for http sources
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "one-drivers"})  # noqa: S310
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFound(f"source {url} does not exist (HTTP 404)") from None
        raise ActionFailed(f"source {url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendUnavailable(f"cannot download {url} ({reason})",
                                 hint="check the URL and that the server is reachable") from None
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def _open_rbd(url: str, settings: Settings, deadline: Deadline, subject: str,
              closer: list[Any]) -> tuple[IO[bytes], int]:
    spec, query = parse_rbd_url(url)
    access = CephAccess.from_settings(settings.over({k: v for k, v in query.items()
                                                     if k.startswith("CEPH_")}))
    session = CephSession(access, deadline, subject=subject).__enter__()
    closer.append(session)
    ioctx = session.cluster.open_ioctx(spec.pool)
    closer.append(ioctx)
    import rbd

    try:
        image = rbd.Image(ioctx, spec.name, snapshot=spec.snap, read_only=True)
    except rbd.ImageNotFound:
        raise NotFound(f"source {spec} does not exist") from None
    closer.append(image)
    reader = RbdReader(image)
    return reader, reader.size  # type: ignore[return-value]


def sniff_format(head: bytes) -> str:
    for offset, magic, name in FORMAT_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    return "raw"


def header_virtual_size(fmt: str, head: bytes) -> int | None:
    """Virtual disk size from the first bytes, for the formats whose header carries it."""
    try:
        if fmt == "qcow2":
            return int(struct.unpack_from(">Q", head, 24)[0])
        if fmt == "vmdk" and head.startswith(b"KDMV"):
            return int(struct.unpack_from("<Q", head, 12)[0]) * 512
        if fmt == "vdi":
            return int(struct.unpack_from("<Q", head, 0x170)[0])
        if fmt == "qed":
            return int(struct.unpack_from("<Q", head, 40)[0])
    except struct.error:
        return None
    return None
