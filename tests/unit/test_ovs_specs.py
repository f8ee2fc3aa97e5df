"""NIC specs, security-group rules and the OpenFlow pipeline: pure logic, no services."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from one_drivers.core.config import Settings
from one_drivers.core.documents import VM
from one_drivers.core.errors import BadInput
from one_drivers.core.xmlview import Template, parse_xml
from one_drivers.lab.documents import elements, vm_doc
from one_drivers.ovs import flows
from one_drivers.ovs.secgroups import matches, parse_rule, port_masks
from one_drivers.ovs.spec import _link_local, parse_vlan_list, vm_specs

SETTINGS = Settings([{"DATAPATH_TYPE": "netdev"}])


def nic(i: int = 0, **attrs: object) -> dict[str, object]:
    return {"NIC_ID": i, "VN_MAD": "ovsdb", "BRIDGE": "br0", "MAC": f"02:00:0a:00:00:{i:02x}",
            "IP": f"10.0.0.{i + 1}", "NETWORK_ID": 1, **attrs}


def specs(*nics: dict[str, object], rules=(), aliases=(), **kw):
    vm = VM(parse_xml(vm_doc(42, [], nics=nics, sg_rules=rules, aliases=aliases), what="vm"))
    return vm_specs(vm, "ovsdb", SETTINGS, **kw)


def rule(**attrs: object):
    return parse_rule(Template(parse_xml(f"<R>{elements(attrs)}</R>", what="rule")), 1,
                      where="SG 1")


def test_vlan_lists_and_their_errors():
    assert parse_vlan_list("1,10,30-33", where="x") == (1, 10, 30, 31, 32, 33)
    assert parse_vlan_list(" 7 , 7,", where="x") == (7,)
    for bad, message in (("40-30", "runs backwards"), ("5000", "VLAN 5000 is out of range"),
                         ("0", "out of range"), ("ten", "is not a VLAN id")):
        with pytest.raises(BadInput, match=message):
            parse_vlan_list(bad, where="x")


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_masks_cover_exactly_the_range(a, b):
    lo, hi = min(a, b), max(a, b)
    masks = port_masks(lo, hi)
    covered = set()
    for value, mask in masks:
        assert value & ~mask & 0xFFFF == 0
        size = (~mask & 0xFFFF) + 1
        block = set(range(value, value + size))
        assert not covered & block
        covered |= block
    assert covered == set(range(lo, hi + 1))
    assert len(masks) <= 32


def test_vlan_layouts():
    access, trunk, native, qinq, flat = specs(
        nic(0, VLAN_ID=10), nic(1, VLAN_TAGGED_ID="20-21"), nic(2, VLAN_ID=5,
                                                                 VLAN_TAGGED_ID="7"),
        nic(3, VLAN_ID=40, CVLANS="100,101", QINQ_TYPE="802.1AD"), nic(4))
    assert (access.vlan_mode, access.tag) == ("access", 10)
    assert (trunk.vlan_mode, trunk.trunks) == ("trunk", (20, 21))
    assert (native.vlan_mode, native.tag) == ("native-untagged", 5)
    assert (qinq.vlan_mode, qinq.cvlans, qinq.qinq_type) == ("dot1q-tunnel", (100, 101),
                                                              "802.1ad")
    # no VLAN_ID: access port of the untagged VLAN, never a trunk of every VLAN
    assert (flat.vlan_mode, flat.tag, flat.trunks) == ("access", None, ())
    assert flat.target == "one-42-4" and flat.datapath_type == "netdev"


def test_nic_errors_name_the_nic_and_the_attribute():
    for attrs, message in (({"VLAN_ID": 5000}, "NIC 1: VLAN_ID=5000 is out of range"),
                           ({"CVLANS": "5"}, "CVLANS need a VLAN_ID"),
                           ({"MTU": "big"}, "MTU='big' is not a number"),
                           ({"IP": "10.0.0.256"}, "IP='10.0.0.256' is not an IP address"),
                           ({"BRIDGE": "br; rm -rf /"}, "BRIDGE='br; rm -rf /' is not a valid"),
                           ({"QINQ_TYPE": "802.1x"}, "QINQ_TYPE"),
                           ({"INBOUND_AVG_BW": "-1"}, "INBOUND_AVG_BW=-1 is out of range")):
        with pytest.raises(BadInput, match=message):
            specs(nic(0), nic(1, **attrs))


def test_addresses_allowed_by_anti_spoofing_include_aliases_and_link_local():
    (spec,) = specs(nic(0, IP6_GLOBAL="2001:db8::1", VROUTER_IP="10.0.0.254"),
                    aliases=[{"NIC_ID": 9, "PARENT_ID": 0, "IP": "10.0.0.50"}])
    assert spec.ipv4 == ("10.0.0.1", "10.0.0.254", "10.0.0.50")
    assert "2001:db8::1" in spec.ipv6
    assert "fe80::aff:fe00:0" in spec.ipv6, "the EUI-64 address the guest sends NDP from"
    assert _link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"


def test_only_the_attached_nic_during_a_hotplug_and_overrides():
    both = specs(nic(0, VLAN_ID=3), nic(1, VLAN_ID=4, ATTACH="YES"))
    assert [s.nic_id for s in both] == [1]
    (changed,) = specs(nic(0, VLAN_ID=3), overrides={0: {"VLAN_ID": "9", "MTU": "1400"}})
    assert (changed.tag, changed.mtu) == (9, 1400)
    (removed,) = specs(nic(0, VLAN_ID=3), overrides={0: {"VLAN_ID": ""}})
    assert removed.tag is None


def test_rules_parse_and_match():
    tcp = rule(PROTOCOL="TCP", RULE_TYPE="INBOUND", RANGE="22,8000:8003", IP="10.0.0.0",
               SIZE=512)
    assert tcp.ports == ((22, 22), (8000, 8003))
    assert [str(n) for n in tcp.nets or ()] == ["10.0.0.0/23"]
    assert matches(tcp) == ["tcp,tp_dst=22,nw_src=10.0.0.0/23",
                            "tcp,tp_dst=0x1f40/0xfffc,nw_src=10.0.0.0/23"]
    out = rule(PROTOCOL="ALL", RULE_TYPE="OUTBOUND")
    assert out.allows_everything and matches(out) == ["ip", "ipv6"]
    icmp = rule(PROTOCOL="ICMP", RULE_TYPE="INBOUND", ICMP_TYPE=8)
    assert matches(icmp) == ["icmp,icmp_type=8"]
    v6 = rule(PROTOCOL="UDP", RULE_TYPE="OUTBOUND", IP6_GLOBAL="2001:db8::", SIZE=16)
    assert matches(v6) == ["udp6,ipv6_dst=2001:db8::/124"]
    empty_net = rule(PROTOCOL="ALL", RULE_TYPE="INBOUND", NETWORK_ID=5)
    assert empty_net.nets == () and matches(empty_net) == [], "an empty network allows nothing"


@pytest.mark.parametrize(("attrs", "message"), [
    ({"PROTOCOL": "SCTP", "RULE_TYPE": "INBOUND"}, "PROTOCOL='SCTP' is not one of"),
    ({"PROTOCOL": "TCP", "RULE_TYPE": "SIDEWAYS"}, "RULE_TYPE='SIDEWAYS'"),
    ({"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "90:80"}, "RANGE part '90:80'"),
    ({"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "70000"}, "within 0-65535"),
    ({"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "IP": "2001:db8::1"}, "not an IPv4"),
    ({"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "IP": "255.255.255.250", "SIZE": 10},
     "runs past the last address"),
    ({"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "echo"}, "not an ICMP type"),
])
def test_bad_rules(attrs, message):
    with pytest.raises(BadInput, match=message):
        rule(**attrs)


def test_pipeline_cookies_and_conntrack():
    rules = [{"SECURITY_GROUP_ID": 7, "PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "22"},
             {"SECURITY_GROUP_ID": 7, "PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND"},
             {"SECURITY_GROUP_ID": 8, "PROTOCOL": "ALL", "RULE_TYPE": "INBOUND"}]
    plain, guarded, open_both = specs(
        nic(0), nic(1, SECURITY_GROUPS="7", FILTER_IP_SPOOFING="YES"),
        nic(2, SECURITY_GROUPS="7,8"), rules=rules)
    assert plain.rules is None and not flows.filtered(plain)
    assert guarded.rules is not None and len(guarded.rules) == 2 and flows.filtered(guarded)
    assert not flows.filtered(open_both), "rules allowing everything both ways need no conntrack"
    f = flows.nic_flows(guarded, ofport=7, zone=33)
    assert any("ct(table=31,zone=33)" in x for x in f)
    assert any("ct_state=+trk," in x and "tcp,tp_dst=22" in x and "ct(commit,zone=33)" in x
               for x in f)
    assert any("ip,nw_src=10.0.0.2" in x for x in f)
    assert all("in_port=7" in x or f"dl_dst={guarded.mac}" in x or "reg6=7" in x for x in f), \
        "every flow names this NIC's port"
    cookie = flows.nic_cookie(42, 1)
    assert flows.cookie_owner(cookie) == (42, 1)
    assert flows.cookie_owner(flows.SKELETON_COOKIE) is None
    assert cookie & flows.VM_MASK == flows.vm_cookie(42)
    text = flows.bundle([(cookie, flows.NIC_MASK)], [(cookie, f[0])], stale_ports=[7])
    lines = text.splitlines()
    assert lines[0] == f"flow delete cookie=0x{cookie:016x}/0xffffffffffffffff"
    assert lines[1].startswith("flow delete cookie=0x0ed0000000000000/0xffff000000000000,"
                               "in_port=7")
    assert lines[2].endswith("reg6=7")
    assert lines[3].startswith(f"flow add cookie=0x{cookie:016x},table=0")
    grouped = flows.bundle([], [], groups=[flows.flood_group([9, 7])]).splitlines()
    assert grouped[0] == ("group add_or_mod group_id=3793,type=all,"
                          "bucket=actions=load:7->NXM_NX_REG6[],resubmit(,36),"
                          "bucket=actions=load:9->NXM_NX_REG6[],resubmit(,36)")


def test_the_nd_exceptions_are_one_way_and_dhcp_is_narrow():
    guarded, = specs(nic(0, SECURITY_GROUPS="7", GATEWAY="10.0.0.254"),
                     rules=[{"SECURITY_GROUP_ID": 7, "PROTOCOL": "TCP", "RULE_TYPE": "INBOUND",
                             "RANGE": "22"}])
    f = flows.nic_flows(guarded, ofport=5, zone=3)
    out_nd = {x.split("icmp_type=")[1].split(",")[0] for x in f
              if "table=30," in x and "icmp_type=" in x}
    in_nd = {x.split("icmp_type=")[1].split(",")[0] for x in f
             if "table=40," in x and "icmp_type=" in x}
    assert out_nd == {"133", "135", "136"}, "a VM never advertises itself as a router"
    assert in_nd == {"134", "135", "136"}, "redirects are not let in"
    dhcp_in = [x for x in f if "table=40," in x and "tp_src=67" in x]
    assert dhcp_in == ["table=40,priority=110,reg6=5,udp,nw_src=10.0.0.254,tp_src=67,tp_dst=68,"
                       "actions=output:5"]
    dhcp_out = [x for x in f if "table=30," in x and "tp_dst=67" in x]
    assert {x.split("nw_dst=")[1].split(",")[0] for x in dhcp_out} == {"255.255.255.255",
                                                                       "10.0.0.254"}
    assert any("ct_state=+trk,reg6=5,tcp,tp_dst=22" in x for x in f), \
        "a rule matches whatever the connection state"
    assert not any("+inv" in x and "drop" in x for x in f)


def test_the_gate_follows_the_nics_vlan():
    access, untagged, trunk, qinq = specs(
        nic(0, SECURITY_GROUPS="7", VLAN_ID=42), nic(1, SECURITY_GROUPS="7"),
        nic(2, SECURITY_GROUPS="7", VLAN_TAGGED_ID="100-103"),
        nic(3, SECURITY_GROUPS="7", VLAN_ID=5, CVLANS="10"),
        rules=[{"SECURITY_GROUP_ID": 7, "PROTOCOL": "TCP", "RULE_TYPE": "INBOUND"}])
    gate = [x for x in flows.gate(access, 4)]
    assert any("reg5=0x1002a" in x and "vlan_tci=0x0000/0x1000" in x for x in gate)
    assert any("vlan_tci=0x102a/0x1fff" in x and "strip_vlan" in x for x in gate)
    assert not any("reg5=0," in x for x in gate), "unknown untagged frames are VLAN 0's only"
    assert any("reg5=0," in x for x in flows.gate(untagged, 5))
    trunk_gate = flows.gate(trunk, 6)
    assert any("vlan_tci=0x1064/0x1ffc" in x for x in trunk_gate), "100-103 as one match"
    assert any("push_vlan" in x and "reg5=0x10064/0x10ffc" in x for x in trunk_gate)
    assert any("reg5=0x10005" in x and "vlan_tci" not in x for x in flows.gate(qinq, 7))
    assert all(x.endswith("actions=drop") for x in flows.gate(access, 4)
               if "priority=200" in x or "priority=1," in x)


def test_tenant_numbers_are_ascii_digits_or_a_clear_refusal():
    assert rule(PROTOCOL="TCP", RULE_TYPE="INBOUND", RANGE="22").ports == ((22, 22),)
    for attrs in ({"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "\u00b2"},
                  {"PROTOCOL": "UDP", "RULE_TYPE": "INBOUND", "RANGE": "1:\u0663"},
                  {"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "\u00b9"},
                  {"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "IP": "10.0.0.1",
                   "SIZE": "\u00b2"}):
        with pytest.raises(BadInput):
            rule(**attrs)


def test_interface_names_are_never_options():
    assert specs(nic(0, BRIDGE="br-0"))[0].bridge == "br-0"
    for attr in ("BRIDGE", "TARGET", "PHYDEV"):
        with pytest.raises(BadInput, match="is not a valid interface name"):
            specs(nic(0, **{attr: "-oProxy"}))
