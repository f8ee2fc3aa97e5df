"""Live migration with shared RBD disks: premigrate, postmigrate, failmigrate.

Disks need nothing (the destination opens the same RBD images); the VM directory (context ISO,
deployment file) must reach the destination before libvirt migrates, the source's goes after a
success, the destination's copy after a failure. Disks on other datastores get their own TM's
migrate action (upstream's ``migrate_other``), called with our name as the extra argument so they
do not call back. Argv: ``SRC_HOST DST_HOST VM_DIR VMID DSID [CALLER]``, stdin: the VM.
"""

from __future__ import annotations

import os
import subprocess

from one_drivers.core import log, remote
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import ActionFailed
from one_drivers.tm.rbd.vmdir import MARKER, _run, copy_dir, same_directory, vm_dir_of


def _same_host(call: Call) -> bool:
    src, dst = call.args["src_host"], call.args["dst_host"]
    return bool(src == dst or (remote.is_local(src) and remote.is_local(dst)))


def migrate_other(call: Call, action: str) -> None:
    """Run ``action`` of every other TM driver the VM's disks use."""
    if call.args["caller"]:
        return  # we were called by another TM: it does the others
    remotes = call.extras.get("remotes") or os.environ.get("ONE_DRIVERS_REMOTES",
                                                           "/var/lib/one/remotes")
    others = sorted({d.opt("TM_MAD") for d in call.doc.disks()} - {None, call.driver})
    argv = [call.args["src_host"], call.args["dst_host"], call.args["vm_dir"],
            str(call.args["vmid"]), str(call.args["dsid"]), call.driver]
    for tm_mad in others:
        script = os.path.join(os.fspath(remotes), "tm", str(tm_mad), action)
        if not os.access(script, os.X_OK):
            log.info(f"no {tm_mad}/{action} in {remotes}: nothing to do for those disks")
            continue
        timeout = call.deadline.cap(call.deadline.remaining(), f"{tm_mad}/{action}")
        proc = subprocess.run([script, *argv], input=call.extras["stdin"],  # as oned sent it
                              capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ActionFailed(f"{tm_mad}/{action} failed: {lines[-1] if lines else ''}")
        log.info(f"{tm_mad}/{action} done for its disks")


def premigrate(call: Call) -> None:
    vmid = call.args["vmid"]
    vm_dir = vm_dir_of(HostPath("", call.args["vm_dir"]), vmid)
    if not _same_host(call):
        timeout = call.deadline.cap(call.settings.float("SSH_TIMEOUT", 600), "copying")
        src, dst = HostPath(call.args["src_host"], vm_dir), HostPath(call.args["dst_host"],
                                                                     vm_dir)
        copy_dir(src, vm_dir, dst, vm_dir, timeout)  # leaves the marker for postmigrate
        log.info(f"copied the VM directory to {dst.host}")
    migrate_other(call, "premigrate")


def _finish(call: Call, action: str) -> None:
    """After the migration: remove one side's directory (the source after a success, the
    destination's copy after a failure), unless both names are the same directory."""
    vm_dir = vm_dir_of(HostPath("", call.args["vm_dir"]), call.args["vmid"])
    migrate_other(call, action)
    if _same_host(call):
        return
    timeout = call.deadline.cap(call.settings.float("SSH_TIMEOUT", 600), "cleaning up")
    src, dst = call.args["src_host"], call.args["dst_host"]
    # premigrate's copy on the destination carries a marker with a nonce
    marker = remote.run(dst, ["cat", "--", f"{vm_dir}/{MARKER}"], timeout=timeout, check=False)
    nonce = marker.stdout.decode().strip() if marker.returncode == 0 else ""
    if not nonce and action == "failmigrate":
        log.info(f"no copy of ours on {dst}: nothing to clean")
        return
    if nonce and same_directory(src, vm_dir, nonce, timeout):
        log.info(f"{src} and {dst} share {vm_dir}: kept")
    else:
        doomed = src if action == "postmigrate" else dst
        _run(doomed, ["rm", "-rf", "--", vm_dir], timeout)
        log.info(f"removed the VM directory on {doomed}")
    _run(dst, ["rm", "-f", "--", f"{vm_dir}/{MARKER}"], timeout, check=False)


def postmigrate(call: Call) -> None:
    """The guest runs on the destination: the source's directory goes."""
    _finish(call, "postmigrate")


def failmigrate(call: Call) -> None:
    """The guest stays on the source: the destination's copy goes (upstream leaves it)."""
    _finish(call, "failmigrate")
