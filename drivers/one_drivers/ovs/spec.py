"""What a VM NIC asks of Open vSwitch, parsed and validated before anything is changed.

A :class:`PortSpec` is everything one NIC needs (bridge, VLAN layout, MTU, QoS, the addresses that
anti-spoofing allows, its security-group rules), built from the NIC's attributes in the VM document
that OpenNebula gives the VNM actions. Bad values raise :class:`BadInput` naming the NIC and the
attribute, so a malformed NIC changes nothing on the host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from one_drivers.core.config import Settings
from one_drivers.core.documents import VM, Nic
from one_drivers.core.errors import BadInput
from one_drivers.core.xmlview import Template
from one_drivers.ovs.secgroups import Rule, rules_for

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# a Linux interface name, never an option to a tool (no leading "-")
_NAME = re.compile(r"^[A-Za-z0-9_.:][A-Za-z0-9_.:-]{0,14}$")
QINQ_TYPES = ("802.1q", "802.1ad")


class Qos(NamedTuple):
    """One direction's limits in OpenNebula's units: KB/s for the rates, KB for the burst."""

    average: int
    peak: int | None
    burst: int | None


class PortSpec(NamedTuple):
    vm_id: int
    nic_id: int
    network_id: int | None
    target: str  # the tap's name, which is also the OVS port's
    bridge: str
    phydev: str | None
    mac: str
    tag: int | None  # VLAN_ID: access tag (or native VLAN of a trunk, or the QinQ service tag)
    trunks: tuple[int, ...]  # VLAN_TAGGED_ID
    cvlans: tuple[int, ...]  # CVLANS: customer VLANs carried in the QinQ tunnel
    qinq_type: str
    mtu: int | None
    inbound: Qos | None  # to the VM
    outbound: Qos | None  # from the VM
    ipv4: tuple[str, ...]  # what anti-spoofing lets the VM send from (aliases included)
    ipv6: tuple[str, ...]
    filter_mac: bool
    filter_ip: bool
    rules: tuple[Rule, ...] | None  # None: no security groups on this NIC (all traffic allowed)
    bridge_conf: tuple[tuple[str, str], ...]  # OVS_BRIDGE_CONF: Bridge column=value pairs
    datapath_type: str
    # where DHCP offers may come from past the security groups: GATEWAY and DHCP_SERVER
    dhcp_servers: tuple[str, ...] = ()

    @property
    def vlan_mode(self) -> str:
        """OVS's vlan_mode. A port without VLAN_ID is an access port of the untagged VLAN, never
        OVS's default of a trunk carrying every VLAN (upstream's leak into untagged ports)."""
        if self.cvlans:
            return "dot1q-tunnel"
        if self.trunks:
            return "native-untagged" if self.tag is not None else "trunk"
        return "access"

    @property
    def label(self) -> str:
        return f"VM {self.vm_id} NIC {self.nic_id}"


def parse_vlan_list(text: str, *, where: str) -> tuple[int, ...]:
    """``"1,10,30-40"`` -> (1, 10, 30, ..., 40), each a valid VLAN id."""
    ids: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo_s, sep, hi_s = part.partition("-") if "-" in part else part.partition(":")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise BadInput(f"{where}: {part!r} is not a VLAN id or range (like 10 or 30-40)") \
                from None
        if lo > hi:
            raise BadInput(f"{where}: range {part!r} runs backwards")
        for vid in (lo, hi):
            _check_vlan(vid, where)
        ids.update(range(lo, hi + 1))
    return tuple(sorted(ids))


def _check_vlan(vid: int, where: str) -> int:
    if not 1 <= vid <= 4094:
        raise BadInput(f"{where}: VLAN {vid} is out of range (1-4094)")
    return vid


def _int(nic: Template, name: str, lo: int, hi: int, where: str) -> int | None:
    raw = nic.opt(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{where}: {name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise BadInput(f"{where}: {name}={value} is out of range ({lo}-{hi})")
    return value


def _qos(nic: Template, direction: str, where: str) -> Qos | None:
    avg = _int(nic, f"{direction}_AVG_BW", 1, 2**32, where)
    if avg is None:
        return None
    return Qos(avg, _int(nic, f"{direction}_PEAK_BW", 1, 2**32, where),
               _int(nic, f"{direction}_PEAK_KB", 1, 2**32, where))


def _addresses(nic: Template, names: Iterable[str], version: int, where: str) -> list[str]:
    out = []
    for name in names:
        raw = nic.opt(name)
        if not raw:
            continue
        try:
            addr = ipaddress.ip_address(raw.strip())
        except ValueError:
            raise BadInput(f"{where}: {name}={raw!r} is not an IP address") from None
        if addr.version != version:
            raise BadInput(f"{where}: {name}={raw!r} is not an IPv{version} address")
        out.append(str(addr))
    return out


def _link_local(mac: str) -> str:
    """The EUI-64 link-local address a guest derives from its MAC (what it sends NDP from)."""
    octets = [int(b, 16) for b in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))


def parse_pairs(text: str, *, where: str) -> tuple[tuple[str, str], ...]:
    """``"k=v,k2=v2"`` (CONF, OVS_BRIDGE_CONF)."""
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{where}: {item!r} is not key=value")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def nic_settings(settings: Settings, nic: Nic, where: str) -> Settings:
    """The driver's settings with the NIC's CONF pairs (upstream's per-NIC overrides) on top."""
    conf = nic.opt("CONF")
    if not conf:
        return settings
    return settings.over({k.upper(): v for k, v in parse_pairs(conf, where=f"{where} CONF")})


def port_spec(vm: VM, nic: Nic, settings: Settings, aliases: Iterable[Template] = ()) -> PortSpec:
    where = f"NIC {nic.nic_id}"
    cfg = nic_settings(settings, nic, where)
    mac = nic.mac.strip().lower()
    if not _MAC.match(mac):
        raise BadInput(f"{where}: MAC={nic.mac!r} is not a MAC address")
    target = nic.target or f"one-{vm.id}-{nic.nic_id}"
    bridge = nic.bridge
    if not bridge:
        raise BadInput(f"{where} has no BRIDGE", hint="set BRIDGE in its virtual network")
    phydev = nic.opt("PHYDEV") or None
    for what, name in (("TARGET", target), ("BRIDGE", bridge), ("PHYDEV", phydev)):
        if name is not None and not _NAME.match(name):
            raise BadInput(f"{where}: {what}={name!r} is not a valid interface name")
    tag = _int(nic, "VLAN_ID", 1, 4094, where)
    trunks = parse_vlan_list(nic.opt("VLAN_TAGGED_ID") or "", where=f"{where} VLAN_TAGGED_ID")
    cvlans = parse_vlan_list(nic.opt("CVLANS") or "", where=f"{where} CVLANS")
    qinq_type = (nic.opt("QINQ_TYPE") or "802.1q").lower()
    if qinq_type not in QINQ_TYPES:
        raise BadInput(f"{where}: QINQ_TYPE={qinq_type!r} is not one of {', '.join(QINQ_TYPES)}")
    if cvlans and tag is None:
        raise BadInput(f"{where}: CVLANS need a VLAN_ID (the service VLAN of the QinQ tunnel)")
    if cvlans and trunks:
        raise BadInput(f"{where}: CVLANS (QinQ) and VLAN_TAGGED_ID (trunk) cannot be combined")
    v4 = _addresses(nic, ("IP", "VROUTER_IP"), 4, where)
    v6 = _addresses(nic, ("IP6", "IP6_GLOBAL", "IP6_ULA", "IP6_LINK", "VROUTER_IP6",
                          "VROUTER_IP6_GLOBAL", "VROUTER_IP6_ULA"), 6, where)
    for alias in aliases:
        v4 += _addresses(alias, ("IP",), 4, f"{where} alias")
        v6 += _addresses(alias, ("IP6", "IP6_GLOBAL", "IP6_ULA"), 6, f"{where} alias")
    v6.append(_link_local(mac))
    sg_ids = nic.opt("SECURITY_GROUPS")
    rules = rules_for(vm.security_group_rules(), sg_ids, where=where) if sg_ids else None
    bridge_conf = parse_pairs(nic.opt("OVS_BRIDGE_CONF") or cfg.get("OVS_BRIDGE_CONF") or "",
                              where=f"{where} OVS_BRIDGE_CONF")
    return PortSpec(
        vm_id=vm.id, nic_id=nic.nic_id, network_id=nic.network_id, target=target, bridge=bridge,
        phydev=phydev, mac=mac, tag=tag, trunks=trunks, cvlans=cvlans, qinq_type=qinq_type,
        mtu=_int(nic, "MTU", 68, 65535, where),
        inbound=_qos(nic, "INBOUND", where), outbound=_qos(nic, "OUTBOUND", where),
        ipv4=tuple(dict.fromkeys(v4)), ipv6=tuple(dict.fromkeys(v6)),
        filter_mac=nic.bool("FILTER_MAC_SPOOFING", False),
        filter_ip=nic.bool("FILTER_IP_SPOOFING", False),
        rules=rules, bridge_conf=bridge_conf,
        datapath_type=cfg.get("DATAPATH_TYPE") or "system",
        dhcp_servers=tuple(dict.fromkeys(_addresses(nic, ("GATEWAY", "DHCP_SERVER"), 4, where))),
    )


def our_nics(vm: VM, driver: str, *, only_attached: bool = True) -> Iterator[Nic]:
    """The VM's NICs handled by ``driver``; during a hot-plug (a NIC with ATTACH=YES), only it."""
    nics = [n for n in vm.nics() if (n.vn_mad or "") == driver]
    attached = [n for n in nics if n.attach]
    yield from (attached if only_attached and attached else nics)


def vm_specs(vm: VM, driver: str, settings: Settings, *, only_attached: bool = True,
             overrides: dict[int, dict[str, str]] | None = None) -> list[PortSpec]:
    """Every NIC of ``vm`` for ``driver``, validated all together before anything changes.
    ``overrides`` replaces attributes per NIC id (update_nic's VNET_UPDATE)."""
    aliases: dict[int, list[Template]] = {}
    for alias in vm.nic_aliases():
        parent = alias.opt("PARENT_ID")
        if parent is not None and parent.isdigit():
            aliases.setdefault(int(parent), []).append(alias)
    specs = []
    for nic in our_nics(vm, driver, only_attached=only_attached):
        if overrides and nic.nic_id in overrides:
            nic = nic.with_values(overrides[nic.nic_id])
        specs.append(port_spec(vm, nic, settings, aliases.get(nic.nic_id, ())))
    seen: dict[str, PortSpec] = {}
    for spec in specs:
        if spec.target in seen:
            raise BadInput(f"NIC {spec.nic_id}: TARGET {spec.target} is also NIC "
                           f"{seen[spec.target].nic_id}'s")
        seen[spec.target] = spec
    return specs
