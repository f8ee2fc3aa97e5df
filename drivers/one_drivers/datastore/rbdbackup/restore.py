"""``restore``: a backup to new images and a VM template (``oneimage restore``).

oned sends the BACKUP image, its datastore, DESTINATION_DS_ID and the request's options
(USERNAME, NAME, NO_IP, NO_NIC, INCREMENT_ID, DISK_ID). For each disk of the chosen increment an
image is allocated in the destination datastore through oned's XML-RPC with
``PATH="rbd://backup-<backup datastore>/<pool>/one-backup-<vm>-<chain>-<disk>@<n>"`` and a grant
for exactly that source (:mod:`one_drivers.ceph.grants`: its datastore's ``cp`` reads it for
whoever owns the image, without opening the backup pool to every user: a clone read with the
datastore's own Ceph user on the same cluster, else a copy streamed from the backup datastore's
cluster with that datastore's access, :mod:`.access`); then, unless one disk only was asked
for, a VM template made from the VM's template as it was at that backup, its disks pointing at
the new images (NICs kept unless NO_NIC; their addresses dropped with NO_IP). Everything is
given to the user who asked (USERNAME). The answer is ``<template id|-1> <image id> ...``. A
failure removes what this restore allocated.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from one_drivers.ceph import backups, grants
from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, open_image
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BadInput, DriverError
from one_drivers.core.oned import Oned
from one_drivers.core.xmlview import XmlView, escape, parse_xml
from one_drivers.datastore.rbdbackup.access import url_host
from one_drivers.datastore.rbdbackup.backup import VM_META

# what a restored VM template keeps of the backed-up VM's (the rest is runtime state)
KEPT = ("NAME", "CPU", "VCPU", "MEMORY", "OS", "FEATURES", "GRAPHICS", "INPUT", "VIDEO",
        "CPU_MODEL", "RAW", "CONTEXT", "HYPERVISOR", "SCHED_REQUIREMENTS", "NIC_DEFAULT",
        "DISK_DEFAULT", "MEMORY_UNIT_COST", "TOPOLOGY", "NUMA_NODE")
NIC_ADDRESSES = ("IP", "IP6", "IP6_GLOBAL", "IP6_ULA", "MAC", "IP6_LINK")
NIC_RUNTIME = ("BRIDGE", "BRIDGE_TYPE", "TARGET", "NIC_ID", "VN_MAD", "VLAN_ID", "PHYDEV",
               "AR_ID", "SECURITY_GROUPS", "CLUSTER_ID", "NAME", "ADDRESS")


def _attr(name: str, value: str) -> str:
    return f'{name}="{escape(value).replace(chr(34), "&quot;")}"'


def _vector(name: str, values: dict[str, str]) -> str:
    return f"{name}=[ " + ", ".join(_attr(k, v) for k, v in values.items()) + " ]"


def _flat(elem: ET.Element) -> dict[str, str]:
    return {c.tag: (c.text or "") for c in elem if len(c) == 0}


def _template_text(elem: ET.Element) -> str:
    """An XML template element back into OpenNebula template syntax (one level of vectors)."""
    lines = []
    for child in elem:
        if len(child):
            lines.append(_vector(child.tag, _flat(child)))
        else:
            lines.append(_attr(child.tag, child.text or ""))
    return "\n".join(lines)


def _user(oned: Oned, name: str) -> tuple[int, int]:
    """(uid, gid) of the user who asked, from oned's user pool."""
    pool = parse_xml(oned.call("one.userpool.info", oned.session), what="oned's user pool",
                     root="USER_POOL")
    for user in pool.iterfind("USER"):
        if user.findtext("NAME") == name:
            return int(user.findtext("ID") or -1), int(user.findtext("GID") or -1)
    raise BadInput(f"no user {name!r} in oned")


def restore(call: Call) -> str:
    doc = call.doc
    image = doc.image
    opts = doc.child("TEMPLATE", XmlView, required=False)
    dst_ds = int(doc.opt("DESTINATION_DS_ID") or -1)
    if dst_ds < 0:
        raise BadInput("no DESTINATION_DS_ID")
    username = opts.opt("USERNAME") or ""
    wanted_inc = int(opts.opt("INCREMENT_ID") or -1)
    wanted_disk = int(opts.opt("DISK_ID") or -1)
    chain = backups.increment(image, wanted_inc)
    inc = chain.n
    settings = call.settings.over(doc.datastore.template)
    with rbd_pool(settings.over({"POOL_NAME": chain.pool}), call.deadline, call.subject) as pool, \
            ceph_errors(f"reading backup {chain}", call.subject):
        names = sorted(backups.chain_images(pool.ioctx, chain.base))
        template = ""
        if names:
            with open_image(pool.ioctx, names[0], read_only=True) as first:
                try:
                    template = first.metadata_get(VM_META.format(n=chain.n))
                except KeyError:
                    template = ""
    disk_ids = sorted(int(n.rsplit("-", 1)[1]) for n in names)
    if wanted_disk >= 0:
        disk_ids = [d for d in disk_ids if d == wanted_disk]
    if not disk_ids:
        raise BadInput(f"backup {chain} holds no disk {wanted_disk if wanted_disk >= 0 else ''}")
    vm_tmpl = ET.fromstring(template) if template else None  # noqa: S314 - written by us
    oned = Oned(timeout=call.deadline.cap(call.settings.float("ONED_TIMEOUT", 15),
                                          "asking oned"))
    uid, gid = _user(oned, username) if username else (-1, -1)
    base_name = opts.opt("NAME") or (vm_tmpl.findtext("NAME") if vm_tmpl is not None
                                     else None) or f"backup-{image.id}"
    made: list[int] = []
    template_id = -1
    try:
        by_disk = {}
        for disk_id in disk_ids:
            disk = (vm_tmpl.find(f"DISK[DISK_ID='{disk_id}']") if vm_tmpl is not None
                    else None)
            attrs = {"NAME": f"{base_name}-{image.id}-{inc}-disk-{disk_id}",
                     "PATH": f"rbd://{url_host(doc.datastore.id)}/{chain.pool}/"
                             f"{chain.image(disk_id)}@{chain.n}",
                     "TYPE": (disk.findtext("IMAGE_TYPE") or "OS") if disk is not None
                     else "DATABLOCK",
                     "FORMAT": "raw"}
            if disk is not None and disk.findtext("DEV_PREFIX"):
                attrs["DEV_PREFIX"] = disk.findtext("DEV_PREFIX") or ""
            # the destination's cp reads this one source for this image, whoever owns it
            attrs["RBD_SOURCE_GRANT"] = grants.grant(attrs["PATH"], attrs["NAME"])
            text = "\n".join(_attr(k, v) for k, v in attrs.items())
            iid = int(oned.call("one.image.allocate", oned.session, text, dst_ds, False))
            made.append(iid)
            by_disk[disk_id] = iid
            if uid >= 0:
                oned.call("one.image.chown", oned.session, iid, uid, gid)
        if wanted_disk < 0 and vm_tmpl is not None:
            template_id = _vm_template(oned, vm_tmpl, by_disk, opts, base_name, image.id, inc)
            if uid >= 0:
                oned.call("one.template.chown", oned.session, template_id, uid, gid)
    except DriverError:
        for iid in made:  # nothing half-made: what this restore allocated goes
            try:
                oned.call("one.image.delete", oned.session, iid, False)
            except DriverError as exc:
                log.info(f"could not remove image {iid} after the failure: {exc}")
        raise
    log.info(f"restored {chain} as images {made}"
             + (f" and template {template_id}" if template_id >= 0 else ""))
    return " ".join(str(x) for x in [template_id, *made])


def _vm_template(oned: Oned, vm: ET.Element, by_disk: dict[int, int], opts: XmlView,
                 base_name: str, image_id: int, inc: int) -> int:
    no_nic = (opts.opt("NO_NIC") or "").upper() in ("YES", "TRUE", "1")
    no_ip = (opts.opt("NO_IP") or "").upper() in ("YES", "TRUE", "1")
    out = ET.Element("TEMPLATE")
    for child in vm:
        if child.tag in KEPT and child.tag != "NAME":
            out.append(child)
    ET.SubElement(out, "NAME").text = f"{base_name}-{image_id}-{inc}"
    for disk in vm.iterfind("DISK"):
        disk_id = int(disk.findtext("DISK_ID") or -1)
        if disk_id in by_disk:
            new = ET.SubElement(out, "DISK")
            ET.SubElement(new, "IMAGE_ID").text = str(by_disk[disk_id])
            for key in ("TARGET", "DEV_PREFIX", "CACHE", "IO", "DISCARD", "DRIVER"):
                if disk.findtext(key):
                    ET.SubElement(new, key).text = disk.findtext(key)
        elif (disk.findtext("TYPE") or "").upper() in ("FS", "SWAP"):  # volatile: made anew
            new = ET.SubElement(out, "DISK")
            for key in ("TYPE", "SIZE", "FORMAT", "FS"):
                if disk.findtext(key):
                    ET.SubElement(new, key).text = disk.findtext(key)
    if not no_nic:
        for nic in vm.iterfind("NIC"):
            new = ET.SubElement(out, "NIC")
            for c in nic:
                if c.tag in NIC_RUNTIME or (no_ip and c.tag in NIC_ADDRESSES) or len(c):
                    continue
                ET.SubElement(new, c.tag).text = c.text
    text = _template_text(out)
    try:
        return int(oned.call("one.template.allocate", oned.session, text))
    except ValueError:
        raise ActionFailed("oned did not answer a template id") from None


def ls(call: Call) -> str:
    """``ls -i <increment>`` (-1: the last), the VM and the backup IMAGE on stdin: where each
    disk of that increment is, as JSON ``{"<disk id>": "rbd://backup/<pool>/<image>@<n>"}``
    (what upstream's TM restore asks a backup datastore)."""
    import json

    from one_drivers.core.documents import Datastore, Image

    opts = list(call.args.get("options") or [])
    inc = -1
    if "-i" in opts:
        at = opts.index("-i")
        try:
            inc = int(opts[at + 1])
        except (IndexError, ValueError):
            raise BadInput("ls expects -i <increment id>") from None
    found = call.doc.elem.find("IMAGE")
    if found is None:
        raise BadInput("ls needs the backup IMAGE on stdin")
    image = Image(found)
    chain = backups.increment(image, inc)
    settings = call.settings  # the driver's configuration, and the datastore's when it is sent
    ds = call.doc.elem.find("DATASTORE")
    if ds is not None:
        settings = settings.over(Datastore(ds).template)
    with rbd_pool(settings.over({"POOL_NAME": chain.pool}), call.deadline,
                  call.subject) as pool, ceph_errors(f"listing backup {chain}", call.subject):
        names = sorted(backups.chain_images(pool.ioctx, chain.base))
    return json.dumps({n.rsplit("-", 1)[1]: f"rbd://backup/{chain.pool}/{n}@{chain.n}"
                       for n in names})
