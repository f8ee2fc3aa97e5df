"""One Ceph session per action process, with timeouts and cephx from the datastore template.

``rados`` is imported when a session opens, not before: actions that fail on their input never
load librados.
"""

from __future__ import annotations

import errno
import json
import os
from types import TracebackType
from typing import Any, NamedTuple

from one_drivers.core import faults
from one_drivers.core.config import Settings
from one_drivers.core.errors import (
    ActionFailed,
    BackendTimeout,
    DriverError,
    NotFound,
    PermissionDenied,
)
from one_drivers.core.retry import Deadline

DEFAULT_CALL_TIMEOUT = 30.0


class CephAccess(NamedTuple):
    """Where and as whom to connect: POOL_NAME, CEPH_USER, CEPH_KEY, CEPH_CONF, CEPH_HOST."""

    pool: str
    user: str | None = None
    key: str | None = None
    conf: str | None = None
    mon_hosts: tuple[str, ...] = ()
    data_pool: str | None = None
    namespace: str | None = None  # a RADOS namespace of the pool (the market's NAMESPACE)

    @classmethod
    def from_settings(cls, settings: Settings) -> CephAccess:
        return cls(
            pool=settings.get("POOL_NAME", "one") or "one",
            user=settings.get("CEPH_USER"),
            key=settings.get("CEPH_KEY"),
            conf=settings.get("CEPH_CONF"),
            mon_hosts=tuple((settings.get("CEPH_HOST") or "").split()),
            data_pool=settings.get("EC_POOL_NAME"),
            namespace=settings.get("NAMESPACE") or None,
        )

    def client_options(self, timeout: float) -> dict[str, str]:
        t = str(max(1, int(timeout)))
        opts = {
            "rados_mon_op_timeout": t,
            "rados_osd_op_timeout": t,
            "client_mount_timeout": t,
            "log_to_stderr": "false",
            "err_to_stderr": "false",
        }
        if self.key:
            # CEPH_KEY is upstream's --keyfile (bare key); a full keyring file works too
            opts["keyring" if _is_keyring(self.key) else "keyfile"] = self.key
        if self.mon_hosts and not self.conf:
            opts["mon_host"] = ",".join(self.mon_hosts)
        return opts


def same_cluster(a: Settings, b: Settings) -> bool:
    """Whether two datastores' Ceph accesses reach the same cluster (the same ceph.conf, or the
    same monitors where CEPH_HOST stands for it): then a snapshot of one can be the parent of a
    clone in the other, read by the other's user; otherwise data is streamed between them."""
    def where(s: Settings) -> tuple[str, ...]:
        conf, hosts = s.get("CEPH_CONF"), (s.get("CEPH_HOST") or "").split()
        if hosts and not conf:
            return ("mon", *sorted(hosts))
        return ("conf", os.path.realpath(conf or "/etc/ceph/ceph.conf"))

    return where(a) == where(b)


def _is_keyring(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(1) == "["
    except OSError:
        return True  # let librados report the unreadable file


def translate(exc: Exception, doing: str, subject: str = "") -> DriverError:
    """A rados/rbd exception as a DriverError with the right exit code."""
    code = getattr(exc, "errno", None)
    code = abs(code) if isinstance(code, int) else None
    text = " ".join(str(exc).split()) or type(exc).__name__
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"Ceph refused {doing} ({text})", subject=subject,
                                hint="check CEPH_USER, CEPH_KEY and the user's caps")
    if code in (errno.ETIMEDOUT, errno.EINTR):
        return BackendTimeout(f"Ceph did not answer {doing} in time ({text})", subject=subject,
                              hint="check that the monitors in CEPH_CONF/CEPH_HOST are reachable")
    if code in (errno.EDQUOT, errno.ENOSPC):
        return ActionFailed(f"Ceph refused {doing}: the pool is full or its quota is reached",
                            subject=subject, hint="free space, raise the quota or use another "
                            "datastore")
    if code == errno.ENOENT:
        return NotFound(f"{doing}: not found ({text})", subject=subject)
    return ActionFailed(f"Ceph failed {doing} ({text})", subject=subject)


class CephSession:
    """``with CephSession(access, deadline) as ceph:`` connects, and always shuts down."""

    def __init__(self, access: CephAccess, deadline: Deadline, *, subject: str = "",
                 call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.access = access
        self.deadline = deadline
        self.subject = subject
        self.call_timeout = call_timeout
        self.cluster: Any = None

    def timeout(self, doing: str) -> float:
        return self.deadline.cap(self.call_timeout, doing)

    def __enter__(self) -> CephSession:
        import rados

        faults.point("ceph:connect")  # a test proves where Ceph is reached from
        t = self.timeout("connecting to Ceph")
        try:
            self.cluster = rados.Rados(
                conffile=self.access.conf or "",
                rados_id=self.access.user or None,
                conf=self.access.client_options(t),
            )
            self.cluster.connect(timeout=max(1, int(t)))
        except rados.Error as exc:
            self.close()
            if abs(getattr(exc, "errno", 0) or 0) == errno.ENOENT:  # librados found no key
                user = self.access.user or "admin"
                raise PermissionDenied(f"no key for cephx user client.{user}",
                                       subject=self.subject,
                                       hint="set CEPH_KEY or add the keyring to ceph.conf"
                                       ) from None
            raise translate(exc, "the connection", self.subject) from None
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.cluster is not None:
            try:
                self.cluster.shutdown()
            finally:
                self.cluster = None

    def mon_command(self, cmd: dict[str, Any], doing: str) -> Any:
        """A monitor command with JSON output; raises a DriverError on failure."""
        import rados

        t = self.timeout(doing)
        try:
            ret, out, status = self.cluster.mon_command(json.dumps({**cmd, "format": "json"}),
                                                        b"", timeout=max(1, int(t)))
        except rados.Error as exc:
            raise translate(exc, doing, self.subject) from None
        if ret != 0:
            err = OSError(-ret, status or errno.errorcode.get(-ret, str(ret)))
            raise translate(err, doing, self.subject)
        return json.loads(out) if out else None
