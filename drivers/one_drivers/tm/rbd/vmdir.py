"""TM actions on the VM directory of a host: context, mv, delete (of the directory).

With a Ceph system datastore the directory holds only what the host needs locally: the context
ISO, the deployment file, snapshot metadata. Commands reach hosts through core remote execution
(ssh in BatchMode, argv lists); data between two hosts flows through the front-end, so hosts need
no ssh access to each other and a move to the same host is a no-op.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, exists, remove_image
from one_drivers.core import faults, log, remote
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import ActionFailed, BadInput, DriverError

CHECKPOINT = "one-sys-{vmid}-checkpoint"


def vm_dir_of(where: HostPath, vmid: int) -> str:
    """The VM directory a line names, refusing anything that is not ``.../<VMID>``: these
    paths end in ``rm -rf``."""
    path = where.vm_dir.rstrip("/")
    if not re.fullmatch(rf"/.+/\d+/{vmid}", path) or ".." in path.split("/"):
        raise BadInput(f"{where} is not a VM directory of VM {vmid}",
                       hint="expected <DATASTORE_LOCATION>/<SYS_DS_ID>/<VM_ID>")
    return path


def delete_vm_dir(call: Call, where: HostPath) -> None:
    """The VM directory on the host, and the checkpoint image a stop may have left in Ceph."""
    vmid = call.args["vmid"]
    path = vm_dir_of(where, vmid)
    timeout = call.deadline.cap(call.settings.float("SSH_TIMEOUT", 60), f"removing {path}")
    remote.run(where.host, ["rm", "-rf", "--", path], timeout=timeout, idempotent=True)
    log.info(f"removed {where.host}:{path}")
    settings = call.settings
    try:
        from one_drivers.tm.rbd.common import oned_for

        settings = settings.over(oned_for(call).datastore(call.args["dsid"]).template)
    except Exception as exc:  # the checkpoint is optional: a missing datastore must not block
        log.info(f"no system datastore {call.args['dsid']} template ({exc}); "
                 "looking for the checkpoint in the default pool")
    name = CHECKPOINT.format(vmid=vmid)
    with rbd_pool(settings, call.deadline, call.subject) as pool, \
            ceph_errors(f"removing {pool.name}/{name}", call.subject):
        if exists(pool.ioctx, name):
            remove_image(pool.cluster, pool.ioctx, name)
            log.info(f"removed {pool.name}/{name}")


def context(call: Call) -> None:
    """The context ISO, built here from the files given and written to ``disk.<i>`` on the host.
    ``file:name`` entries are put in the ISO as ``name``."""
    dst: HostPath = call.args["dst"]
    vm_dir_of(dst, call.args["vmid"])
    with tempfile.TemporaryDirectory(prefix="one-drivers-context-") as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        for i, spec in enumerate(call.args["files"]):
            src, _, name = spec.partition(":")
            name = name or ("context.sh" if i == 0 else Path(src).name)
            if "/" in name or name in ("", ".", ".."):
                raise BadInput(f"context file name {name!r} is not a plain file name")
            try:
                shutil.copyfile(src, content / name)
            except OSError as exc:
                raise ActionFailed(f"cannot read context file {src}: {exc.strerror}") from None
        iso = Path(tmp) / "context.iso"
        timeout = call.deadline.cap(120, "building the context ISO")
        try:
            proc = subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "CONTEXT",
                                   "-J", "-R", "-o", str(iso), str(content)],
                                  capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise ActionFailed("xorriso is not installed on the front-end") from None
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ActionFailed(f"building the context ISO failed: {lines[-1] if lines else ''}")
        ssh_timeout = call.deadline.cap(call.settings.float("SSH_TIMEOUT", 60), "copying")
        from one_drivers.core.sparsefile import send_file
        from one_drivers.tm.rbd.common import send_to_host

        send_to_host(dst, call.settings.get("HOST_PYTHON") or sys.executable,
                     lambda out: send_file(str(iso), out), ssh_timeout)
    log.info(f"context ISO written to {dst}")


MARKER = ".one-drivers-copy"


def _run(host: str, argv: list[str], timeout: float, *, check: bool = True) -> int:
    return remote.run(host, argv, timeout=timeout, check=check).returncode


def copy_dir(src: HostPath, src_dir: str, dst: HostPath, dst_dir: str,
             timeout: float) -> str:
    """Copy a VM directory between hosts through the front-end; returns the copy's nonce.

    The copy lands in a temporary directory and replaces ``dst_dir`` only when complete, so the
    source is never touched: even when both names are the same machine (short name and FQDN,
    OpenNebula/one#3010) nothing is lost. A marker holding a nonce proves later whether two
    paths are the same directory.
    """
    import secrets

    nonce = secrets.token_hex(8)
    parent, name = src_dir.rsplit("/", 1)
    dst_parent = dst_dir.rsplit("/", 1)[0]
    staging = f"{dst_parent}/.one-drivers-tmp-{name}-{nonce}"
    # what a killed earlier copy of this VM's directory left
    _run(dst.host, ["find", dst_parent, "-maxdepth", "1", "-name",
                    f".one-drivers-tmp-{name}-*", "-exec", "rm", "-rf", "--", "{}", "+"],
         timeout, check=False)
    _run(dst.host, ["mkdir", "-p", "--", staging], timeout)
    try:
        reader = remote.popen(src.host, ["tar", "--sparse", "-C", parent, "-cf", "-", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            remote.run(dst.host, ["tar", "-C", staging, "-xf", "-"], stdin=reader.stdout,
                       timeout=timeout)
        finally:
            if reader.stdout is not None:
                reader.stdout.close()
            rc = reader.wait(timeout=timeout)
        if rc != 0:
            raise ActionFailed(f"reading {src.host}:{src_dir} failed (tar exit {rc})")
        faults.point("copy-dir:copied")
        remote.run(dst.host, ["dd", f"of={staging}/{name}/{MARKER}", "status=none"],
                   input=nonce.encode(), timeout=timeout)
        _run(dst.host, ["rm", "-rf", "--", dst_dir], timeout)
        _run(dst.host, ["mv", "--", f"{staging}/{name}", dst_dir], timeout)
    finally:
        # whatever failed (or nothing did: then it is empty), the staging directory goes
        remote.run(dst.host, ["rm", "-rf", "--", staging], timeout=timeout, check=False)
    return nonce


def same_directory(host: str, path: str, nonce: str, timeout: float) -> bool:
    """Whether ``host:path`` holds the copy marked with ``nonce`` (then it is the copy)."""
    proc = remote.run(host, ["cat", "--", f"{path}/{MARKER}"], timeout=timeout, check=False,
                      idempotent=True)
    return proc.returncode == 0 and proc.stdout.decode().strip() == nonce


# LCM states in which the source host is lost: UNKNOWN, PROLOG_MIGRATE_UNKNOWN(_FAILURE)
SOURCE_LOST_STATES = frozenset({16, 60, 61})


def _source_is_lost(call: Call, vmid: int) -> bool:
    from one_drivers.tm.rbd.common import oned_for

    try:
        state = oned_for(call).vm(vmid).lcm_state
    except DriverError as exc:  # as upstream, which moves when it cannot tell: the source says
        log.info(f"cannot read VM {vmid}'s state from oned ({exc}): moving as usual")
        return False
    return state in SOURCE_LOST_STATES


def mv(call: Call) -> None:
    """Per disk: nothing, disks are in Ceph. The VM directory: from host to host (stop,
    undeploy, resume, cold migration), streamed through the front-end."""
    src: HostPath = call.args["src"]
    dst: HostPath = call.args["dst"]
    if src.disk_index is not None:
        return
    vmid = call.args["vmid"]
    src_dir, dst_dir = vm_dir_of(src, vmid), vm_dir_of(dst, vmid)
    timeout = call.deadline.cap(call.settings.float("SSH_TIMEOUT", 600), "moving the VM dir")
    if _source_is_lost(call, vmid):
        # recovering from a failed host (onevm recover, the HA hook): its disks are in Ceph,
        # and the source may be powered off; the destination gets an empty directory that
        # deploy fills (as upstream, which moves nothing in these states)
        _run(dst.host, ["mkdir", "-p", "--", dst_dir], timeout)
        log.info(f"the VM's host {src.host} failed: nothing moved from it")
        return
    if src_dir == dst_dir and (src.host == dst.host or
                               (remote.is_local(src.host) and remote.is_local(dst.host))):
        log.info("source and destination are the same: nothing to move")
        return
    if not remote.holds(src.host, ["test", "-d", src_dir], timeout=timeout):
        if remote.holds(dst.host, ["test", "-d", dst_dir], timeout=timeout):
            log.info(f"{dst} is already there and {src} is gone: moved by an earlier run")
            return
        raise ActionFailed(f"the VM directory {src} does not exist")
    nonce = copy_dir(src, src_dir, dst, dst_dir, timeout)
    faults.point("mv:copied")
    if same_directory(src.host, src_dir, nonce, timeout):
        log.info(f"{src} and {dst} are the same directory: kept")
    else:
        _run(src.host, ["rm", "-rf", "--", src_dir], timeout)
    _run(dst.host, ["rm", "-f", "--", f"{dst_dir}/{MARKER}"], timeout, check=False)
    log.info(f"moved {src} to {dst}")
