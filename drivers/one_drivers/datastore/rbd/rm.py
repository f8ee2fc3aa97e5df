"""DS ``rm``: the image with everything that belongs to it, and nothing else.

Its snapshots, upstream's snapshot carriers (``one-<ID>-<snapids>``, the images upstream's reverts
left as its parents), the clone snapshot it hung from if we made it, and an interrupted import's
staging image. A source image that still has clones is hidden in the RBD trash until the last one
goes. CEPH_TRASH=yes moves the image to the trash for TRASH_DEFERMENT seconds instead;
``one-drivers rbd trash-purge`` removes expired entries.
"""

from __future__ import annotations

from one_drivers.ceph import ownership
from one_drivers.ceph.build import building, drop_staging
from one_drivers.ceph.cloning import release_parent
from one_drivers.ceph.naming import ImageSpec, carrier_pattern, image_name, staging_name
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import (
    ceph_errors,
    exists,
    open_image,
    parent,
    refuse_if_watched,
    remove_image,
)
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed
from one_drivers.datastore.rbd.common import ds_settings, source_spec


def ancestry(pool: Pool, spec: ImageSpec) -> tuple[ImageSpec | None, list[ImageSpec]]:
    """The image's parent snapshot, and the upstream carriers among its ancestors."""
    carriers: list[ImageSpec] = []
    is_carrier = carrier_pattern(spec.name)
    with open_image(pool.ioctx, spec.name, read_only=True) as image:
        first = parent(image)
    current = first
    while current is not None and current.pool == spec.pool and is_carrier.match(current.name):
        carriers.append(ImageSpec(current.pool, current.name))
        with open_image(pool.ioctx, current.name, read_only=True) as image:
            current = parent(image)
    return first, carriers


def check_ours(pool: Pool, spec: ImageSpec, call: Call, own_pool: str) -> None:
    """Remove only this image: upstream's name for it (``one-<ID>``) or our stamp naming it,
    in the datastore's own pool. A SOURCE pointing anywhere else is refused, not obeyed."""
    image_id = call.doc.image.id
    if spec.pool == own_pool and spec.name == image_name(image_id):
        return
    if spec.pool == own_pool:
        with open_image(pool.ioctx, spec.name, read_only=True) as image:
            meta = ownership.read(image)
        if meta.get("kind") == "image" and meta.get("image") == str(image_id):
            return
    raise ActionFailed(f"{spec} is not image {image_id}'s (neither named one-{image_id} in "
                       f"pool {own_pool} nor stamped by one-drivers for it): not removed",
                       hint="remove it by hand if it really belongs to this image")


def rm(call: Call) -> None:
    settings = ds_settings(call)
    own_pool = settings.get("POOL_NAME", "one") or "one"
    spec = source_spec(call, settings)
    settings = settings.over({"POOL_NAME": spec.pool})
    with rbd_pool(settings, call.deadline, call.subject) as pool, \
            ceph_errors(f"removing {spec}", call.subject):
        with building(pool, spec, call.subject, call.deadline.remaining()):
            drop_staging(pool, staging_name(spec.name))  # an interrupted import's, not a live one
        if not exists(pool.ioctx, spec.name):  # gone, or left in the trash by a killed run
            parents: list[ImageSpec | None] = []
            if remove_image(pool.cluster, pool.ioctx, spec.name,
                            opened=lambda image: parents.append(parent(image))) == "removed":
                log.info(f"finished removing {spec}, left in the trash by an interrupted run")
                if parents and parents[0] is not None:
                    release_parent(pool.cluster, parents[0])
            else:
                log.info(f"{spec} is already gone")
            return
        check_ours(pool, spec, call, own_pool)
        refuse_if_watched(pool.cluster, pool.ioctx, spec.name, call.deadline,
                          settings.float("WATCHER_WAIT", 10))
        par, carriers = ancestry(pool, spec)
        if settings.bool("CEPH_TRASH", False):
            import rbd

            delay = settings.int("TRASH_DEFERMENT", 86400)
            rbd.RBD().trash_move(pool.ioctx, spec.name, delay)
            log.info(f"moved {spec} to the RBD trash for {delay} s")
            return
        outcome = remove_image(pool.cluster, pool.ioctx, spec.name)
        if outcome == "hidden":
            log.info(f"{spec} still has clones: hidden in the RBD trash until they are gone")
        for carrier in carriers:  # nearest first: each frees the next
            if remove_image(pool.cluster, pool.ioctx, carrier.name) == "removed":
                log.info(f"removed {carrier}, a snapshot carrier left by upstream's driver")
        if par is not None and outcome == "removed":
            release_parent(pool.cluster, par)
