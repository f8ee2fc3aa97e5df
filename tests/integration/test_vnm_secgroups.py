"""Security groups as a tenant is promised them (SECURITY.md, issue 21): every frame delivered to
a protected NIC passed its inbound rules, unicast or not; a VM never acts as an IPv6 router; a
rule that says ALL means all; DHCP passes only as an exchange needs it; anti-spoofing checks only
the source address, as upstream's. Real frames between namespaces on the lab's switch, watched on
the receiving NIC; each "did not arrive" comes with a control frame on the same path that did."""

from __future__ import annotations

import pytest

from one_drivers.lab.documents import vm_doc
from tests.frames import BROADCAST, exchange, icmp4, icmp6, udp4, udp6
from tests.integration.test_vnm_ovsdb import Net

pytestmark = pytest.mark.lab


@pytest.fixture
def net(lab_env, remotes):
    """A bridge of its own (Net, as the other VNM tests use), removed afterwards."""
    n = Net(remotes)
    yield n
    n.close()

SG = 300
UDP_IN_5000 = {"SECURITY_GROUP_ID": SG, "PROTOCOL": "UDP", "RULE_TYPE": "INBOUND",
               "RANGE": "5000"}
TCP_OUT_80 = {"SECURITY_GROUP_ID": SG, "PROTOCOL": "TCP", "RULE_TYPE": "OUTBOUND",
              "RANGE": "80"}


def _v6(ip4: str) -> str:
    return "fd00::" + ip4.rsplit(".", 1)[1]


def _start(bridge: Net, vm: int, ip: str, *, rules=(), v6: bool = True, **attrs):
    extra = {"IP6_ULA": _v6(ip)} if v6 else {}
    doc = vm_doc(vm, [], nics=[bridge.nic(vm, 0, ip, **extra, **attrs)], sg_rules=list(rules))
    addrs = [f"{ip}/24"] + ([f"{_v6(ip)}/64"] if v6 else [])
    (nic,) = bridge.start(doc, [(f"one-{vm}-0", bridge.mac(vm, 0), addrs)])
    return nic


def test_broadcast_and_multicast_frames_pass_the_inbound_rules(net):
    a, b, c = net.vm_base, net.vm_base + 1, net.vm_base + 2
    vm = _start(net, a, "10.41.0.1", rules=[UDP_IN_5000, TCP_OUT_80], VLAN_ID=77,
                SECURITY_GROUPS=str(SG))
    peer = _start(net, b, "10.41.0.2", VLAN_ID=77)
    other_vlan = _start(net, c, "10.41.0.3", VLAN_ID=78)
    src = peer.mac
    shapes = {  # how a peer can reach the VM without its MAC (a poisoned neighbour entry...)
        "bcast": (BROADCAST, "10.41.0.1"),
        "l2mcast": ("01:00:5e:01:02:03", "10.41.0.1"),
        "subnet": (BROADCAST, "10.41.0.255"),
    }
    for name, (mac, ip) in shapes.items():
        sends = [(peer, f"DENY-{name}", udp4(src, mac, "10.41.0.2", ip, 4000, 6000,
                                             f"DENY-{name}")),
                 (peer, f"OK-{name}", udp4(src, mac, "10.41.0.2", ip, 4000, 5000, f"OK-{name}"))]
        seen = exchange(vm, sends, control=f"OK-{name}")
        assert seen == {f"OK-{name}"}, f"{name}: only what the rules allow arrives ({seen})"
    six = ("33:33:00:00:00:01", _v6("10.41.0.2"), "ff02::1")
    sends = [(peer, "DENY-v6", udp6(src, six[0], six[1], six[2], 4000, 6000, "DENY-v6")),
             (peer, "OK-v6", udp6(src, six[0], six[1], six[2], 4000, 5000, "OK-v6"))]
    assert exchange(vm, sends, control="OK-v6") == {"OK-v6"}
    # another VLAN's broadcast never reaches it, even to an allowed port
    sends = [(other_vlan, "VLAN78", udp4(other_vlan.mac, BROADCAST, "10.41.0.3", "10.41.0.1",
                                         4000, 5000, "VLAN78")),
             (peer, "VLAN77", udp4(src, BROADCAST, "10.41.0.2", "10.41.0.1", 4000, 5000,
                                   "VLAN77"))]
    assert exchange(vm, sends, control="VLAN77") == {"VLAN77"}
    # unicast still passes its rules too (and the VM's own broadcast never comes back to it)
    sends = [(vm, "ECHO-SELF", udp4(vm.mac, BROADCAST, "10.41.0.1", "10.41.0.255", 5000, 5000,
                                    "ECHO-SELF")),
             (peer, "UNICAST", udp4(src, vm.mac, "10.41.0.2", "10.41.0.1", 4000, 5000,
                                    "UNICAST"))]
    assert exchange(vm, sends, control="UNICAST") == {"UNICAST"}


def test_a_vm_never_sends_router_advertisements_and_hears_no_redirects(net):
    a, b = net.vm_base, net.vm_base + 1
    vm = _start(net, a, "10.42.0.1", rules=[UDP_IN_5000, TCP_OUT_80], SECURITY_GROUPS=str(SG))
    peer = _start(net, b, "10.42.0.2")
    ll_vm, ll_peer = _link_local(vm.mac), _link_local(peer.mac)
    target = bytes(4) + bytes.fromhex("fe80" + "0" * 28)
    sends = [(vm, "RA", icmp6(vm.mac, "33:33:00:00:00:01", ll_vm, "ff02::1", 134, "RA",
                              bytes(12))),
             (vm, "NS", icmp6(vm.mac, "33:33:00:00:00:01", ll_vm, "ff02::1", 135, "NS",
                              target))]
    assert exchange(peer, sends, control="NS") == {"NS"}, "RA dropped, NS passes"
    sends = [(peer, "REDIRECT", icmp6(peer.mac, vm.mac, ll_peer, ll_vm, 137, "REDIRECT",
                                      bytes(36))),
             (peer, "NA", icmp6(peer.mac, vm.mac, ll_peer, ll_vm, 136, "NA", target))]
    assert exchange(vm, sends, control="NA") == {"NA"}, "redirect dropped, NA passes"
    sends = [(peer, "RA-IN", icmp6(peer.mac, "33:33:00:00:00:01", ll_peer, "ff02::1", 134,
                                   "RA-IN", bytes(12)))]
    assert exchange(vm, sends, control="RA-IN") == {"RA-IN"}, "routers are heard"


def test_a_rule_that_says_all_means_all_whatever_the_connection_state(net):
    a, b, c = net.vm_base, net.vm_base + 1, net.vm_base + 2
    all_out = {"SECURITY_GROUP_ID": SG, "PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND"}
    icmp_reply_in = {"SECURITY_GROUP_ID": SG, "PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND",
                     "ICMP_TYPE": "0"}
    vm = _start(net, a, "10.43.0.1", rules=[all_out, icmp_reply_in, UDP_IN_5000],
                SECURITY_GROUPS=str(SG), v6=False)
    peer = _start(net, b, "10.43.0.2", v6=False)
    sends = [(vm, "REPLY-OUT", icmp4(vm.mac, peer.mac, "10.43.0.1", "10.43.0.2", 0,
                                     "REPLY-OUT")),
             (vm, "ERR-OUT", icmp4(vm.mac, peer.mac, "10.43.0.1", "10.43.0.2", 3, "ERR-OUT"))]
    assert exchange(peer, sends, control="ERR-OUT") == {"REPLY-OUT", "ERR-OUT"}, \
        "an unsolicited echo reply and an ICMP error leave under ALL OUTBOUND"
    sends = [(peer, "REPLY-IN", icmp4(peer.mac, vm.mac, "10.43.0.2", "10.43.0.1", 0,
                                      "REPLY-IN")),
             (peer, "ERR-IN", icmp4(peer.mac, vm.mac, "10.43.0.2", "10.43.0.1", 3, "ERR-IN")),
             (peer, "CTL-IN", udp4(peer.mac, vm.mac, "10.43.0.2", "10.43.0.1", 4000, 5000,
                                   "CTL-IN"))]
    assert exchange(vm, sends, control="CTL-IN") == {"REPLY-IN", "CTL-IN"}, \
        "an inbound echo-reply rule matches an unsolicited one; no rule, no ICMP error"
    strict = _start(net, c, "10.43.0.3", rules=[TCP_OUT_80, UDP_IN_5000],
                    SECURITY_GROUPS=str(SG), v6=False)
    sends = [(strict, "STRICT", icmp4(strict.mac, peer.mac, "10.43.0.3", "10.43.0.2", 0,
                                      "STRICT")),
             (strict, "STRICT-CTL", udp4(strict.mac, BROADCAST, "10.43.0.3",
                                         "255.255.255.255", 68, 67, "STRICT-CTL"))]
    assert exchange(peer, sends, control="STRICT-CTL") == {"STRICT-CTL"}, \
        "without a rule, an unsolicited reply stays in"


def test_dhcp_passes_the_groups_only_as_an_exchange_needs_it(net):
    a, b, g = net.vm_base, net.vm_base + 1, net.vm_base + 2
    vm = _start(net, a, "10.44.0.1", rules=[UDP_IN_5000, TCP_OUT_80], SECURITY_GROUPS=str(SG),
                GATEWAY="10.44.0.254", v6=False)
    peer = _start(net, b, "10.44.0.2", v6=False)
    gateway = _start(net, g, "10.44.0.254", v6=False)
    sends = [(peer, "ROGUE", udp4(peer.mac, vm.mac, "10.44.0.2", "10.44.0.1", 67, 68, "ROGUE")),
             (peer, "ROGUE-CTL", udp4(peer.mac, vm.mac, "10.44.0.2", "10.44.0.1", 4000, 5000,
                                      "ROGUE-CTL"))]
    assert exchange(vm, sends, control="ROGUE-CTL") == {"ROGUE-CTL"}, \
        "an offer from anyone is not let in"
    sends = [(gateway, "OFFER", udp4(gateway.mac, vm.mac, "10.44.0.254", "10.44.0.1", 67, 68,
                                     "OFFER"))]
    assert exchange(vm, sends, control="OFFER") == {"OFFER"}, "the gateway's is"
    sends = [(vm, "UNICAST-67", udp4(vm.mac, peer.mac, "10.44.0.1", "10.44.0.2", 68, 67,
                                     "UNICAST-67")),
             (vm, "DISCOVER", udp4(vm.mac, BROADCAST, "10.44.0.1", "255.255.255.255", 68, 67,
                                   "DISCOVER"))]
    assert exchange(peer, sends, control="DISCOVER") == {"DISCOVER"}, \
        "requests go to the broadcast address (or the gateway), not to anyone"


def test_anti_spoofing_lets_a_virtual_router_answer_dhcp(net):
    a, b = net.vm_base, net.vm_base + 1
    router = _start(net, a, "10.45.0.1", FILTER_IP_SPOOFING="YES", v6=False)
    client = _start(net, b, "10.45.0.2", v6=False)
    sends = [(router, "SPOOFED", udp4(router.mac, BROADCAST, "10.45.0.99", "255.255.255.255",
                                      67, 68, "SPOOFED")),
             (router, "ANSWER", udp4(router.mac, BROADCAST, "10.45.0.1", "255.255.255.255", 67,
                                     68, "ANSWER"))]
    assert exchange(client, sends, control="ANSWER") == {"ANSWER"}, \
        "its own address answers DHCP; a forged source is still dropped"


def _link_local(mac: str) -> str:
    from one_drivers.ovs.spec import _link_local as eui64

    return eui64(mac)
