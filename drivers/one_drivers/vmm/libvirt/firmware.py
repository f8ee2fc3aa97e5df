"""UEFI guests: the per-VM NVRAM (variable store) oned names in the deployment file.

oned writes ``<loader type="pflash">FIRMWARE</loader>`` and ``<nvram>SYSTEM_DIR/NAME_VARS.fd
</nvram>`` for OS/FIRMWARE UEFI guests. The store lives in the VM's own directory, so it is kept
across poweroff, save/restore and migration (the VM directory travels with the VM) and goes
when the VM's directory is deleted. Deploy makes it when it is missing, from OVMF_NVRAM or the
variable-store template that goes with the loader (Debian's ``ovmf``: ``OVMF_CODE*.fd`` ->
``OVMF_VARS*.fd``); an existing one is never replaced (it holds the guest's boot entries and
keys). The path must be a file directly in the VM's directory: created exclusively, without
following a symlink, so a name planted there cannot redirect the copy.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from one_drivers.core import log
from one_drivers.core.config import Settings
from one_drivers.core.errors import ActionFailed, BadInput


def template_for(loader: str, settings: Settings) -> Path | None:
    """The variable-store template for ``loader``: OVMF_NVRAM when set, else the loader's own
    ``VARS`` sibling (``OVMF_CODE_4M.secboot.fd`` -> ``OVMF_VARS_4M.fd``)."""
    configured = settings.get("OVMF_NVRAM")
    if configured:
        return Path(configured)
    code = Path(loader)
    if "CODE" not in code.name:
        return None
    name = code.name.replace("CODE", "VARS")
    for candidate in (name, name.replace(".secboot", ""), name.replace(".secboot", ".ms")):
        if (code.parent / candidate).is_file():
            return code.parent / candidate
    return None


def ensure_nvram(root: ET.Element, vm_dir: str, settings: Settings) -> None:
    nvram = root.find("os/nvram")
    path = (nvram.text or "").strip() if nvram is not None else ""
    if not path:
        return
    target = Path(path)
    if os.path.normpath(target.parent) != os.path.normpath(vm_dir):
        raise BadInput(f"the NVRAM {path} is not in the VM's directory {vm_dir}")
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not target.is_file():
            raise BadInput(f"the NVRAM {path} is not a regular file")
        return
    loader = (root.findtext("os/loader") or "").strip()
    template = template_for(loader, settings)
    if template is None or not template.is_file():
        raise ActionFailed(f"no UEFI variable store template for the loader {loader or '?'}"
                           + (f" ({template} is missing)" if template else ""),
                           hint="install Debian's ovmf package on the host, or set OVMF_NVRAM "
                                "in the driver's configuration")
    fmt = (nvram.get("format") or "raw") if nvram is not None else "raw"
    if fmt != "raw":
        raise BadInput(f"NVRAM format {fmt!r}: only raw variable stores are made here",
                       hint="use a raw OVMF firmware (FIRMWARE_FORMAT raw)")
    os.makedirs(vm_dir, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:  # made meanwhile by a concurrent deploy: theirs stands
        return
    try:
        with open(template, "rb") as src, os.fdopen(fd, "wb") as dst:
            fd = -1
            shutil.copyfileobj(src, dst)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        target.unlink(missing_ok=True)
        raise
    log.info(f"made the UEFI variable store {path} from {template}")
