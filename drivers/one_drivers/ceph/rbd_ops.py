"""RBD primitives shared by the DS and TM drivers.

They raise the bindings' own exceptions so callers can branch on ImageNotFound and friends; an
action wraps each step in :func:`ceph_errors` to turn what is left into a DriverError naming the
object. Snapshots are clone v2: a snapshot with clones can be removed (Ceph keeps it in its trash
namespace until the last clone goes), so no snapshot ever becomes undeletable. Images with
upstream's protected snapshots (clone v1) are handled too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from one_drivers.ceph import ownership
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.session import translate
from one_drivers.core import faults, log


@contextmanager
def ceph_errors(doing: str, subject: str = "") -> Iterator[None]:
    """Turn rbd/rados exceptions raised while ``doing`` into DriverErrors."""
    import rados
    import rbd

    try:
        yield
    except (rbd.Error, rados.Error) as exc:
        raise translate(exc, doing, subject) from None


@contextmanager
def open_image(ioctx: Any, name: str, *, snapshot: str | None = None,
               read_only: bool = False) -> Iterator[Any]:
    import rbd

    image = rbd.Image(ioctx, name, snapshot=snapshot, read_only=read_only)
    try:
        yield image
    finally:
        image.close()


def exists(ioctx: Any, name: str) -> bool:
    import rbd

    try:
        rbd.Image(ioctx, name, read_only=True).close()
    except rbd.ImageNotFound:
        return False
    return True


def create(ioctx: Any, name: str, size: int, *, data_pool: str | None,
           meta: dict[str, str]) -> None:
    """A format-2 image with default features, ownership stamped before anyone can use it."""
    import rbd

    rbd.RBD().create(ioctx, name, size, old_format=False, data_pool=data_pool or None)
    faults.point("create:created")
    with open_image(ioctx, name) as image:
        ownership.apply(image, meta)


def clone(parent_ioctx: Any, parent: ImageSpec, ioctx: Any, name: str, *,
          data_pool: str | None, meta: dict[str, str], grow_to: int = 0) -> None:
    """A copy-on-write clone of ``parent`` (with its snapshot) as ``name``.

    Clone v2 needs no protected snapshot; a parent snapshot that is protected already (upstream's
    ``@snap``) works as it is.
    """
    import rbd

    if not parent.snap:
        raise ValueError(f"cloning {parent} needs a parent snapshot")
    rbd.RBD().clone(parent_ioctx, parent.name, parent.snap, ioctx, name,
                    data_pool=data_pool or None)
    faults.point("clone:cloned")
    with open_image(ioctx, name) as image:
        ownership.apply(image, meta)
        if image.size() < grow_to:  # a disk bigger than its image: in the same open
            image.resize(grow_to)


def user_snaps(image: Any) -> list[dict[str, Any]]:
    """Snapshots in the user namespace (not the trash or group ones Ceph keeps)."""
    import rbd

    snaps = []
    for snap in image.list_snaps():
        if snap.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER) == \
                rbd.RBD_SNAP_NAMESPACE_TYPE_USER:
            snaps.append(snap)
    return snaps


def snap_names(image: Any) -> list[str]:
    return [s["name"] for s in user_snaps(image)]


def children(image: Any, snap: str) -> list[ImageSpec]:
    """Clones hanging from ``image@snap`` (those in the RBD trash included)."""
    image.set_snap(snap)
    try:
        return [ImageSpec(c["pool"], c["image"]) for c in image.list_children2()]
    finally:
        image.set_snap(None)


def parent(image: Any) -> ImageSpec | None:
    import rbd

    try:
        spec = image.get_parent_image_spec()
    except rbd.ImageNotFound:
        return None
    return ImageSpec(spec["pool_name"], spec["image_name"], spec["snap_name"])


def depth(cluster: Any, ioctx: Any, name: str, limit: int = 32) -> int:
    """How many ancestors ``name`` has (0 for an image that is not a clone)."""
    n = 0
    current: ImageSpec | None = ImageSpec("", name)
    pool_ioctx = ioctx
    while current is not None and n < limit:
        if current.pool:
            pool_ioctx = cluster.open_ioctx(current.pool)
        try:
            with open_image(pool_ioctx, current.name, read_only=True) as image:
                current = parent(image)
        finally:
            if pool_ioctx is not ioctx:
                pool_ioctx.close()
                pool_ioctx = ioctx
        if current is not None:
            n += 1
    return n


def flatten_children(cluster: Any, image: Any, snap: str) -> None:
    """Make every clone of ``image@snap`` independent (a full copy of what it shares)."""
    for child in children(image, snap):
        ioctx = cluster.open_ioctx(child.pool)
        try:
            with open_image(ioctx, child.name) as c:
                log.info(f"flattening {child} so that {snap!r} can go")
                c.flatten()
        finally:
            ioctx.close()


def remove_snap(cluster: Any, image: Any, snap: str) -> None:
    """Remove a snapshot even if it has clones.

    Clone v2 children keep a removed snapshot alive in Ceph's trash namespace; a protected
    (clone v1) snapshot with children has its children flattened first, since Ceph cannot move it.
    """
    import rbd

    if image.is_protected_snap(snap):
        if children(image, snap):
            flatten_children(cluster, image, snap)
        image.unprotect_snap(snap)
    try:
        image.remove_snap(snap)
    except rbd.ImageBusy:  # a v1 clone appeared in between: flatten it and retry once
        flatten_children(cluster, image, snap)
        image.remove_snap(snap)


def remove_image(cluster: Any, ioctx: Any, name: str) -> str:
    """Remove ``name`` and its snapshots; returns ``removed``, ``hidden`` or ``absent``.

    An image whose snapshots still have clones (another image cloned from it) cannot disappear
    yet without breaking them: it is moved to the RBD trash, out of sight, and collected when its
    last clone is removed (:func:`collect_parent`) or by ``one-drivers rbd trash-purge``.
    """
    import rbd

    try:
        with open_image(ioctx, name) as image:
            for snap in snap_names(image):
                remove_snap(cluster, image, snap)
                faults.point("remove:snapshot-removed")
    except rbd.ImageNotFound:
        return "absent"
    try:
        rbd.RBD().remove(ioctx, name)
        return "removed"
    except rbd.ImageNotFound:
        return "absent"
    except (rbd.ImageHasSnapshots, rbd.ImageBusy):
        rbd.RBD().trash_move(ioctx, name, 0)
        return "hidden"


def trash_entry(ioctx: Any, name: str) -> dict[str, Any] | None:
    import rbd

    for entry in rbd.RBD().trash_list(ioctx):
        if entry["name"] == name:
            found: dict[str, Any] = entry
            return found
    return None


def collect_parent(cluster: Any, spec: ImageSpec) -> bool:
    """After a clone went away: purge its parent if we hid it in the trash and it is now free."""
    import rbd

    ioctx = cluster.open_ioctx(spec.pool)
    try:
        entry = trash_entry(ioctx, spec.name)
        if entry is None or entry.get("source", "USER") != "USER":  # not moved by a user: not us
            return False
        try:
            rbd.RBD().trash_remove(ioctx, entry["id"], True)
        except (rbd.ImageHasSnapshots, rbd.ImageBusy):
            return False  # still has other clones
        log.info(f"removed {spec.pool}/{spec.name}: its last clone is gone")
        return True
    finally:
        ioctx.close()
