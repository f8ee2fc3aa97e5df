"""qemu-img where no API exists: format inspection and conversion straight into RBD.

A source image only ever reads itself. qemu-img gets it as a descriptor we opened and checked
(``/proc/self/fd/N``, passed to the child), wrapped in a ``json:`` specification that names the
format driver and the ``file`` protocol explicitly and sets ``backing`` to null: whatever the
header says (a backing file, ``rbd:...:keyring=...``, ``json:``, ``nbd:``), qemu opens nothing
else. Headers naming other files are refused before that (:mod:`datastore.rbd.sources`), and
``info`` is checked again for a backing file, an external data file or extra extents.

The RBD target is qemu's ``rbd:pool/image:opt=value`` filename; option values (paths from the
configuration) are escaped so a ``:`` cannot start a new option. No secret is ever on argv: the
keyring is a file path.
"""

from __future__ import annotations

import json
import subprocess

from one_drivers.ceph.session import CephAccess
from one_drivers.core.errors import ActionFailed, BackendTimeout, BadInput


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


# formats whose qemu driver takes a backing node (set to null so none is ever opened)
_HAS_BACKING = ("qcow2", "qed", "vmdk")


def source_spec(fmt: str, fd: int) -> str:
    """The only way a source reaches qemu-img: this descriptor, this format, nothing else."""
    spec: dict[str, object] = {"driver": fmt, "file": {"driver": "file",
                                                       "filename": f"/proc/self/fd/{fd}",
                                                       "locking": "off"}}
    if fmt in _HAS_BACKING:
        spec["backing"] = None
    return "json:" + json.dumps(spec, separators=(",", ":"))


def _run(argv: list[str], timeout: float, what: str,
         pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False,
                              pass_fds=pass_fds)
    except subprocess.TimeoutExpired:
        raise BackendTimeout(f"{what} did not finish within {timeout:g} s") from None
    except FileNotFoundError:
        raise ActionFailed("qemu-img is not installed", hint="install qemu-utils") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ActionFailed(f"{what} failed: {lines[-1] if lines else proc.returncode}")
    return proc


def info(fd: int, fmt: str, timeout: float, label: str) -> dict[str, object]:
    out = _run(["qemu-img", "info", "--output=json", source_spec(fmt, fd)], timeout,
               f"qemu-img info of {label}", (fd,)).stdout
    data: dict[str, object] = json.loads(out)
    _refuse_references(data, fmt, label)
    return data


def _refuse_references(data: dict[str, object], fmt: str, label: str) -> None:
    """qemu's own reading of the header, checked again: nothing but the image itself."""
    specific = data.get("format-specific")
    details = specific.get("data", {}) if isinstance(specific, dict) else {}
    extents = details.get("extents", []) if isinstance(details, dict) else []
    if data.get("backing-filename") or data.get("full-backing-filename"):
        raise BadInput(f"{label} names a backing file ({data.get('backing-filename')})",
                       hint="register a self-contained image (qemu-img convert it first)")
    if isinstance(details, dict) and details.get("data-file"):
        raise BadInput(f"{label} keeps its data in an external file",
                       hint="register a self-contained image")
    if isinstance(extents, list) and len(extents) > 1:
        raise BadInput(f"{label} is a {fmt} image of {len(extents)} files",
                       hint="register a single-file (monolithic) image")


def virtual_size(fd: int, fmt: str, timeout: float, label: str) -> int:
    size = info(fd, fmt, timeout, label).get("virtual-size")
    if not isinstance(size, int):
        raise ActionFailed(f"qemu-img could not tell the size of {label}")
    return size


def convert_into_rbd(fd: int, fmt: str, access: CephAccess, pool: str, name: str,
                     timeout: float) -> None:
    """Write the image open on ``fd`` (any qemu format) as raw into the existing, empty RBD
    image ``name``."""
    target = rbd_target(access, pool, name, min(timeout, 60))
    _run(["qemu-img", "convert", "-O", "raw", "-n", "--target-is-zero", "-W",
          "-m", "8", source_spec(fmt, fd), target], timeout,
         f"converting {fmt} into {pool}/{name}", (fd,))
