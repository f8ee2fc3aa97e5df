"""RBD primitives shared by the DS and TM drivers.

They raise the bindings' own exceptions so callers can branch on ImageNotFound and friends; an
action wraps each step in :func:`ceph_errors` to turn what is left into a DriverError naming the
object. Snapshots are clone v2: a snapshot with clones can be removed (Ceph keeps it in its trash
namespace until the last clone goes), so no snapshot ever becomes undeletable. Images with
upstream's protected snapshots (clone v1) are handled too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from one_drivers.ceph import ownership
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.session import translate
from one_drivers.core import faults, log
from one_drivers.core.errors import ActionFailed
from one_drivers.core.retry import Deadline


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
    ``@snap``) works as it is. ``grow_to``: the size the clone must reach, 0 when the parent's
    will do.
    """
    import rbd

    if not parent.snap:
        raise ValueError(f"cloning {parent} needs a parent snapshot")
    rbd.RBD().clone(parent_ioctx, parent.name, parent.snap, ioctx, name,
                    data_pool=data_pool or None)
    faults.point("clone:cloned")
    if not grow_to:
        ownership.apply_unopened(ioctx, name, meta)  # the common case: no open needed
        return
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


RELEASE_BATCH = 16  # snapshot ids freed at once (threads; the bindings have no async call)


def release_snap_ids(cluster: Any, ioctx: Any, image: Any) -> int:
    """Free the RADOS snapshot ids of an image about to be removed, all at once.

    Removing an RBD snapshot ends with a monitor commit that librbd waits for, one snapshot at a
    time (it serialises snapshot operations per image), and the monitor spaces commits by
    ``paxos_propose_interval`` (1 s by default): five snapshots cost five commits. Released
    together the ids share one commit; librbd's own removal then finds them released (the
    monitor answers that from memory) and only edits the image header. The snapshots' data is
    gone from that moment, so this is only for images being removed, and never for a snapshot
    with clones or protected (someone else still reads it). Returns how many were released.
    """
    import threading

    free = [s for s in user_snaps(image) if not image.is_protected_snap(s["name"])
            and not children(image, s["name"])]
    if not free:
        return 0
    data_pool = image.data_pool_id()
    own_pool = data_pool in (-1, ioctx.get_pool_id())
    if not own_pool and cluster is None:
        return 0  # no way to the data pool here: librbd releases them one by one
    data_ioctx = ioctx if own_pool else cluster.open_ioctx2(data_pool)
    errors: list[BaseException] = []

    def release(snap_id: int) -> None:
        try:
            data_ioctx.remove_self_managed_snap(snap_id)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    try:
        for start in range(0, len(free), RELEASE_BATCH):  # a batch shares one commit
            batch = [s["id"] for s in free[start:start + RELEASE_BATCH]]
            threads = [threading.Thread(target=release, args=(i,)) for i in batch[1:]]
            for t in threads:
                t.start()
            release(batch[0])
            for t in threads:
                t.join()
    finally:
        if data_ioctx is not ioctx:
            data_ioctx.close()
    if errors:
        raise errors[0]
    return len(free)


def remove_image(cluster: Any, ioctx: Any, name: str, *,
                 opened: Callable[[Any], object] | None = None,
                 abandoned: bool = False) -> str:
    """Remove ``name`` and its snapshots; returns ``removed``, ``hidden`` or ``absent``.

    ``opened`` is shown the open image before anything changes (to read what the caller needs
    afterwards, such as its parent, without opening it once more).

    An image whose snapshots still have clones (another image cloned from it) cannot disappear
    yet without breaking them: it is moved to the RBD trash, out of sight, and collected when its
    last clone is removed (:func:`collect_parent`) or by ``one-drivers rbd trash-purge``.

    An image with snapshots goes to the trash *first*: their RADOS ids are then released
    together (:func:`release_snap_ids`), which ends their data at once, and nobody must find
    the image by its name from that moment. A crash there leaves it in the trash (expired, so a
    re-run, or trash-purge, finishes it), never a visible image whose snapshots are half gone.

    An image a client has open is refused, never hidden, unless ``abandoned``: a staging image
    whose builder is provably gone (its watch lingers until the OSD times it out) is hidden in
    the trash, for trash-purge.
    """
    import rbd

    try:
        with open_image(ioctx, name) as image:
            if opened is not None:
                opened(image)
            image_id = image.id()
            has_snaps = bool(snap_names(image))
            others = [] if abandoned else _other_watchers(cluster, image)
    except rbd.ImageNotFound:
        entry = trash_entry(ioctx, name)
        if entry is None or not _expired(entry):
            return "absent"
        return _remove_trashed(cluster, ioctx, entry["id"], opened)  # a crashed run's: finish
    if others:  # the trash would not refuse it: we do
        raise ActionFailed(f"{name} is in use by another Ceph client",
                           hint="is a VM still running on it? stop it and retry")
    if has_snaps:
        try:
            rbd.RBD().trash_move(ioctx, name, 0)
        except rbd.ImageNotFound:
            return "absent"
        faults.point("remove:trashed")
        return _remove_trashed(cluster, ioctx, image_id)
    try:
        rbd.RBD().remove(ioctx, name)
        return "removed"
    except rbd.ImageNotFound:
        return "absent"
    except rbd.ImageHasSnapshots:
        rbd.RBD().trash_move(ioctx, name, 0)
        return "hidden"
    except rbd.ImageBusy:  # a client opened it meanwhile: never hide a disk someone writes
        if abandoned:
            rbd.RBD().trash_move(ioctx, name, 0)
            return "hidden"
        raise ActionFailed(f"{name} is in use by another Ceph client",
                           hint="is a VM still running on it? stop it and retry") from None


def _other_watchers(cluster: Any, image: Any) -> list[str]:
    """Clients other than this one that have ``image`` open (our own open watches it too)."""
    me = cluster.get_instance_id() if cluster is not None else None
    return [str(w["addr"]) for w in image.watchers_list() if w["id"] != me]


def _expired(entry: dict[str, Any]) -> bool:
    """Moved with no deferment (by a removal): not an operator's CEPH_TRASH keep-for-later."""
    import datetime

    end = entry.get("deferment_end_time")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return not isinstance(end, datetime.datetime) or end <= now


def _remove_trashed(cluster: Any, ioctx: Any, image_id: str,
                    opened: Callable[[Any], object] | None = None) -> str:
    """Remove a trashed image's snapshots (ids released together) and the image; ``hidden``
    when a snapshot still has clones (it waits in the trash for them). ``opened``: as for
    :func:`remove_image`, when a re-run finds the image only in the trash."""
    import rbd

    image = rbd.Image(ioctx, image_id=image_id)
    try:
        if opened is not None:
            opened(image)
        release_snap_ids(cluster, ioctx, image)
        faults.point("remove:snap-ids-released")
        for snap in snap_names(image):
            remove_snap(cluster, image, snap)
            faults.point("remove:snapshot-removed")
    finally:
        image.close()
    try:
        rbd.RBD().trash_remove(ioctx, image_id, True)
        return "removed"
    except rbd.ImageNotFound:
        return "absent"
    except (rbd.ImageHasSnapshots, rbd.ImageBusy):
        return "hidden"


def watchers(ioctx: Any, name: str) -> list[str]:
    """Addresses of the clients that have ``name`` open (read-only opens do not watch, so our
    own look is not among them)."""
    with open_image(ioctx, name, read_only=True) as image:
        return [str(w["addr"]) for w in image.watchers_list()]


def blocklisted(cluster: Any) -> set[str]:
    """Client addresses the cluster has fenced (``ceph osd blocklist``): provably gone."""
    import json

    try:
        ret, out, _ = cluster.mon_command(json.dumps({"prefix": "osd blocklist ls",
                                                      "format": "json"}), b"", timeout=10)
    except Exception:
        return set()
    if ret != 0:
        return set()
    try:
        return {str(e.get("addr", "")) for e in json.loads(out or b"[]")}
    except ValueError:
        return set()


def refuse_if_watched(cluster: Any, ioctx: Any, name: str, deadline: Deadline,
                      wait: float) -> None:
    """Upstream refuses to remove an image that a client still has open, and so do we: a VM on
    a partitioned host keeps writing into whatever disk it holds. A watcher that is fenced
    (blocklisted) or whose watch times out within ``wait`` seconds (bounded by the deadline) is
    provably gone; anything else is refused, naming the client."""
    import time

    import rbd

    until = time.monotonic() + min(wait, deadline.remaining())
    while True:
        try:
            live = watchers(ioctx, name)
        except rbd.ImageNotFound:
            return
        if live:
            fenced = blocklisted(cluster)
            live = [a for a in live if a not in fenced]
        if not live:
            return
        if time.monotonic() >= until:
            raise ActionFailed(f"{name} is in use by Ceph client {', '.join(live)}",
                               hint="is a VM still running on it? stop it, or fence a dead "
                                    "client with `ceph osd blocklist add <addr>`, and retry")
        time.sleep(1)


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
