"""Live migration over libvirt's API: shared RBD disks stay where they are (only memory moves);
the disks of a system datastore that is not shared (TM ssh: files in the VM directory of each
host) are copied by libvirt as part of the migration, as upstream's kvm driver does with
``--copy-storage-all`` (TM premigrate has made the VM directory on the destination, postmigrate
removes the source's).

The driver opens both hosts (the destination as LIBVIRT_REMOTE_URI with ``{host}`` filled in) and
asks libvirt to migrate. The outcome is judged by where the guest runs afterwards, not by the
call's return: a failure after the guest already runs on the destination is a success with a
warning (OpenNebula/one#6634, #4695), and a failure before leaves the source running and no
half-made domain on the destination. Snapshots of the VM are redefined on the destination.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from one_drivers.core import log, remote
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BadInput, DriverError
from one_drivers.vmm.libvirt import tpm
from one_drivers.vmm.libvirt.common import PAUSED, RUNNING, host_hypervisor, resolved
from one_drivers.vmm.libvirt.connection import Hypervisor
from one_drivers.vmm.libvirt.snapshots import redefine_snapshots


def destination_uri(settings: Settings, host: str) -> str:
    template = settings.get("LIBVIRT_REMOTE_URI") or "qemu+ssh://{host}/system"
    return template.format(host=host)


def migration_params(lv: Any, settings: Settings, dst_host: str) -> tuple[dict[str, Any], int]:
    """libvirt typed parameters and flags from the MIGRATE_* settings."""
    flags = lv.VIR_MIGRATE_LIVE
    params: dict[str, Any] = {}
    if settings.bool("MIGRATE_AUTO_CONVERGE", False):
        flags |= lv.VIR_MIGRATE_AUTO_CONVERGE
        for key, param in (("MIGRATE_AUTO_CONVERGE_INITIAL",
                            lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL),
                           ("MIGRATE_AUTO_CONVERGE_INCREMENT",
                            lv.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT)):
            if settings.get(key):
                params[param] = settings.int(key, 0)
    if settings.bool("MIGRATE_COMPRESSED", False):
        flags |= lv.VIR_MIGRATE_COMPRESSED
    if settings.bool("MIGRATE_UNSAFE", False):
        flags |= lv.VIR_MIGRATE_UNSAFE
    bandwidth = settings.int("MIGRATE_BANDWIDTH", 0)  # MiB/s, 0: unlimited
    if bandwidth < 0:
        raise BadInput(f"MIGRATE_BANDWIDTH={bandwidth} is negative")
    if bandwidth:
        params[lv.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth
    if settings.get("MIGRATE_URI"):
        params[lv.VIR_MIGRATE_PARAM_URI] = (settings.get("MIGRATE_URI") or "").format(
            host=dst_host)
    return params, flags


def migrate(call: Call) -> None:
    a = call.args
    settings = resolved(call.settings)
    dst_uri = destination_uri(settings, a["dst_host"])
    with host_hypervisor(call) as src, host_hypervisor(call, dst_uri) as dst:
        if _host_uuid(src) == _host_uuid(dst):
            raise BadInput(f"the destination {a['dst_host']} ({dst_uri}) is this very host",
                           hint="check LIBVIRT_REMOTE_URI and the host names")
        dom = src.require(a["deploy_id"])
        if src.state(dom) not in (RUNNING, PAUSED):
            raise ActionFailed(f"domain {a['deploy_id']} is not running here",
                               hint="only a running VM migrates live")
        params, flags = migration_params(src.lv, settings, a["dst_host"])
        max_downtime = settings.int("MIGRATE_MAX_DOWNTIME", 0)  # ms
        if max_downtime:
            src.retryable(dom.migrateSetMaxDowntime, max_downtime, 0, what="setting the downtime")
        xml = src.retryable(dom.XMLDesc, 0, what="reading the domain XML")
        local = local_disks(xml) if not _system_ds_shared(call) else []
        if local:
            flags |= src.lv.VIR_MIGRATE_NON_SHARED_DISK
            params[src.lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = local
            log.info(f"copying the local disks {', '.join(local)} with the migration")
        swtpm = _tpm_on_destination(call, xml)
        try:
            src.call(dom.migrate3, dst.conn, params, flags, what=f"migrating to {a['dst_host']}",
                     timeout=call.deadline.remaining())
        except DriverError as exc:
            try:
                _judge_failure(call, src, dst, dom, exc)
            except DriverError:
                if swtpm is not None:
                    tpm.stop(swtpm, a["dst_host"], call.deadline)
                raise
        _redefine_snapshots(dst, a["deploy_id"], xml)
        from one_drivers.vmm.libvirt.guest_agent import sync_time

        sync_time(dst, a["deploy_id"])


def _tpm_on_destination(call: Call, xml: str) -> tpm.Swtpm | None:
    """The VM's swtpm started on the destination, its state directory there made; QEMU brings
    the TPM's state with the migration. A directory both hosts see (a shared system datastore)
    is refused: swtpm 0.7 cannot hand its state files over between two hosts."""
    swtpm = tpm.served_by(ET.fromstring(xml))  # noqa: S314 - libvirt's own XML
    if swtpm is None:
        return None
    host = call.args["dst_host"]
    if remote.holds(host, ["test", "-e", swtpm.socket],
                    timeout=call.deadline.cap(30, "looking at the destination")):
        raise ActionFailed(f"the VM's TPM directory {swtpm.state_dir} is shared with {host}",
                           hint="a VM with a TPM migrates live between hosts with a VM "
                                "directory of their own (Ceph or ssh system datastore)")
    tpm.start(swtpm, call.deadline, host)
    return swtpm


def _system_ds_shared(call: Call) -> bool:
    """Whether the VM's system datastore is shared between hosts (oned's SHARED, from the TM's
    TM_MAD_CONF: NO for ssh); unknown is shared (nothing is copied)."""
    datastore = call.doc.datastore
    shared = (datastore.template.get("SHARED") or "").upper()
    if shared in ("YES", "NO"):
        return shared == "YES"
    return (datastore.tm_mad or "") != "ssh"


def local_disks(domain_xml: str) -> list[str]:
    """Targets of the writable file and block disks (the host's own copies); network (RBD)
    disks and CD-ROMs (the context ISO, made again on the destination) are not copied."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - libvirt's own output
    out = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("type") not in ("file", "block") or disk.get("device") != "disk":
            continue
        if disk.find("readonly") is not None or disk.find("source") is None:
            continue
        target = disk.find("target")
        if target is not None and target.get("dev"):
            out.append(str(target.get("dev")))
    return out


def _judge_failure(call: Call, src: Hypervisor, dst: Hypervisor, dom: Any,
                   exc: DriverError) -> None:
    """The guest runs where it runs: on the destination, the migration happened (warn);
    otherwise the source keeps it and the destination is cleaned."""
    deploy_id = call.args["deploy_id"]
    arrived = dst.domain(deploy_id)
    leftover = src.domain(deploy_id)
    source_runs = leftover is not None and src.state(leftover) == RUNNING
    if arrived is not None and dst.state(arrived) == RUNNING and not source_runs:
        if leftover is not None and src.state(leftover) is not None:
            src.retryable(leftover.destroy, what="removing the paused source copy")
        log.info(f"WARNING: the migration reported an error ({exc}) but the guest runs on "
                 f"{call.args['dst_host']}: counted as migrated")
        return
    if arrived is not None:  # a paused, incomplete copy
        dst.retryable(arrived.destroy, what="removing the incomplete copy on the destination")
    with_source = src.domain(deploy_id)
    if with_source is not None and src.state(with_source) == PAUSED:
        src.call(with_source.resume, what="resuming the guest on the source")
    raise exc


def _host_uuid(hv: Hypervisor) -> str:
    caps = hv.retryable(hv.conn.getCapabilities, what="reading the host's capabilities")
    found = ET.fromstring(caps).findtext("host/uuid")  # noqa: S314 - libvirt's own output
    return (found or "").strip()


def _redefine_snapshots(dst: Hypervisor, deploy_id: str, xml: str) -> None:
    """Internal snapshots' XML (kept in the VM's directory) on the destination's libvirt."""
    dom = dst.domain(deploy_id)
    if dom is not None:
        redefine_snapshots(dst, dom, ET.fromstring(xml))  # noqa: S314 - libvirt's own output
