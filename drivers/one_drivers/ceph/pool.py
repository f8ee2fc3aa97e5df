"""``with rbd_pool(...) as pool``: a session and an I/O context, for one action."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from one_drivers.ceph.rbd_ops import ceph_errors
from one_drivers.ceph.session import CephAccess, CephSession
from one_drivers.core.config import Settings
from one_drivers.core.errors import BadInput
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
    def other(self, pool: str, namespace: str | None = None) -> Iterator[Any]:
        """An I/O context for another pool (or namespace) of the same cluster (this one when
        it is the same)."""
        if pool == self.name and namespace == self.access.namespace:
            yield self.ioctx
            return
        with ceph_errors(f"opening pool {pool}", self.session.subject):
            ioctx = self.cluster.open_ioctx(pool)
            if namespace:
                ioctx.set_namespace(namespace)
        try:
            yield ioctx
        finally:
            ioctx.close()


def _check_namespace(ioctx: Any, access: CephAccess, subject: str) -> None:
    """A namespace that does not exist is named (librbd would only say "not found" later)."""
    import rbd

    from one_drivers.core.errors import NotFound

    if access.namespace not in rbd.RBD().namespace_list(ioctx):
        raise NotFound(f"RBD namespace {access.pool}/{access.namespace} does not exist",
                       subject=subject,
                       hint=f"create it: rbd namespace create {access.pool}/{access.namespace}")


def require_format_2(settings: Settings, subject: str) -> None:
    """RBD_FORMAT as upstream reads it (2 by default). Since Luminous librbd makes format 2
    whatever it is asked, and every image here is cloned or snapshotted: RBD_FORMAT=1 cannot be
    honoured, so an action that would create an image says so instead of silently ignoring it."""
    value = (settings.get("RBD_FORMAT") or "2").strip()
    if value == "2":
        return
    if value == "1":
        raise BadInput("RBD_FORMAT=1: this Ceph creates only format-2 images (and OpenNebula's "
                       "clones and snapshots need format 2)", subject=subject,
                       hint="remove RBD_FORMAT from the datastore, or set it to 2")
    raise BadInput(f"RBD_FORMAT={value!r} is not an RBD image format (1 or 2)", subject=subject,
                   hint="remove RBD_FORMAT from the datastore, or set it to 2")


@contextmanager
def rbd_pool(settings: Settings, deadline: Deadline, subject: str, *,
             creating: bool = False) -> Iterator[Pool]:
    """``creating``: the action makes an image, so RBD_FORMAT must be one it can make."""
    if creating:
        require_format_2(settings, subject)
    access = CephAccess.from_settings(settings)
    with CephSession(access, deadline, subject=subject,
                     call_timeout=settings.float("CEPH_CALL_TIMEOUT", 30)) as session:
        with ceph_errors(f"opening pool {access.pool}", subject):
            ioctx = session.cluster.open_ioctx(access.pool)
            if access.namespace:
                _check_namespace(ioctx, access, subject)
                ioctx.set_namespace(access.namespace)
        try:
            yield Pool(session, ioctx, access.pool, access)
        finally:
            ioctx.close()
