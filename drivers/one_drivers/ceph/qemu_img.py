"""qemu-img where no API exists: format inspection and conversion straight into RBD.

The RBD target is qemu's ``rbd:pool/image:opt=value`` filename; option values (paths from the
configuration) are escaped so a ``:`` cannot start a new option. No secret is ever on argv: the
keyring is a file path.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from one_drivers.ceph.session import CephAccess
from one_drivers.core.errors import ActionFailed, BackendTimeout


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def rbd_target(access: CephAccess, pool: str, name: str, timeout: float) -> str:
    parts = [f"rbd:{_escape(pool)}/{_escape(name)}"]
    if access.user:
        parts.append(f"id={_escape(access.user)}")
    if access.conf:
        parts.append(f"conf={_escape(access.conf)}")
    opts = access.client_options(timeout)
    for key in ("keyring", "keyfile", "mon_host", "rados_osd_op_timeout",
                "rados_mon_op_timeout"):
        if key in opts:
            parts.append(f"{key}={_escape(opts[key].replace(',', ';'))}")
    return ":".join(parts)


def _run(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BackendTimeout(f"{what} did not finish within {timeout:g} s") from None
    except FileNotFoundError:
        raise ActionFailed("qemu-img is not installed", hint="install qemu-utils") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ActionFailed(f"{what} failed: {lines[-1] if lines else proc.returncode}")
    return proc


def info(path: Path, fmt: str | None, timeout: float) -> dict[str, object]:
    argv = ["qemu-img", "info", "--output=json"]
    if fmt:
        argv += ["-f", fmt]
    out = _run([*argv, str(path)], timeout, f"qemu-img info of {path}").stdout
    data: dict[str, object] = json.loads(out)
    return data


def virtual_size(path: Path, fmt: str | None, timeout: float) -> int:
    size = info(path, fmt, timeout).get("virtual-size")
    if not isinstance(size, int):
        raise ActionFailed(f"qemu-img could not tell the size of {path}")
    return size


def convert_into_rbd(path: Path, fmt: str, access: CephAccess, pool: str, name: str,
                     timeout: float) -> None:
    """Write ``path`` (any qemu format) as raw into the existing, empty RBD image ``name``."""
    target = rbd_target(access, pool, name, min(timeout, 60))
    _run(["qemu-img", "convert", "-f", fmt, "-O", "raw", "-n", "--target-is-zero", "-W",
          "-m", "8", str(path), target], timeout, f"converting {fmt} into {pool}/{name}")
