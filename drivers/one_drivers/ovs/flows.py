"""The OpenFlow pipeline that enforces anti-spoofing and security groups, as text for ovs-ofctl.

Every flow carries a cookie: ``0x0ED0 | VM id (32 bits) | NIC id (16 bits)`` for a NIC's flows,
``0x0ED1 << 48`` for the bridge's shared skeleton. Cleanup deletes by cookie and mask, so it removes
exactly one NIC's, one VM's or all of our flows and never an operator's.

Tables (a packet from a VM walks them in order; others start at 35)::

    0   in_port of a VM NIC: its VLAN into reg5 -> 10; a foreign access port: its VLAN -> 35;
        anything else -> 35
    10  MAC anti-spoofing: source MAC, and ARP sender MAC, must be the NIC's
    20  IP anti-spoofing: IPv4/ARP/IPv6 sources must be the NIC's (aliases included); DHCP
        discovery and IPv6 DAD allowed; neighbour adverts for other addresses dropped
    30  outbound security groups: IP traffic into conntrack (the NIC's zone) -> 31
    31  replies pass; what a rule allows passes (new connections committed); the rest dropped
    35  delivery: unicast to a protected NIC (one with security groups) -> its gate (36);
        broadcast and multicast -> NORMAL and the bridge's group, whose buckets send a copy to
        each protected NIC's gate; everything else NORMAL
    36  the gate of a protected NIC (reg6): only frames of its own VLAN (reg5 for frames from VM
        NICs and foreign access ports, the 802.1Q tag for tagged ones), never its own -> 40
    40  inbound security groups: IP traffic into conntrack (the receiving NIC's zone) -> 41
    41  as 31, for inbound rules; then out of the NIC's port, and nowhere else

Protected ports are excluded from NORMAL's flooding (OpenFlow ``no-flood``): every frame they
receive, unicast or not, has passed their gate and their inbound rules. Security groups follow
OpenNebula's (and upstream's iptables) semantics: neighbour discovery exceptions (outbound 133,
135, 136; inbound 134, 135, 136), then anti-spoofing, then replies to connections already
allowed, then the rules, which match a packet whatever its connection state (a rule that says
ALL means all, an unsolicited ICMP error or echo reply included), then drop. DHCP passes the
groups only as an exchange needs it: requests out to the broadcast address or the NIC's
GATEWAY/DHCP_SERVER, offers in from those; DHCPv6 to ff02::1:2 and from link-local servers.
"""

from __future__ import annotations

from collections.abc import Iterable

from one_drivers.ovs.secgroups import Rule, matches, port_masks
from one_drivers.ovs.spec import PortSpec

MAGIC = 0x0ED0
SKELETON_COOKIE = 0x0ED1 << 48
ALL_NICS_MASK = 0xFFFF << 48
VM_MASK = (1 << 64) - (1 << 16)
NIC_MASK = (1 << 64) - 1

MAC_TABLE, IP_TABLE, SG_OUT, SG_OUT_CT, DELIVER, GATE, SG_IN, SG_IN_CT = (10, 20, 30, 31, 35,
                                                                          36, 40, 41)
# neighbour discovery that bypasses the groups: a VM may solicit routers and neighbours and
# advertise itself, never act as a router (134) or redirect (137); it hears routers and
# neighbours, never redirects
ND_OUT, ND_IN = (133, 135, 136), (134, 135, 136)
FLOOD_GROUP = 0x0ED1  # per bridge: one bucket per protected NIC
KNOWN = 0x10000  # reg5: bit 16 set = the frame's VLAN (bits 0-11) is known from its input port
UNTAGGED = "vlan_tci=0x0000/0x1000"


def nic_cookie(vm_id: int, nic_id: int) -> int:
    return (MAGIC << 48) | ((vm_id & 0xFFFFFFFF) << 16) | (nic_id & 0xFFFF)


def vm_cookie(vm_id: int) -> int:
    return nic_cookie(vm_id, 0)


def cookie_owner(cookie: int) -> tuple[int, int] | None:
    """(VM id, NIC id) of one of our NIC cookies, None for anything else."""
    if cookie >> 48 != MAGIC:
        return None
    return (cookie >> 16) & 0xFFFFFFFF, cookie & 0xFFFF


def skeleton(foreign_access: Iterable[tuple[int, int]] = ()) -> list[str]:
    """The bridge's shared flows: traffic not from a VM NIC starts at delivery, with the VLAN of
    the operator's access ports (``(ofport, tag)``) known; broadcast and multicast also go to
    the protected NICs' gates through the bridge's group."""
    flows = [f"table=0,priority=50,in_port={port},actions=load:{KNOWN | tag:#x}->NXM_NX_REG5[],"
             f"resubmit(,{DELIVER})" for port, tag in sorted(foreign_access)]
    return [*flows,
            f"table=0,priority=1,actions=resubmit(,{DELIVER})",
            f"table={DELIVER},priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,"
            f"actions=NORMAL,group:{FLOOD_GROUP}",
            f"table={DELIVER},priority=0,actions=NORMAL"]


def flood_group(ports: Iterable[int]) -> str:
    """The bridge's group (in a bundle): a copy of a flooded frame to each protected port's
    gate."""
    buckets = "".join(f",bucket=actions=load:{p}->NXM_NX_REG6[],resubmit(,{GATE})"
                      for p in sorted(set(ports)))
    return f"group add_or_mod group_id={FLOOD_GROUP},type=all{buckets}"


def filtered(spec: PortSpec) -> bool:
    """Does the NIC need conntrack (is it protected)? Not without groups, nor when its rules
    allow everything both ways."""
    if spec.rules is None:
        return False
    return not (any(r.allows_everything and r.inbound for r in spec.rules)
                and any(r.allows_everything and not r.inbound for r in spec.rules))


def nic_flows(spec: PortSpec, ofport: int, zone: int) -> list[str]:
    port = f"in_port={ofport}"
    vlan = KNOWN | (spec.tag or 0)
    flows = [f"table=0,priority=100,{port},actions=load:{vlan:#x}->NXM_NX_REG5[],"
             f"resubmit(,{MAC_TABLE})"]
    flows += _mac_filter(spec, port)
    flows += _ip_filter(spec, port)
    if filtered(spec):
        flows += _secgroups(spec, ofport, zone)
    else:
        flows.append(f"table={SG_OUT},priority=1,{port},actions=resubmit(,{DELIVER})")
    return flows


def _mac_filter(spec: PortSpec, port: str) -> list[str]:
    go = f"actions=resubmit(,{IP_TABLE})"
    if not spec.filter_mac:
        return [f"table={MAC_TABLE},priority=1,{port},{go}"]
    mac = spec.mac
    return [f"table={MAC_TABLE},priority=110,{port},arp,dl_src={mac},arp_sha={mac},{go}",
            f"table={MAC_TABLE},priority=105,{port},arp,actions=drop",
            f"table={MAC_TABLE},priority=100,{port},dl_src={mac},{go}",
            f"table={MAC_TABLE},priority=1,{port},actions=drop"]


def _ip_filter(spec: PortSpec, port: str) -> list[str]:
    """Source addresses only, as upstream's anti-spoofing: a VM with FILTER_IP_SPOOFING may still
    answer DHCP from its own address (virtual routers do)."""
    go = f"actions=resubmit(,{SG_OUT})"
    t = f"table={IP_TABLE}"
    if not spec.filter_ip:
        return [f"{t},priority=1,{port},{go}"]
    flows = [f"{t},priority=100,{port},arp,arp_spa=0.0.0.0,{go}",  # ARP probes (RFC 5227)
             f"{t},priority=100,{port},udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,"
             f"tp_src=68,tp_dst=67,{go}"]
    for ip in spec.ipv4:
        flows += [f"{t},priority=100,{port},arp,arp_spa={ip},{go}",
                  f"{t},priority=100,{port},ip,nw_src={ip},{go}"]
    for ip in spec.ipv6:
        flows += [f"{t},priority=110,{port},icmp6,icmp_type=136,icmp_code=0,nd_target={ip},{go}",
                  f"{t},priority=100,{port},ipv6,ipv6_src={ip},{go}"]
    for icmp_type in (133, 135, 143):  # solicitations and MLD reports sent during DAD, from ::
        flows.append(f"{t},priority=100,{port},icmp6,ipv6_src=::,icmp_type={icmp_type},{go}")
    flows += [f"{t},priority=105,{port},icmp6,icmp_type=136,actions=drop",
              f"{t},priority=10,{port},arp,actions=drop",
              f"{t},priority=10,{port},ip,actions=drop",
              f"{t},priority=10,{port},ipv6,actions=drop",
              f"{t},priority=1,{port},{go}"]
    return flows


def _secgroups(spec: PortSpec, ofport: int, zone: int) -> list[str]:
    rules = spec.rules or ()
    out_exempt = ["udp,nw_dst=255.255.255.255,tp_src=68,tp_dst=67",
                  "udp6,ipv6_dst=ff02::1:2,tp_src=546,tp_dst=547"]
    out_exempt += [f"udp,nw_dst={ip},tp_src=68,tp_dst=67" for ip in spec.dhcp_servers]
    in_exempt = [f"udp,nw_src={ip},tp_src=67,tp_dst=68" for ip in spec.dhcp_servers]
    in_exempt.append("udp6,ipv6_src=fe80::/10,tp_src=547,tp_dst=546")
    flows = _conntrack_stage(SG_OUT, SG_OUT_CT, f"in_port={ofport}", zone,
                             f"resubmit(,{DELIVER})", nd=ND_OUT, exempt=out_exempt,
                             allowed=_allowed(r for r in rules if not r.inbound))
    flows.append(f"table={DELIVER},priority=100,dl_dst={spec.mac},"
                 f"actions=load:{ofport}->NXM_NX_REG6[],resubmit(,{GATE})")
    flows += gate(spec, ofport)
    flows += _conntrack_stage(SG_IN, SG_IN_CT, f"reg6={ofport}", zone, f"output:{ofport}",
                              nd=ND_IN, exempt=in_exempt,
                              allowed=_allowed(r for r in rules if r.inbound))
    return flows


def _vlan_matches(vlans: Iterable[int]) -> list[tuple[int, int]]:
    """VLAN ids as the fewest value/mask pairs (a trunk of 1-4094 is a dozen flows)."""
    out: list[tuple[int, int]] = []
    ordered = sorted(set(vlans))
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            out += [(v, m & 0xFFF) for v, m in port_masks(ordered[start], ordered[i - 1])]
            start = i
    return out


def gate(spec: PortSpec, ofport: int) -> list[str]:
    """Which frames may be delivered to a protected NIC at all: those of its own VLAN, as
    NORMAL would decide, and never its own."""
    t, who, go = f"table={GATE}", f"reg6={ofport}", f"resubmit(,{SG_IN})"
    flows = [f"{t},priority=200,{who},in_port={ofport},actions=drop"]
    if spec.cvlans:  # QinQ: the service VLAN, whatever customer tag the frame carries
        svc = spec.tag or 0
        flows += [f"{t},priority=100,{who},reg5={KNOWN | svc:#x},actions={go}",
                  f"{t},priority=100,{who},vlan_tci=0x{0x1000 | svc:04x}/0x1fff,"
                  f"actions=strip_vlan,{go}"]
    elif spec.trunks:  # tagged frames of its VLANs as they are; from access NICs, tagged
        for value, mask in _vlan_matches(spec.trunks):
            flows += [f"{t},priority=100,{who},vlan_tci=0x{0x1000 | value:04x}/"
                      f"0x{0x1000 | mask:04x},actions={go}",
                      f"{t},priority=100,{who},{UNTAGGED},reg5=0x{KNOWN | value:x}/"
                      f"0x{KNOWN | mask:x},actions=push_vlan:0x8100,"
                      f"move:NXM_NX_REG5[0..11]->OXM_OF_VLAN_VID[0..11],{go}"]
        if spec.tag is not None:  # native VLAN: untagged on the wire
            flows += _access_gate(t, who, go, spec.tag, priority=110)
    else:
        flows += _access_gate(t, who, go, spec.tag or 0, priority=100)
    flows.append(f"{t},priority=1,{who},actions=drop")
    return flows


def _access_gate(t: str, who: str, go: str, vlan: int, *, priority: int) -> list[str]:
    flows = [f"{t},priority={priority},{who},{UNTAGGED},reg5={KNOWN | vlan:#x},actions={go}",
             f"{t},priority={priority},{who},vlan_tci=0x{0x1000 | vlan:04x}/0x1fff,"
             f"actions=strip_vlan,{go}"]
    if vlan == 0:  # untagged frames from ports of unknown VLAN (LOCAL, an uplink's native)
        flows.append(f"{t},priority={priority},{who},{UNTAGGED},reg5=0,actions={go}")
    return flows


def _allowed(rules: Iterable[Rule]) -> list[str]:
    out: list[str] = []
    for rule in rules:
        out.extend(m for m in matches(rule) if m not in out)
    return out


def _conntrack_stage(table: int, ct_table: int, who: str, zone: int, accept: str, *,
                     nd: tuple[int, ...], exempt: list[str], allowed: list[str]) -> list[str]:
    """IP traffic of ``who`` through conntrack in ``zone``: replies and related traffic pass;
    a packet a rule matches passes whatever its state (new connections are committed so their
    replies pass too); everything else is dropped. The neighbour discovery types ``nd``, the
    DHCP exchange ``exempt`` and non-IP traffic (ARP) bypass conntrack."""
    t, c = f"table={table}", f"table={ct_table}"
    flows = [f"{t},priority=110,{who},icmp6,icmp_type={n},actions={accept}" for n in nd]
    flows += [f"{t},priority=110,{who},{m},actions={accept}" for m in exempt]
    flows += [f"{t},priority=100,{who},ip,actions=ct(table={ct_table},zone={zone})",
              f"{t},priority=100,{who},ipv6,actions=ct(table={ct_table},zone={zone})",
              f"{t},priority=1,{who},actions={accept}",
              f"{c},priority=200,ct_state=+trk+est-inv,{who},actions={accept}",
              f"{c},priority=200,ct_state=+trk+rel-inv,{who},actions={accept}"]
    # one flow per match, whatever the state: a new connection is committed (its replies then
    # pass above); a packet conntrack cannot place (invalid) is let through uncommitted
    flows += [f"{c},priority=100,ct_state=+trk,{who},{m},"
              f"actions=ct(commit,zone={zone}),{accept}" for m in allowed]
    flows.append(f"{c},priority=1,{who},actions=drop")
    return flows


def bundle(deletes: Iterable[tuple[int, int]], adds: Iterable[tuple[int, str]],
           stale_ports: Iterable[int] = (), groups: Iterable[str] = ()) -> str:
    """An ``ovs-ofctl bundle`` file: group changes first (a flow may only name a group that
    exists), deletions by cookie/mask (and of any of our flows still matching a reused OpenFlow
    port number), then additions; the switch applies all of it or none."""
    ours = f"cookie=0x{MAGIC << 48:016x}/0x{ALL_NICS_MASK:016x}"
    lines = list(groups)
    lines += [f"flow delete cookie=0x{cookie:016x}/0x{mask:016x}" for cookie, mask in deletes]
    lines += [f"flow delete {ours},in_port={port}" for port in stale_ports]
    lines += [f"flow delete {ours},reg6={port}" for port in stale_ports]
    lines += [f"flow add cookie=0x{cookie:016x},{flow}" for cookie, flow in adds]
    return "\n".join(lines) + "\n"
