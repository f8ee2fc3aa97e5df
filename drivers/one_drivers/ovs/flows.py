"""The OpenFlow pipeline that enforces anti-spoofing and security groups, as text for ovs-ofctl.

Every flow carries a cookie: ``0x0ED0 | VM id (32 bits) | NIC id (16 bits)`` for a NIC's flows,
``0x0ED1 << 48`` for the bridge's shared skeleton. Cleanup deletes by cookie and mask, so it removes
exactly one NIC's, one VM's or all of our flows and never an operator's.

Tables (a packet from a VM walks them in order; others start at 35)::

    0   in_port of a VM NIC -> 10; anything else (skeleton) -> 35
    10  MAC anti-spoofing: source MAC, and ARP sender MAC, must be the NIC's
    20  IP anti-spoofing: IPv4/ARP/IPv6 sources must be the NIC's (aliases included); DHCP
        discovery and IPv6 DAD allowed; DHCP server replies and neighbour adverts for other
        addresses dropped
    30  outbound security groups: IP traffic into conntrack (the NIC's zone) -> 31
    31  established/related pass, new connections a rule allows are committed, the rest dropped
    35  delivery: traffic for a NIC with security groups -> 40, everything else NORMAL
    40  inbound security groups: IP traffic into conntrack (the receiving NIC's zone) -> 41
    41  as 31, for inbound rules, then NORMAL
"""

from __future__ import annotations

from collections.abc import Iterable

from one_drivers.ovs.secgroups import Rule, matches
from one_drivers.ovs.spec import PortSpec

MAGIC = 0x0ED0
SKELETON_COOKIE = 0x0ED1 << 48
ALL_NICS_MASK = 0xFFFF << 48
VM_MASK = (1 << 64) - (1 << 16)
NIC_MASK = (1 << 64) - 1

MAC_TABLE, IP_TABLE, SG_OUT, SG_OUT_CT, DELIVER, SG_IN, SG_IN_CT = 10, 20, 30, 31, 35, 40, 41
ND_TYPES = (133, 134, 135, 136)  # router/neighbour solicitation and advertisement: never filtered


def nic_cookie(vm_id: int, nic_id: int) -> int:
    return (MAGIC << 48) | ((vm_id & 0xFFFFFFFF) << 16) | (nic_id & 0xFFFF)


def vm_cookie(vm_id: int) -> int:
    return nic_cookie(vm_id, 0)


def cookie_owner(cookie: int) -> tuple[int, int] | None:
    """(VM id, NIC id) of one of our NIC cookies, None for anything else."""
    if cookie >> 48 != MAGIC:
        return None
    return (cookie >> 16) & 0xFFFFFFFF, cookie & 0xFFFF


def skeleton() -> list[str]:
    """The bridge's shared flows: traffic not from a VM NIC starts at delivery."""
    return [f"table=0,priority=1,actions=resubmit(,{DELIVER})",
            f"table={DELIVER},priority=0,actions=NORMAL"]


def filtered(spec: PortSpec) -> bool:
    """Does the NIC need conntrack? Not without groups, nor when its rules allow everything
    both ways."""
    if spec.rules is None:
        return False
    return not (any(r.allows_everything and r.inbound for r in spec.rules)
                and any(r.allows_everything and not r.inbound for r in spec.rules))


def nic_flows(spec: PortSpec, ofport: int, zone: int) -> list[str]:
    port = f"in_port={ofport}"
    flows = [f"table=0,priority=100,{port},actions=resubmit(,{MAC_TABLE})"]
    flows += _mac_filter(spec, port)
    flows += _ip_filter(spec, port)
    if filtered(spec):
        flows += _secgroups(spec, port, zone)
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
    go = f"actions=resubmit(,{SG_OUT})"
    t = f"table={IP_TABLE}"
    if not spec.filter_ip:
        return [f"{t},priority=1,{port},{go}"]
    flows = [f"{t},priority=120,{port},udp,tp_src=67,tp_dst=68,actions=drop",  # rogue DHCP server
             f"{t},priority=120,{port},udp6,tp_src=547,tp_dst=546,actions=drop",
             f"{t},priority=100,{port},arp,arp_spa=0.0.0.0,{go}",  # ARP probes (RFC 5227)
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


def _secgroups(spec: PortSpec, port: str, zone: int) -> list[str]:
    rules = spec.rules or ()
    dst = f"dl_dst={spec.mac}"
    flows = _conntrack_stage(SG_OUT, SG_OUT_CT, port, zone, f"resubmit(,{DELIVER})",
                             exempt=("udp,tp_src=68,tp_dst=67", "udp6,tp_src=546,tp_dst=547"),
                             allowed=_allowed(r for r in rules if not r.inbound))
    flows.append(f"table={DELIVER},priority=100,{dst},actions=resubmit(,{SG_IN})")
    flows += _conntrack_stage(SG_IN, SG_IN_CT, dst, zone, "NORMAL",
                              exempt=("udp,tp_src=67,tp_dst=68", "udp6,tp_src=547,tp_dst=546"),
                              allowed=_allowed(r for r in rules if r.inbound))
    return flows


def _allowed(rules: Iterable[Rule]) -> list[str]:
    out: list[str] = []
    for rule in rules:
        out.extend(m for m in matches(rule) if m not in out)
    return out


def _conntrack_stage(table: int, ct_table: int, who: str, zone: int, accept: str, *,
                     exempt: tuple[str, ...], allowed: list[str]) -> list[str]:
    """IP traffic of ``who`` through conntrack in ``zone``: replies and related traffic pass,
    new connections pass when ``allowed`` matches them, everything else is dropped. Neighbour
    discovery, DHCP and non-IP traffic (ARP) bypass conntrack."""
    t, c = f"table={table}", f"table={ct_table}"
    flows = [f"{t},priority=110,{who},icmp6,icmp_type={n},actions={accept}" for n in ND_TYPES]
    flows += [f"{t},priority=110,{who},{m},actions={accept}" for m in exempt]
    flows += [f"{t},priority=100,{who},ip,actions=ct(table={ct_table},zone={zone})",
              f"{t},priority=100,{who},ipv6,actions=ct(table={ct_table},zone={zone})",
              f"{t},priority=1,{who},actions={accept}",
              f"{c},priority=200,ct_state=+trk+est-inv,{who},actions={accept}",
              f"{c},priority=200,ct_state=+trk+rel-inv,{who},actions={accept}",
              f"{c},priority=190,ct_state=+trk+inv,{who},actions=drop"]
    flows += [f"{c},priority=100,ct_state=+trk+new,{who},{m},"
              f"actions=ct(commit,zone={zone}),{accept}" for m in allowed]
    flows.append(f"{c},priority=1,{who},actions=drop")
    return flows


def bundle(deletes: Iterable[tuple[int, int]], adds: Iterable[tuple[int, str]],
           stale_ports: Iterable[int] = ()) -> str:
    """An ``ovs-ofctl --bundle add-flows`` file: deletions by cookie/mask (and of any of our flows
    still matching a reused OpenFlow port number), then additions; the switch applies all of it
    or none."""
    ours = f"cookie=0x{MAGIC << 48:016x}/0x{ALL_NICS_MASK:016x}"
    lines = [f"delete cookie=0x{cookie:016x}/0x{mask:016x}" for cookie, mask in deletes]
    lines += [f"delete {ours},in_port={port}" for port in stale_ports]
    lines += [f"add cookie=0x{cookie:016x},{flow}" for cookie, flow in adds]
    return "\n".join(lines) + "\n"
