"""An OpenNebula address range as the ``kea`` IPAM driver reads it: validated, in numbers.

oned numbers an AR's addresses by index: address ``i`` is ``IP + i`` and its MAC is ``MAC + i``
(the low 32 bits, as oned adds them: ``AddressRange::addr_to_xml``). ``get_address`` is sent no
MAC, so the MAC a lease is made for comes from the same rule.
"""

from __future__ import annotations

import ipaddress
import re

from one_drivers.core.errors import BadInput
from one_drivers.core.xmlview import Template

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# what register answers besides the range itself (the driver's own keys, kept in the AR)
SUBNET_KEY, ZONE_KEY = "KEA_SUBNET_ID", "DNS_ZONE"


def ip_int(value: str, what: str = "address") -> int:
    try:
        return int(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise BadInput(f"{what} {value!r} is not an IPv4 address") from None


def ip_text(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def mac_int(value: str, what: str = "MAC") -> int:
    if not _MAC.match(value.strip()):
        raise BadInput(f"{what} {value!r} is not a MAC address")
    return int(value.strip().replace(":", ""), 16)


def mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def mac_at(first: int, index: int) -> int:
    """oned's MAC of address ``index``: ``index`` added to the low 32 bits, no carry."""
    return (first & ~0xFFFFFFFF) | ((first + index) & 0xFFFFFFFF)


def domain(value: str, what: str) -> str:
    """A DNS name, lower case, ending with a dot."""
    name = value.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.match(p) for p in name.split(".")):
        raise BadInput(f"{what} {value!r} is not a domain name")
    return name + "."


class AddressRange:
    """The IPv4 part of an AR: ``first`` .. ``first + size - 1`` inside ``network``."""

    def __init__(self, ar: Template, *, registering: bool = False) -> None:
        get = ar.get
        self.ar_id = get("AR_ID") or ""
        kind = (get("TYPE") or "IP4").upper()
        if kind not in ("IP4", "IP4_6"):
            raise BadInput(f"the kea IPAM serves IPv4 address ranges; this AR is TYPE={kind}",
                           hint="use TYPE=IP4 (or IP4_6: its IPv6 part is left to SLAAC)")
        self.type = kind
        self.network = self._network(get("NETWORK_ADDRESS"), get("NETWORK_MASK"))
        net = self.network
        hosts_first, hosts_last = int(net.network_address) + 1, int(net.broadcast_address) - 1
        if net.prefixlen >= 31:
            hosts_first, hosts_last = int(net.network_address), int(net.broadcast_address)
        gateway = get("GATEWAY")
        self.gateway = ip_int(gateway, "GATEWAY") if gateway else None
        if self.gateway is not None and not hosts_first <= self.gateway <= hosts_last:
            raise BadInput(f"GATEWAY {get('GATEWAY')} is not a host of {net}")
        ip, size = get("IP"), get("SIZE")
        if ip:
            self.first = ip_int(ip, "IP")
        elif registering:  # the IPAM chooses: the network's first host that is not the gateway
            self.first = hosts_first + (1 if self.gateway == hosts_first else 0)
        else:
            raise BadInput("the AR has no IP")
        if size:
            try:
                self.size = int(size)
            except ValueError:
                raise BadInput(f"SIZE {size!r} is not a number") from None
        elif registering:  # up to the last host, the gateway left out when it is the last
            self.size = hosts_last - self.first + 1 - (1 if self.gateway == hosts_last else 0)
        else:
            raise BadInput("the AR has no SIZE")
        last = self.first + self.size - 1
        if self.size < 1 or not (hosts_first <= self.first and last <= hosts_last):
            raise BadInput(f"the AR {ip_text(self.first)} + {self.size} addresses is not "
                           f"inside the hosts of {net}")
        if self.gateway is not None and self.first <= self.gateway <= last:
            raise BadInput(f"GATEWAY {ip_text(self.gateway)} is inside the AR's own addresses",
                           hint="oned would lease it to a VM: start the AR after it, or shrink it")
        self.dns = [ip_int(d, "DNS") for d in (get("DNS") or "").replace(",", " ").split()]
        mtu = get("GUEST_MTU")
        self.mtu = None
        if mtu:
            if not mtu.isdigit() or not 68 <= int(mtu) <= 65535:
                raise BadInput(f"GUEST_MTU {mtu!r} is not an MTU (68..65535)")
            self.mtu = int(mtu)
        self.search = [domain(d, "SEARCH_DOMAIN")
                       for d in (get("SEARCH_DOMAIN") or "").replace(",", " ").split()]
        self.zone = domain(get(ZONE_KEY) or "", ZONE_KEY) if get(ZONE_KEY) else None
        mac = get("MAC")
        self.mac = mac_int(mac) if mac else None
        subnet = get(SUBNET_KEY)
        if subnet and not subnet.isdigit():
            raise BadInput(f"{SUBNET_KEY} {subnet!r} is not a Kea subnet id")
        self.subnet_id = int(subnet) if subnet else None

    @staticmethod
    def _network(address: str | None, mask: str | None) -> ipaddress.IPv4Network:
        if not address:
            raise BadInput("the AR has no NETWORK_ADDRESS",
                           hint="a DHCP subnet needs NETWORK_ADDRESS and NETWORK_MASK")
        if "/" in address and not mask:
            address, _, mask = address.partition("/")
        if not mask:
            raise BadInput("the AR has no NETWORK_MASK",
                           hint="a DHCP subnet needs NETWORK_ADDRESS and NETWORK_MASK")
        try:
            return ipaddress.IPv4Network(f"{address.strip()}/{mask.strip()}")
        except ValueError as exc:
            raise BadInput(f"NETWORK_ADDRESS/NETWORK_MASK {address}/{mask}: {exc}") from None

    @property
    def last(self) -> int:
        return self.first + self.size - 1

    def index_of(self, ip: int) -> int:
        """The index of ``ip`` in the range; BadInput when it is outside."""
        if not self.first <= ip <= self.last:
            raise BadInput(f"address {ip_text(ip)} is outside the AR "
                           f"({ip_text(self.first)} - {ip_text(self.last)})")
        return ip - self.first

    def mac_of(self, index: int) -> int:
        if self.mac is None:
            raise BadInput("the AR has no MAC", hint="oned sets one on every AR it registered")
        return mac_at(self.mac, index)

    def mac_fence(self) -> str | None:
        """A Kea class test true for the MACs of this AR: those sharing the leading bytes its
        first and last MAC share (None when they share none)."""
        first, last = mac_text(self.mac_of(0)), mac_text(self.mac_of(self.size - 1))
        shared = 0
        while shared < 6 and first[3 * shared:3 * shared + 2] == last[3 * shared:3 * shared + 2]:
            shared += 1
        if shared == 0:
            return None
        prefix = first[:3 * shared - 1].replace(":", "")
        return f"substring(pkt4.mac,0,{shared}) == 0x{prefix}"

    def answer(self, subnet_id: int) -> str:
        """register_address_range's answer: the AR oned keeps, our keys included."""
        attrs = {"IPAM_MAD": "kea", "TYPE": self.type, "IP": ip_text(self.first),
                 "SIZE": str(self.size), "NETWORK_ADDRESS": str(self.network.network_address),
                 "NETWORK_MASK": str(self.network.netmask)}
        if self.gateway is not None:
            attrs["GATEWAY"] = ip_text(self.gateway)
        if self.dns:
            attrs["DNS"] = " ".join(ip_text(d) for d in self.dns)
        if self.mtu:
            attrs["GUEST_MTU"] = str(self.mtu)
        if self.search:
            attrs["SEARCH_DOMAIN"] = " ".join(s.rstrip(".") for s in self.search)
        if self.zone:
            attrs[ZONE_KEY] = self.zone
        attrs[SUBNET_KEY] = str(subnet_id)
        body = ",\n".join(f'  {k} = "{v}"' for k, v in attrs.items())
        return f"AR = [\n{body}\n]"


def address_answer(first: int, size: int) -> str:
    """get_address's answer."""
    return f'ADDRESS = [ IP = "{ip_text(first)}", SIZE = "{size}" ]'
