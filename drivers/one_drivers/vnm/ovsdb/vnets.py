"""vnet_create and vnet_delete: run on the front-end when a virtual network is created or
deleted. Nothing exists on hosts until a VM uses the network, so creation only validates what
the NICs will inherit (VLANs, trunks, QinQ, MTU, QoS, OVS_BRIDGE_CONF): a network that could
never be plugged fails now, with the reason, instead of at every VM deploy."""

from __future__ import annotations

from one_drivers.core.contract import Call
from one_drivers.core.documents import VNet
from one_drivers.core.errors import BadInput
from one_drivers.ovs.spec import QINQ_TYPES, parse_pairs, parse_vlan_list


def vnet_create(call: Call) -> None:
    vnet: VNet = call.doc
    where = "network"
    values = {**vnet.template.as_dict(), **{k: v for k, v in (
        ("VLAN_ID", vnet.opt("VLAN_ID")), ("PHYDEV", vnet.opt("PHYDEV"))) if v}}
    automatic = (vnet.opt("VLAN_ID_AUTOMATIC") or vnet.template.opt("AUTOMATIC_VLAN_ID")
                 or "").upper() in ("1", "YES")
    if values.get("VLAN_ID") and not automatic:
        vid = values["VLAN_ID"]
        if not vid.isdigit() or not 1 <= int(vid) <= 4094:
            raise BadInput(f"{where}: VLAN_ID={vid!r} is not a VLAN id (1-4094)")
    for name in ("VLAN_TAGGED_ID", "CVLANS"):
        if values.get(name):
            parse_vlan_list(values[name], where=f"{where} {name}")
    if values.get("QINQ_TYPE", "802.1q").lower() not in QINQ_TYPES:
        raise BadInput(f"{where}: QINQ_TYPE={values['QINQ_TYPE']!r} is not one of "
                       f"{', '.join(QINQ_TYPES)}")
    mtu = values.get("MTU")
    if mtu and (not mtu.isdigit() or not 68 <= int(mtu) <= 65535):
        raise BadInput(f"{where}: MTU={mtu!r} is out of range (68-65535)")
    for name, value in values.items():
        if name.endswith(("_AVG_BW", "_PEAK_BW", "_PEAK_KB")) and not value.isdigit():
            raise BadInput(f"{where}: {name}={value!r} is not a number")
    parse_pairs(values.get("OVS_BRIDGE_CONF", ""), where=f"{where} OVS_BRIDGE_CONF")


def vnet_delete(call: Call) -> None:
    """Nothing to undo: bridges go with their last VM port (see ``clean``)."""
    return None
