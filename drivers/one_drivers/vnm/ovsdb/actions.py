"""pre, post, clean, update_sg and update_nic of the ``ovsdb`` VNM driver.

OpenNebula runs them on the hypervisor with the VM document (base64) on stdin. ``pre`` already
builds each NIC's port completely (VLANs, MTU, QoS, an OpenFlow port number requested in advance
and every flow), so when libvirt plugs the tap (its ``--may-exist add-port`` keeps our row) the
port is configured from its first frame. ``post`` re-applies the same state, adopts ports libvirt
made without a ``pre`` and checks the taps exist. Every NIC is validated before anything changes.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.documents import VM
from one_drivers.ovs.spec import PortSpec, our_nics, vm_specs
from one_drivers.vnm.ovsdb.hooks import run_hooks
from one_drivers.vnm.ovsdb.host import DRIVER, Host, resolved, state_file, tap_exists

# what update_nic applies from TEMPLATE/VNET_UPDATE (upstream's SUPPORTED_UPDATE, plus filters)
UPDATABLE = ("VLAN_ID", "VLAN_TAGGED_ID", "CVLANS", "QINQ_TYPE", "MTU", "PHYDEV",
             "INBOUND_AVG_BW", "INBOUND_PEAK_BW", "INBOUND_PEAK_KB", "OUTBOUND_AVG_BW",
             "OUTBOUND_PEAK_BW", "OUTBOUND_PEAK_KB", "FILTER_MAC_SPOOFING", "FILTER_IP_SPOOFING")


def _vm(call: Call) -> VM:
    vm: VM = call.doc  # the contract parsed stdin into this view
    return vm


def _configure(call: Call, *, require_tap: bool, hooks: str | None,
               overrides: dict[int, dict[str, str]] | None = None,
               only_attached: bool = True) -> None:
    vm = _vm(call)
    settings = resolved(call.settings)
    specs = vm_specs(vm, DRIVER, settings, only_attached=only_attached, overrides=overrides)
    if specs:
        Host(settings).apply(specs, require_tap=require_tap,
                             exclusive_phydev=overrides is not None)
        state_file(settings).save(vm.id, _document(call, vm, overrides))
        _report(specs, "configured")
    if hooks:
        run_hooks(call, hooks)


def pre(call: Call) -> None:
    _configure(call, require_tap=False, hooks="pre")


def post(call: Call) -> None:
    _configure(call, require_tap=True, hooks="post")


def update_sg(call: Call) -> None:
    """The VM's rules changed: every NIC's flows are swapped in one bundle per bridge."""
    _configure(call, require_tap=False, hooks=None, only_attached=False)


def update_nic(call: Call) -> None:
    """Live changes of a virtual network (``TEMPLATE/VNET_UPDATE``) on this VM's NICs in it."""
    vm = _vm(call)
    vn_id = int(call.args["vn_id"])
    update = vm.template.child("VNET_UPDATE", type(vm.template), required=False)
    changes = {k: v for k, v in update.as_dict().items() if k in UPDATABLE}
    for name in UPDATABLE:  # an attribute removed from the network is sent empty
        if update.elem.find(name) is not None and name not in changes:
            changes[name] = ""
    overrides = {nic.nic_id: changes for nic in our_nics(vm, DRIVER, only_attached=False)
                 if nic.network_id == vn_id}
    if not overrides:
        log.info(f"VM {vm.id} has no {DRIVER} NIC in virtual network {vn_id}: nothing to do")
        return
    settings = resolved(call.settings)
    specs = [s for s in vm_specs(vm, DRIVER, settings, only_attached=False,
                                 overrides=overrides) if s.nic_id in overrides]
    Host(settings).apply(specs, require_tap=False, exclusive_phydev=True)
    state_file(settings).save(vm.id, _document(call, vm, overrides))
    _report(specs, "updated")


def clean(call: Call) -> None:
    """Remove the VM's ports and flows (or only the hot-plugged NIC's). A port whose tap still
    exists belongs to a VM still running here (a same-host migration, OpenNebula/one#7947) and
    is left alone. Nothing is validated beyond the ids: cleanup must not fail on a bad NIC."""
    vm = _vm(call)
    settings = resolved(call.settings)
    nics = list(our_nics(vm, DRIVER))
    owners = []
    bridges = set()
    for nic in nics:
        target = nic.target or f"one-{vm.id}-{nic.nic_id}"
        if tap_exists(target):
            log.info(f"VM {vm.id} NIC {nic.nic_id}: {target} is still in use on this host, kept")
            continue
        owners.append((vm.id, nic.nic_id, target))
        if nic.bridge:
            bridges.add(nic.bridge)
    if owners:
        Host(settings).remove(owners, bridges=bridges)
    store = state_file(settings)
    attached = [n for n in nics if n.attach]
    if attached and len(attached) < len(list(our_nics(vm, DRIVER, only_attached=False))):
        gone = {n.nic_id for n in attached}
        store.save(vm.id, _without_nics(call, gone))
    elif len(owners) == len(nics):
        store.drop(vm.id)
    run_hooks(call, "clean")


def _document(call: Call, vm: VM, overrides: dict[int, dict[str, str]] | None) -> bytes:
    """The VM document to replay on reconcile, with update_nic's changes folded into the NICs."""
    root = vm.elem
    if overrides:
        root = copy.deepcopy(vm.elem)
        for nic in root.findall("TEMPLATE/NIC"):
            nic_id = nic.findtext("NIC_ID", "").strip()
            for name, value in overrides.get(int(nic_id) if nic_id.isdigit() else -1, {}).items():
                for old in nic.findall(name):
                    nic.remove(old)
                if value:
                    ET.SubElement(nic, name).text = value
    return ET.tostring(root)


def _without_nics(call: Call, nic_ids: set[int]) -> bytes:
    root = copy.deepcopy(_vm(call).elem)
    template = root.find("TEMPLATE")
    if template is not None:
        for nic in template.findall("NIC"):
            if nic.findtext("NIC_ID", "").strip() in {str(i) for i in nic_ids}:
                template.remove(nic)
    return ET.tostring(root)


def _report(specs: list[PortSpec], what: str) -> None:
    for s in specs:
        vlan = (f"QinQ {s.tag}/{','.join(map(str, s.cvlans))}" if s.cvlans
                else f"trunk {s.trunks[0]}-{s.trunks[-1]}" if s.trunks
                else f"VLAN {s.tag}" if s.tag else "untagged")
        log.info(f"{s.label}: {s.target} {what} on {s.bridge} ({vlan}"
                 f"{', anti-spoofing' if s.filter_mac or s.filter_ip else ''}"
                 f"{f', {len(s.rules)} SG rules' if s.rules is not None else ''})")
