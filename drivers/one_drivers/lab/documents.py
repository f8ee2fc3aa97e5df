"""Documents shaped like the ones oned sends, for the lab's demo, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from one_drivers.core.xmlview import escape


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
        fields = {"ID": image_id, "UID": 0, "GID": 0, "NAME": f"img{image_id}", "TYPE": 2,
                  "PERSISTENT": 0, "FORMAT": "raw", "STATE": 4, "DATASTORE_ID": ds_id,
                  **(image or {})}
        parts.append(f"<IMAGE>{elements(fields)}"
                     f"<TEMPLATE>{elements(image_template or {})}</TEMPLATE></IMAGE>")
    parts.append(f"<DATASTORE><ID>{ds_id}</ID><NAME>lab_rbd</NAME><DS_MAD>rbd</DS_MAD>"
                 f"<TM_MAD>rbd</TM_MAD><TYPE>0</TYPE>"
                 f"<TEMPLATE>{elements(lab_ds_template(env, **(ds or {})))}</TEMPLATE>"
                 "</DATASTORE></DS_DRIVER_ACTION_DATA>")
    return "".join(parts)


def datastore_doc(env: dict[str, str], ds_id: int, *, system: bool = False,
                  **extra: Any) -> str:
    """A DATASTORE as ``one.datastore.info`` returns it (image or system, TM_MAD rbd)."""
    return (f"<DATASTORE><ID>{ds_id}</ID><NAME>{'sys' if system else 'img'}_{ds_id}</NAME>"
            f"<DS_MAD>{'-' if system else 'rbd'}</DS_MAD><TM_MAD>rbd</TM_MAD>"
            f"<TYPE>{1 if system else 0}</TYPE><BASE_PATH>/var/lib/one/datastores/{ds_id}"
            f"</BASE_PATH><TEMPLATE>{elements(lab_ds_template(env, **extra))}</TEMPLATE>"
            "</DATASTORE>")


def disk_attrs(env: dict[str, str], disk_id: int, **attrs: Any) -> dict[str, Any]:
    """A VM DISK with what oned copies from its datastore (INHERIT_DATASTORE_ATTR)."""
    inherited = {k: v for k, v in lab_ds_template(env).items()
                 if k in ("POOL_NAME", "CEPH_USER", "CEPH_KEY", "CEPH_CONF", "CEPH_HOST",
                          "DISK_TYPE")}
    return {"DISK_ID": disk_id, "TM_MAD": "rbd", "TARGET": f"vd{chr(97 + disk_id)}",
            **inherited, **attrs}


def vm_doc(vm_id: int, disks: list[dict[str, Any]], *, lcm_state: int = 3,
           host: str = "node1", sys_ds: int = 0, nics: Sequence[dict[str, Any]] = (),
           aliases: Sequence[dict[str, Any]] = (), sg_rules: Sequence[dict[str, Any]] = (),
           extra: str = "") -> str:
    """A VM as ``one.vm.info`` returns it, with DISKs, NICs, NIC_ALIASes, flattened
    SECURITY_GROUP_RULEs and a HISTORY record."""
    disk_xml = "".join(f"<DISK>{elements(d)}</DISK>" for d in disks)
    disk_xml += "".join(f"<NIC>{elements(n)}</NIC>" for n in nics)
    disk_xml += "".join(f"<NIC_ALIAS>{elements(n)}</NIC_ALIAS>" for n in aliases)
    disk_xml += "".join(f"<SECURITY_GROUP_RULE>{elements(r)}</SECURITY_GROUP_RULE>"
                        for r in sg_rules) + extra
    return (f"<VM><ID>{vm_id}</ID><NAME>vm{vm_id}</NAME><STATE>3</STATE>"
            f"<LCM_STATE>{lcm_state}</LCM_STATE><DEPLOY_ID/>"
            f"<TEMPLATE>{disk_xml}</TEMPLATE><USER_TEMPLATE/>"
            f"<HISTORY_RECORDS><HISTORY><HOSTNAME>{escape(host)}</HOSTNAME><HID>0</HID>"
            f"<DS_ID>{sys_ds}</DS_ID><VM_MAD>libvirt</VM_MAD><TM_MAD>rbd</TM_MAD></HISTORY>"
            "</HISTORY_RECORDS></VM>")


def domain_xml(env: dict[str, str], vm_id: int, vm_dir: str, console: str, *,
               rbd_disks: Sequence[tuple[str, str]] = (), cdrom: str | None = None,
               nics: Sequence[tuple[str, str, str]] = (), acpi: bool = True,
               memory_mb: int = 192, vcpus: int = 1, max_vcpus: int = 2,
               kernel_args: str = "", guest_agent: bool = False,
               uefi_loader: str = "", tpm_model: str = "") -> str:
    """A deployment file shaped like the one oned's KVM driver writes, booting the lab guest:
    RBD disks ``(pool/name, target)`` with cephx, a context CD-ROM, OVS NICs
    ``(bridge, mac, target)``, ``one:`` metadata; its serial console on a unix socket at
    ``console`` (logged to ``console.log`` next to it), which the lab's tests drive;
    ``guest_agent``: the QEMU guest agent's channel, as oned writes it for GUEST_AGENT=yes;
    ``uefi_loader``: a UEFI guest, the loader and per-VM NVRAM as oned writes them;
    ``tpm_model``: a virtual TPM as oned writes it for TPM/MODEL (libvirt's emulator backend)."""
    mon_host, mon_port = env["ONE_LAB_CEPH_MON"].rsplit(":", 1)
    disks = "".join(
        f"<disk type='network' device='disk'><source protocol='rbd' name='{escape(name)}'>"
        f"<host name='{mon_host}' port='{mon_port}'/></source>"
        f"<auth username='{env['ONE_LAB_CEPH_USER']}'><secret type='ceph' "
        f"uuid='{env['ONE_LAB_CEPH_SECRET']}'/></auth><target dev='{target}' bus='virtio'/>"
        "<driver name='qemu' type='raw' cache='none' discard='unmap'/></disk>"
        for name, target in rbd_disks)
    if cdrom:
        disks += (f"<disk type='file' device='cdrom'><source file='{escape(cdrom)}'/>"
                  "<target dev='hda' bus='ide'/><readonly/><driver name='qemu' type='raw'/>"
                  "</disk>")
    ifaces = "".join(
        f"<interface type='bridge'><source bridge='{bridge}'/><virtualport type='openvswitch'/>"
        f"<mac address='{mac}'/><target dev='{target}'/><model type='virtio'/></interface>"
        for bridge, mac, target in nics)
    return (
        f"<domain type='kvm'><name>one-{vm_id}</name>"
        f"<vcpu current='{vcpus}'>{max_vcpus}</vcpu><memory>{memory_mb * 1024}</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type>"
        f"<kernel>{env['ONE_LAB_GUEST_KERNEL']}</kernel>"
        f"<initrd>{env['ONE_LAB_GUEST_INITRD']}</initrd>"
        f"<cmdline>console=ttyS0 panic=-1 quiet {escape(kernel_args)}</cmdline>"
        + (f"<loader readonly='yes' type='pflash' secure='no'>{escape(uefi_loader)}</loader>"
           f"<nvram>{escape(vm_dir)}/vm{vm_id}_VARS.fd</nvram>" if uefi_loader else "")
        + "</os>"
        + ("<features><acpi/></features>" if acpi else "")
        + f"<devices>{disks}{ifaces}"
        f"<serial type='unix'><source mode='bind' path='{escape(console)}'/>"
        f"<log file='{escape(console)}.log' append='off'/><target port='0'/></serial>"
        + ("<channel type='unix'><source mode='bind'/>"
           "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
           if guest_agent else "")
        + (f"<tpm model='{escape(tpm_model)}'><backend type='emulator' version='2.0'/></tpm>"
           if tpm_model else "")
        + "</devices><metadata><one:vm xmlns:one='http://opennebula.org/xmlns/libvirt/1.0'>"
        f"<one:system_datastore>{escape(vm_dir)}</one:system_datastore>"
        f"<one:name>vm{vm_id}</one:name></one:vm></metadata></domain>")
