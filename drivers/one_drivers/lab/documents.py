"""Documents shaped like the ones oned sends, for the lab's demo, tests and benchmarks."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape


def elements(values: dict[str, Any]) -> str:
    return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in values.items() if v is not None)


def lab_ds_template(env: dict[str, str], **extra: Any) -> dict[str, Any]:
    """An image datastore template for the lab's Ceph, as the restricted cephx user."""
    return {
        "DISK_TYPE": "RBD",
        "POOL_NAME": env["ONE_LAB_CEPH_POOL"],
        "CEPH_USER": env["ONE_LAB_CEPH_USER"],
        "CEPH_KEY": env["ONE_LAB_CEPH_KEYRING"],
        "CEPH_CONF": env["CEPH_CONF"],
        "CEPH_HOST": env["ONE_LAB_CEPH_MON"],
        "CEPH_CALL_TIMEOUT": "20",
        **extra,
    }


def ds_doc(env: dict[str, str], image_id: int | None = None, *, ds_id: int = 100,
           image: dict[str, Any] | None = None, image_template: dict[str, Any] | None = None,
           ds: dict[str, Any] | None = None) -> str:
    """A DS_DRIVER_ACTION_DATA as oned's ImageManager::format_message builds it (no IMAGE for a
    datastore monitor)."""
    parts = ["<DS_DRIVER_ACTION_DATA>"]
    if image_id is not None:
        fields = {"ID": image_id, "NAME": f"img{image_id}", "TYPE": 2, "PERSISTENT": 0,
                  "FORMAT": "raw", "STATE": 4, "DATASTORE_ID": ds_id, **(image or {})}
        parts.append(f"<IMAGE>{elements(fields)}"
                     f"<TEMPLATE>{elements(image_template or {})}</TEMPLATE></IMAGE>")
    parts.append(f"<DATASTORE><ID>{ds_id}</ID><NAME>lab_rbd</NAME><DS_MAD>rbd</DS_MAD>"
                 f"<TM_MAD>rbd</TM_MAD><TYPE>0</TYPE>"
                 f"<TEMPLATE>{elements(lab_ds_template(env, **(ds or {})))}</TEMPLATE>"
                 "</DATASTORE></DS_DRIVER_ACTION_DATA>")
    return "".join(parts)
