"""OpenNebula security-group rules, parsed and turned into OpenFlow match expressions.

OpenNebula flattens the rules of every security group a VM uses into ``SECURITY_GROUP_RULE``
vectors (PROTOCOL, RULE_TYPE, RANGE, ICMP_TYPE, ICMPV6_TYPE, IP/IP6* + SIZE, NETWORK_ID); a NIC
lists its groups in ``SECURITY_GROUPS``. Rules allow traffic; what no rule allows is dropped.
Port ranges become value/mask matches and address ranges CIDR blocks, both exact.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from one_drivers.core.errors import BadInput
from one_drivers.core.xmlview import Template

PROTOCOLS = ("TCP", "UDP", "ICMP", "ICMPV6", "IPSEC", "ALL")
ESP = 50  # IPSEC rules allow ESP, as upstream's iptables driver does

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class Rule(NamedTuple):
    group: int
    inbound: bool  # RULE_TYPE: INBOUND (to the VM) or OUTBOUND (from it)
    protocol: str
    ports: tuple[tuple[int, int], ...]  # empty: every port
    icmp_type: int | None
    nets: tuple[Net, ...] | None  # None: any address

    @property
    def allows_everything(self) -> bool:
        return self.protocol == "ALL" and self.nets is None


def _ascii_digits(text: str) -> bool:
    """Only 0-9: ``str.isdigit`` also accepts ``"²"``, which ``int()`` then refuses."""
    return text.isascii() and text.isdigit()


def rules_for(vectors: Iterable[Template], sg_ids: str, *, where: str) -> tuple[Rule, ...]:
    """The rules of the groups a NIC lists in SECURITY_GROUPS (``"0,100"``)."""
    wanted = set()
    for part in sg_ids.split(","):
        part = part.strip()
        if part:
            if not _ascii_digits(part):
                raise BadInput(f"{where}: SECURITY_GROUPS={sg_ids!r} is not a list of ids")
            wanted.add(int(part))
    rules = []
    for vector in vectors:
        group = vector.opt("SECURITY_GROUP_ID")
        if group is not None and _ascii_digits(group) and int(group) in wanted:
            rules.append(parse_rule(vector, int(group), where=f"{where} security group {group}"))
    return tuple(rules)


def parse_rule(vector: Template, group: int, *, where: str) -> Rule:
    protocol = (vector.opt("PROTOCOL") or "").upper()
    if protocol not in PROTOCOLS:
        raise BadInput(f"{where}: PROTOCOL={protocol or '(empty)'!r} is not one of "
                       f"{', '.join(PROTOCOLS)}")
    kind = (vector.opt("RULE_TYPE") or "").upper()
    if kind not in ("INBOUND", "OUTBOUND"):
        raise BadInput(f"{where}: RULE_TYPE={kind or '(empty)'!r} is not INBOUND or OUTBOUND")
    ports: tuple[tuple[int, int], ...] = ()
    if protocol in ("TCP", "UDP") and vector.opt("RANGE"):
        ports = parse_ports(vector.opt("RANGE") or "", where=where)
    icmp_name = "ICMP_TYPE" if protocol == "ICMP" else "ICMPV6_TYPE"
    icmp_type = None
    if protocol in ("ICMP", "ICMPV6") and vector.opt(icmp_name):
        raw = vector.opt(icmp_name) or ""
        if not _ascii_digits(raw) or int(raw) > 255:
            raise BadInput(f"{where}: {icmp_name}={raw!r} is not an ICMP type (0-255)")
        icmp_type = int(raw)
    return Rule(group, kind == "INBOUND", protocol, ports, icmp_type, parse_nets(vector, where))


def parse_ports(text: str, *, where: str) -> tuple[tuple[int, int], ...]:
    """``"22,80:90"`` -> ((22, 22), (80, 90))."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo_s, sep, hi_s = part.partition(":")
        if not _ascii_digits(lo_s) or (sep and not _ascii_digits(hi_s)):
            raise BadInput(f"{where}: RANGE part {part!r} is not a port or lo:hi range")
        lo, hi = int(lo_s), int(hi_s) if sep else int(lo_s)
        if not (0 <= lo <= hi <= 65535):
            raise BadInput(f"{where}: RANGE part {part!r} is not within 0-65535 in order")
        out.append((lo, hi))
    return tuple(out)


def parse_nets(vector: Template, where: str) -> tuple[Net, ...] | None:
    """IP or IP6/IP6_GLOBAL/IP6_ULA with SIZE addresses, as CIDR blocks; None for any address.
    A NETWORK_ID rule comes with its network's ranges already expanded by OpenNebula; one
    without any (an empty network) matches nothing rather than everything."""
    size_raw = vector.opt("SIZE")
    if size_raw is not None and (not _ascii_digits(size_raw) or int(size_raw) < 1):
        raise BadInput(f"{where}: SIZE={size_raw!r} is not a positive number")
    size = int(size_raw) if size_raw else 1
    nets: list[Net] = []
    for name in ("IP", "IP6", "IP6_GLOBAL", "IP6_ULA"):
        raw = vector.opt(name)
        if raw is None:
            continue
        try:
            first = ipaddress.ip_address(raw)
        except ValueError:
            raise BadInput(f"{where}: {name}={raw!r} is not an IP address") from None
        if (name == "IP") != (first.version == 4):
            raise BadInput(f"{where}: {name}={raw!r} is not an IPv{4 if name == 'IP' else 6} "
                           "address")
        try:
            last = first + (size - 1)
        except (ipaddress.AddressValueError, OverflowError):
            raise BadInput(f"{where}: {name}={raw} with SIZE={size} runs past the last "
                           "address") from None
        nets.extend(ipaddress.summarize_address_range(first, last))
    if nets:
        return tuple(nets)
    if vector.opt("NETWORK_ID") is not None:
        return ()
    return None


def port_masks(lo: int, hi: int) -> list[tuple[int, int]]:
    """The fewest value/mask pairs covering exactly lo..hi (OpenFlow has no port ranges)."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


def _l4(rule: Rule, v6: bool) -> list[str]:
    """Protocol + port/type parts of the match, for one address family."""
    if rule.protocol == "ALL":
        return ["ipv6" if v6 else "ip"]
    if rule.protocol == "IPSEC":
        return [f"{'ipv6' if v6 else 'ip'},nw_proto={ESP}"]
    if rule.protocol in ("ICMP", "ICMPV6"):
        base = "icmp6" if v6 else "icmp"
        return [base + (f",icmp_type={rule.icmp_type}" if rule.icmp_type is not None else "")]
    base = rule.protocol.lower() + ("6" if v6 else "")
    if not rule.ports:
        return [base]
    out = []
    for lo, hi in rule.ports:
        for value, mask in port_masks(lo, hi):
            out.append(f"{base},tp_dst={value}" if mask == 0xFFFF
                       else f"{base},tp_dst=0x{value:04x}/0x{mask:04x}")
    return out


def matches(rule: Rule) -> list[str]:
    """OpenFlow match strings allowing what the rule allows (addresses seen from the VM: the
    peer is the source of inbound traffic and the destination of outbound)."""
    families = {"ICMP": (4,), "ICMPV6": (6,)}.get(rule.protocol, (4, 6))
    out: list[str] = []
    for version in families:
        v6 = version == 6
        field = ("ipv6_src" if v6 else "nw_src") if rule.inbound else \
            ("ipv6_dst" if v6 else "nw_dst")
        if rule.nets is None:
            addrs = [""]
        else:
            addrs = [f",{field}={net}" for net in rule.nets if net.version == version]
        for l4 in _l4(rule, v6):
            out.extend(l4 + addr for addr in addrs)
    return out
