"""``with rbd_pool(...) as pool``: a session and an I/O context, for one action."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from one_drivers.ceph.rbd_ops import ceph_errors
from one_drivers.ceph.session import CephAccess, CephSession
from one_drivers.core.config import Settings
from one_drivers.core.retry import Deadline


class Pool(NamedTuple):
    session: CephSession
    ioctx: Any
    name: str
    access: CephAccess

    @property
    def cluster(self) -> Any:
        return self.session.cluster

    @contextmanager
    def other(self, pool: str) -> Iterator[Any]:
        """An I/O context for another pool of the same cluster (this one when it is the same)."""
        if pool == self.name:
            yield self.ioctx
            return
        with ceph_errors(f"opening pool {pool}", self.session.subject):
            ioctx = self.cluster.open_ioctx(pool)
        try:
            yield ioctx
        finally:
            ioctx.close()


@contextmanager
def rbd_pool(settings: Settings, deadline: Deadline, subject: str) -> Iterator[Pool]:
    access = CephAccess.from_settings(settings)
    with CephSession(access, deadline, subject=subject,
                     call_timeout=settings.float("CEPH_CALL_TIMEOUT", 30)) as session:
        with ceph_errors(f"opening pool {access.pool}", subject):
            ioctx = session.cluster.open_ioctx(access.pool)
        try:
            yield Pool(session, ioctx, access.pool, access)
        finally:
            ioctx.close()
