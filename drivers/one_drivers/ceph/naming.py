"""RBD names, upstream-compatible so an existing Ceph datastore can switch drivers.

``<pool>/one-<IMG>`` images, ``one-<IMG>-<VM>-<DISK>`` non-persistent disks, ``one-sys-<VM>-<DISK>``
volatile disks, ``one-sys-<VM>-checkpoint``; upstream's snapshot carriers ``<vol>-<id>[:<id>...]``
and base snapshot ``@snap`` are recognised, never created.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from one_drivers.core.errors import BadInput

UPSTREAM_BASE_SNAP = "snap"  # upstream's protected snapshot that its TM clones hang from
STAGING_SUFFIX = ".one-drivers-tmp"  # an import in progress; renamed when complete
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ImageSpec(NamedTuple):
    pool: str
    name: str
    snap: str | None = None
    namespace: str | None = None  # a RADOS namespace of the pool (``pool/namespace/name``)

    def __str__(self) -> str:
        base = f"{self.pool}/{self.namespace}/{self.name}" if self.namespace \
            else f"{self.pool}/{self.name}"
        return f"{base}@{self.snap}" if self.snap else base

    @classmethod
    def parse(cls, spec: str, default_pool: str | None = None) -> ImageSpec:
        """``pool/name[@snap]``, ``pool/namespace/name[@snap]`` (or ``name`` with a default
        pool), strictly validated."""
        body, _, snap = spec.strip().partition("@")
        parts = body.split("/")
        if len(parts) == 1:
            pool, namespace, name = default_pool or "", "", parts[0]
        elif len(parts) == 2:
            pool, namespace, name = parts[0], "", parts[1]
        elif len(parts) == 3:
            pool, namespace, name = parts
            if not namespace:
                raise BadInput(f"{spec!r} is not a valid RBD image spec (namespace)",
                               hint="expected POOL/IMAGE or POOL/NAMESPACE/IMAGE")
        else:
            raise BadInput(f"{spec!r} is not a valid RBD image spec",
                           hint="expected POOL/IMAGE or POOL/NAMESPACE/IMAGE")
        for part, what in ((pool, "pool"), (name, "image name"),
                           *(((namespace, "namespace"),) if namespace else ())):
            if not part or not _SAFE.match(part):
                raise BadInput(f"{spec!r} is not a valid RBD image spec ({what})",
                               hint="expected POOL/IMAGE")
        if snap and not _SAFE.match(snap):
            raise BadInput(f"{spec!r} has an invalid snapshot name")
        return cls(pool, name, snap or None, namespace or None)


def image_name(image_id: int) -> str:
    return f"one-{image_id}"


def staging_name(name: str) -> str:
    return f"{name}{STAGING_SUFFIX}"


def carrier_pattern(name: str) -> re.Pattern[str]:
    """Upstream's snapshot carriers of ``name``: ``name-0``, ``name-0:1:4`` (never VM disks,
    which have two more dash-separated numbers)."""
    return re.compile(rf"^{re.escape(name)}-\d+(:\d+)*$")


def snapshot_name(snap_id: int) -> str:
    """OpenNebula snapshot ids are RBD snapshot names, as upstream names them."""
    return str(snap_id)
