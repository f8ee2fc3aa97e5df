"""Test helpers: oned-shaped documents and running installed remotes as OpenNebula does."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape


def elements(values: dict[str, Any]) -> str:
    return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in values.items() if v is not None)


def lab_ds_template(env: dict[str, str], **extra: Any) -> dict[str, Any]:
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
    """A DS_DRIVER_ACTION_DATA as oned's ImageManager::format_message builds it."""
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


def run_remote(remotes: Path, action: str, argv: list[str], stdin: str | bytes, *,
               base64_stdin: bool = True, timeout: float = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    if base64_stdin:
        data = base64.b64encode(data)
    proc = subprocess.run([str(remotes / action), *argv], input=data, capture_output=True,
                          timeout=timeout, check=False, env=env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def rbd_names(ioctx: Any) -> set[str]:
    import rbd

    return set(rbd.RBD().list(ioctx))


def trash_names(ioctx: Any) -> set[str]:
    import rbd

    return {e["name"] for e in rbd.RBD().trash_list(ioctx)}


def read_image(ioctx: Any, name: str, snapshot: str | None = None) -> bytes:
    import rbd

    with rbd.Image(ioctx, name, snapshot=snapshot, read_only=True) as image:
        return bytes(image.read(0, image.size()))


def allocated(ioctx: Any, name: str) -> int:
    """Bytes allocated in the image itself (a clone's parent data not counted)."""
    import rbd

    total = 0

    def count(offset: int, length: int, exists: bool) -> None:
        nonlocal total
        if exists:
            total += length

    with rbd.Image(ioctx, name, read_only=True) as image:
        image.diff_iterate(0, image.size(), None, count, include_parent=False)
    return total
