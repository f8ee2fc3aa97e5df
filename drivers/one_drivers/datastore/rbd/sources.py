"""Where ``cp`` and ``stat`` read images from: a local path, ``http(s)://`` or ``rbd://``.

Each source is a byte stream with an optional known size. Compressed streams (gzip, bzip2, xz) are
decompressed on the fly unless NO_DECOMPRESS; the first bytes after that tell the disk format.

A source reads only itself (SECURITY.md). A local file is opened once; RESTRICTED_DIRS is checked
against what that descriptor really is, and only the descriptor is read, qemu-img included. A
disk header that names another file (qcow2/qed backing, qcow2 external data, multi-file or delta
vmdk, differencing vhd) is refused. ``rbd://`` sources are read with the datastore's own
credentials, from the pools RBD_SOURCE_POOLS allows (default: the datastore's own). http
downloads end at the action's deadline however slowly the server trickles.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import stat
import struct
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.session import CephAccess, CephSession
from one_drivers.core import relay
from one_drivers.core.config import Settings
from one_drivers.core.errors import (
    ActionFailed,
    BackendTimeout,
    BackendUnavailable,
    BadInput,
    NotFound,
    PermissionDenied,
)
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
    local_fd: int | None = None  # when the source is a plain local file: its descriptor

    def close(self) -> None:
        for obj in reversed(self.closer):
            try:
                obj.close()
            except Exception:  # noqa: S112 - closing a source must not hide the real error
                continue


def open_local(path: Path, settings: Settings) -> int:
    """Open a local source once and check what was opened: a regular file, and (by the path
    the descriptor really has, whatever symlinks were swapped meanwhile) not restricted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"source {path} does not exist") from None
    except OSError as exc:
        raise ActionFailed(f"cannot read source {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadInput(f"source {path} is not a regular file")
        os.set_blocking(fd, True)
        check_path_allowed(Path(os.readlink(f"/proc/self/fd/{fd}")), settings, label=path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_path_allowed(real: Path, settings: Settings, *, label: Path | None = None) -> None:
    """RESTRICTED_DIRS / SAFE_DIRS as upstream's check_restricted applies them, to the real
    path of an opened file."""
    restricted = (settings.get("RESTRICTED_DIRS") or "").split()
    safe = (settings.get("SAFE_DIRS") or "").split()
    path = label or real
    real = real.resolve()

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


def parse_rbd_url(url: str) -> ImageSpec:
    """``rbd://host/pool/image[@snap]``. Credentials never come from a URL (an image source
    is a tenant's text): a user name, a password or a query in it is refused."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password or parts.query:
        raise BadInput("rbd:// sources carry no user, key or configuration",
                       hint="the datastore's own Ceph credentials are used")
    return ImageSpec.parse(urllib.parse.unquote(parts.path.lstrip("/")))


def rbd_source_settings(url: str, settings: Settings, deadline: Deadline,
                        subject: str = "") -> Settings:
    """Whose Ceph access reads an ``rbd://`` URL: the datastore's own, or for a restore's
    source on a backup datastore (``rbd://backup-<id>/``, only ever granted) that datastore's,
    asked of oned (it may be another cluster)."""
    from one_drivers.datastore.rbdbackup.access import backup_settings, datastore_of

    ds_id = datastore_of(urllib.parse.urlsplit(url).hostname or "")
    if ds_id is None:
        return settings
    return backup_settings(ds_id, deadline, settings.float("ONED_TIMEOUT", 15), subject)


def allowed_source_pools(settings: Settings) -> list[str]:
    pools = (settings.get("RBD_SOURCE_POOLS") or "").split()
    return pools or [settings.get("POOL_NAME", "one") or "one"]


def refuse_references(fmt: str, head: bytes, label: str) -> None:
    """Refuse, from the first bytes, a disk image whose header names another file."""
    hint = "register a self-contained image (qemu-img convert it first)"
    try:
        if fmt == "qcow2":
            backing = struct.unpack_from(">Q", head, 8)[0]
            version = struct.unpack_from(">I", head, 4)[0]
            incompatible = struct.unpack_from(">Q", head, 72)[0] if version >= 3 else 0
            if backing:
                raise BadInput(f"{label} is a qcow2 image with a backing file", hint=hint)
            if incompatible & 0x4:
                raise BadInput(f"{label} keeps its data in an external file", hint=hint)
        elif fmt == "qed" and struct.unpack_from("<Q", head, 16)[0] & 0x1:
            raise BadInput(f"{label} is a qed image with a backing file", hint=hint)
        elif fmt == "vmdk":
            _check_vmdk(head, label, hint)
        elif fmt == "vpc" and struct.unpack_from(">I", head, 60)[0] == 4:
            raise BadInput(f"{label} is a differencing vhd image", hint=hint)
    except struct.error:
        raise BadInput(f"{label} has a truncated {fmt} header") from None


def _check_vmdk(head: bytes, label: str, hint: str) -> None:
    if not head.startswith(b"KDMV"):  # a text descriptor: the data is in other files
        raise BadInput(f"{label} is a vmdk descriptor whose data is in other files", hint=hint)
    offset, size = struct.unpack_from("<QQ", head, 28)
    text = head[offset * 512:(offset + size) * 512].split(b"\0", 1)[0].decode("latin-1")
    create_type = ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "createType":
            create_type = value.strip().strip('"')
        if key.strip() == "parentFileNameHint":
            raise BadInput(f"{label} is a vmdk delta of another file", hint=hint)
    if create_type and create_type not in ("monolithicSparse", "streamOptimized"):
        raise BadInput(f"{label} is a {create_type} vmdk (more than one file)", hint=hint)


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


GRANTED_SOURCE = "ONE_DRIVERS_GRANTED_SOURCE"  # set by a front-end relaying to a bridge


class Requester(NamedTuple):
    """Who an image is imported for: the image's owner, its name, and a driver's grant."""

    uid: int | None
    gid: int | None
    name: str
    grant: str | None

    @property
    def admin(self) -> bool:
        return self.uid == 0 or self.gid == 0  # oneadmin, or the oneadmin group

    @classmethod
    def of(cls, image: Any) -> Requester:
        def num(key: str) -> int | None:
            value = image.opt(key)
            return int(value) if value is not None and value.lstrip("-").isdigit() else None

        return cls(num("UID"), num("GID"), image.opt("NAME") or "",
                   image.template.get("RBD_SOURCE_GRANT"))


def market_of(doc: Any, remotes: str | None = None) -> Settings | None:
    """The ``rbd`` marketplace an image is exported from, with its Ceph access: oned adds the
    MARKETPLACE to cp's document only for an image made from an app (FROM_APP), whose PATH it
    set to the app's SOURCE itself (MarketPlaceApp::to_template): a tenant cannot put it
    there."""
    from one_drivers.core.config import config_path, load_file
    from one_drivers.core.registry import get_driver
    from one_drivers.core.xmlview import Template

    if doc.opt("MARKETPLACE/MARKET_MAD") != "rbd" or not doc.image.template.get("FROM_APP"):
        return None
    market = doc.child("MARKETPLACE", Template)
    base = Settings([get_driver("market", "rbd").default_values(),
                     load_file(config_path("market", "rbd", remotes))], subject=doc.subject)
    return base.over(market.child("TEMPLATE", Template, required=False))


def open_source(path: str, settings: Settings, deadline: Deadline, subject: str,
                tap: Callable[[bytes], None] | None = None,
                data: IO[bytes] | None = None, *,
                requester: Requester | None = None, market: Settings | None = None) -> Opened:
    """Open ``path`` for reading, decompressing unless NO_DECOMPRESS; ``tap`` sees the bytes
    as fetched (before decompression). ``data`` is the file's content when a front-end sent it
    along (BRIDGE_LIST mode): the path was checked there. ``requester``: for whom (an
    ``rbd://`` source is the oneadmin group's, or granted by a driver); ``market``: the rbd
    marketplace an app is exported from (any user may export an app oned lets them use; it is
    read with the market's own Ceph access and must be an app's snapshot there)."""
    timeout = deadline.cap(settings.float("SOURCE_TIMEOUT", 60), "opening the source")
    closer: list[Any] = []
    local_fd: int | None = None
    scheme = urllib.parse.urlsplit(path).scheme.lower()
    if scheme in ("http", "https"):
        raw, size = _open_http(path, timeout, deadline, closer)
    elif scheme == "rbd":
        raw, size = _open_rbd(path, settings, deadline, subject, closer, requester, market)
    elif scheme in ("", "file") and data is not None:
        raw, size = data, None
    elif scheme in ("", "file"):
        local_fd = open_local(Path(urllib.parse.urlsplit(path).path if scheme else path),
                              settings)
        raw = os.fdopen(local_fd, "rb")
        size = os.fstat(local_fd).st_size
    else:
        raise BadInput(f"unsupported source {path!r}",
                       hint="use a local path, http(s):// or rbd://")
    closer.append(raw)
    source: Any = Tap(raw, tap) if tap else raw
    stream = Peekable(source)
    opened = Opened(stream, size, redact(path), closer, local_fd=local_fd)
    if not settings.bool("NO_DECOMPRESS", False):
        head = stream.peek(6)
        for magic, kind in COMPRESSIONS.items():
            if head.startswith(magic):
                opened.compression = kind
                opened.stream = Peekable(_decompressor(kind, stream))
                opened.size = None
                opened.local_fd = None
                break
    return opened


def _decompressor(kind: str, stream: Peekable) -> Any:
    raw: Any = stream  # the stdlib wants a file object; read() is all it uses
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    return lzma.LZMAFile(raw, mode="rb")


def redact(url: str) -> str:
    """A URL as it may appear in a message or a log: no password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class DeadlineReader:
    """An http response that ends at the action's deadline, however slowly it trickles: a
    watchdog shuts the socket down then (each read's own timeout cannot, as every byte resets
    it), and the read that fails becomes a timeout naming the source."""

    def __init__(self, response: Any, deadline: Deadline, label: str) -> None:
        import threading

        self.response, self.deadline, self.label = response, deadline, label
        self.fired = threading.Event()
        self.watchdog = threading.Timer(deadline.remaining(), self._expire)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _expire(self) -> None:
        import socket

        self.fired.set()
        sock = getattr(getattr(getattr(self.response, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self.response.read(n)
        except (OSError, ValueError) as exc:
            if self.fired.is_set():
                raise BackendTimeout(f"downloading {self.label} did not finish within "
                                     f"{self.deadline.seconds:g} s") from None
            raise BackendUnavailable(f"downloading {self.label} failed ({exc})") from None
        if self.fired.is_set() or self.deadline.expired:
            raise BackendTimeout(f"downloading {self.label} did not finish within "
                                 f"{self.deadline.seconds:g} s")
        return data

    def close(self) -> None:
        self.watchdog.cancel()
        self.response.close()


def _open_http(url: str, timeout: float, deadline: Deadline,
               closer: list[Any]) -> tuple[IO[bytes], int | None]:
    import urllib.error  # ~17 ms of imports: only for http sources
    import urllib.request

    label = redact(url)
    headers = {"User-Agent": "one-drivers"}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:  # user:password@ becomes basic authentication, as curl does
        import base64

        unquote = urllib.parse.unquote
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = parts.hostname or ""
        netloc = f"[{netloc}]" if ":" in netloc else netloc
        url = urllib.parse.urlunsplit(parts._replace(
            netloc=netloc + (f":{parts.port}" if parts.port else "")))
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFound(f"source {label} does not exist (HTTP 404)") from None
        raise ActionFailed(f"source {label} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendUnavailable(f"cannot download {label} ({reason})",
                                 hint="check the URL and that the server is reachable") from None
    length = response.headers.get("Content-Length")
    reader = DeadlineReader(response, deadline, label)
    return reader, int(length) if length and length.isdigit() else None  # type: ignore[return-value]


def _open_rbd(url: str, settings: Settings, deadline: Deadline, subject: str,
              closer: list[Any], requester: Requester | None,
              market: Settings | None = None) -> tuple[IO[bytes], int]:
    from one_drivers.ceph import grants
    from one_drivers.market.rbd import apps

    spec = parse_rbd_url(url)
    if market is not None:
        market_pool = market.get("POOL_NAME") or ""
        namespace = market.get("NAMESPACE") or None
        if spec.pool != market_pool or spec.namespace != namespace \
                or not apps.is_app_snapshot(spec):
            raise PermissionDenied(f"{spec} is not an app of the marketplace (pool "
                                   f"{market_pool}{'/' + namespace if namespace else ''})",
                                   hint="export the app again")
        return _open_app(spec, market, deadline, subject, closer)
    allowed = allowed_source_pools(settings)
    # requester None: oned's size probe (stat), which names no owner; only a size leaves it.
    # On a bridge the grant was checked by the front-end (its key), which says so for this URL.
    granted = (requester is None or grants.valid(requester.grant, url, requester.name)
               or (relay.on_far_side() and os.environ.get(GRANTED_SOURCE) == url))
    if not granted and not (requester is not None and requester.admin):
        # a tenant's PATH: any image of the pool (another tenant's disk) could be named
        raise PermissionDenied(f"rbd:// source {spec}: only the oneadmin group may import from "
                               "RBD directly",
                               hint="other users import files or URLs; a driver grants a "
                                    "restore its own source")
    if not granted and spec.pool not in allowed:
        raise BadInput(f"rbd:// source {spec} is in pool {spec.pool}, which this datastore may "
                       f"not read from (RBD_SOURCE_POOLS: {' '.join(allowed)})",
                       hint="an administrator can add the pool to RBD_SOURCE_POOLS")
    access = CephAccess.from_settings(rbd_source_settings(url, settings, deadline, subject))
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


def _open_app(spec: Any, market: Settings, deadline: Deadline, subject: str,
              closer: list[Any]) -> tuple[IO[bytes], int]:
    """An app's snapshot, read as the market's Ceph user; only an image our market stamped
    as an app (a SOURCE cannot name any other image of that pool)."""
    import rbd

    from one_drivers.ceph import ownership

    session = CephSession(CephAccess.from_settings(market), deadline, subject=subject).__enter__()
    closer.append(session)
    ioctx = session.cluster.open_ioctx(spec.pool)
    closer.append(ioctx)
    if spec.namespace:
        ioctx.set_namespace(spec.namespace)
    try:
        image = rbd.Image(ioctx, spec.name, snapshot=spec.snap, read_only=True)
    except rbd.ImageNotFound:
        raise NotFound(f"the app {spec} does not exist") from None
    closer.append(image)
    if ownership.read(image).get("kind") != "app":
        raise PermissionDenied(f"{spec} is not a one-drivers app", hint="export the app again")
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
