"""The kea IPAM's reading of an AR: oned's numbering (IP + i, MAC + i), what a partial AR
becomes, what is refused, and the answers oned parses."""

from __future__ import annotations

import re

import pytest

from one_drivers.core.errors import BadInput
from one_drivers.core.xmlview import Template, parse_xml
from one_drivers.ipam.kea.ranges import AddressRange, address_answer, mac_at, mac_int, mac_text


def ar(registering: bool = False, **attrs: str) -> AddressRange:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in attrs.items())
    return AddressRange(Template(parse_xml(f"<AR>{body}</AR>", what="AR")),
                        registering=registering)


NET = {"NETWORK_ADDRESS": "10.0.0.0", "NETWORK_MASK": "255.255.255.0"}


def test_a_partial_ar_gets_the_networks_hosts_without_the_gateway():
    r = ar(True, **NET, GATEWAY="10.0.0.1")
    assert (r.first, r.size) == (0x0A000002, 253)
    r = ar(True, **NET, GATEWAY="10.0.0.254")
    assert (r.first, r.size) == (0x0A000001, 253)
    r = ar(True, NETWORK_ADDRESS="10.0.0.0/30")
    assert (r.first, r.size) == (0x0A000001, 2)
    r = ar(True, **NET, IP="10.0.0.100")
    assert r.size == 155, "from IP to the last host"


def test_a_complete_ar_is_kept_and_answered_as_oned_parses_it():
    r = ar(True, **NET, IP="10.0.0.10", SIZE="20", GATEWAY="10.0.0.1", DNS="10.0.0.53,1.1.1.1",
           GUEST_MTU="1400", SEARCH_DOMAIN="a.example b.example.", DNS_ZONE="Lab.One")
    text = r.answer(12)
    attrs = dict(re.findall(r'(\w+) = "([^"]*)"', text))
    assert text.startswith("AR = [") and text.endswith("]")
    assert attrs == {"IPAM_MAD": "kea", "TYPE": "IP4", "IP": "10.0.0.10", "SIZE": "20",
                     "NETWORK_ADDRESS": "10.0.0.0", "NETWORK_MASK": "255.255.255.0",
                     "GATEWAY": "10.0.0.1", "DNS": "10.0.0.53 1.1.1.1", "GUEST_MTU": "1400",
                     "SEARCH_DOMAIN": "a.example b.example", "DNS_ZONE": "lab.one.",
                     "KEA_SUBNET_ID": "12"}
    assert address_answer(r.first + 3, 2) == 'ADDRESS = [ IP = "10.0.0.13", SIZE = "2" ]'


@pytest.mark.parametrize(("attrs", "says"), [
    ({"TYPE": "ETHER"}, "TYPE=ETHER"),
    ({"TYPE": "IP6"}, "TYPE=IP6"),
    ({"NETWORK_MASK": ""}, "no NETWORK_MASK"),
    ({"NETWORK_ADDRESS": "10.0.0.5"}, "has host bits set"),
    ({"IP": "10.0.1.10"}, "not inside the hosts of 10.0.0.0/24"),
    ({"SIZE": "250"}, "not inside the hosts"),
    ({"SIZE": "0"}, "not inside the hosts"),
    ({"SIZE": "-3"}, "not inside the hosts"),
    ({"GATEWAY": "10.0.0.15"}, "inside the AR's own addresses"),
    ({"GATEWAY": "10.0.1.1"}, "not a host of"),
    ({"DNS": "10.0.0.1 x"}, "DNS 'x' is not an IPv4 address"),
    ({"GUEST_MTU": "9"}, "not an MTU"),
    ({"SEARCH_DOMAIN": "bad_name.example"}, "not a domain name"),
    ({"DNS_ZONE": "a..b"}, "not a domain name"),
    ({"MAC": "02:00:zz:00:00:01"}, "not a MAC address"),
    ({"KEA_SUBNET_ID": "1; drop"}, "not a Kea subnet id"),
])
def test_bad_attributes_are_named_in_the_error(attrs, says):
    with pytest.raises(BadInput, match=re.escape(says)):
        ar(True, **{**NET, "IP": "10.0.0.10", "SIZE": "20", **attrs})


def test_addresses_and_macs_follow_oneds_index():
    r = ar(**NET, IP="10.0.0.10", SIZE="20", MAC="02:00:0a:00:00:0a")
    assert r.index_of(0x0A00000A + 19) == 19
    with pytest.raises(BadInput, match="outside the AR"):
        r.index_of(0x0A00000A + 20)
    assert mac_text(r.mac_of(5)) == "02:00:0a:00:00:0f"
    # oned adds the index to the low 32 bits only (AddressRange::addr_to_xml): no carry
    assert mac_text(mac_at(mac_int("02:00:ff:ff:ff:ff"), 1)) == "02:00:00:00:00:00"


def test_the_dhcp_fence_matches_the_bytes_the_ars_macs_share():
    r = ar(**NET, IP="10.0.0.10", SIZE="20", MAC="02:00:0a:00:00:0a")
    assert r.mac_fence() == "substring(pkt4.mac,0,5) == 0x02000a0000"
    r = ar(**NET, IP="10.0.0.1", SIZE="254", MAC="02:00:0a:00:00:f0")
    assert r.mac_fence() == "substring(pkt4.mac,0,4) == 0x02000a00", "across a byte boundary"
    r = ar(**NET, IP="10.0.0.10", SIZE="1", MAC="02:00:0a:00:00:0a")
    assert r.mac_fence() == "substring(pkt4.mac,0,6) == 0x02000a00000a"
