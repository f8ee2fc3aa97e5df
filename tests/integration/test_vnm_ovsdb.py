"""The ovsdb VNM driver against the lab's real OVS (userspace datapath), with real traffic between
network namespaces plugged like VM NICs, through the installed remotes as OpenNebula runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from one_drivers.lab import netns
from one_drivers.lab.documents import vm_doc
from tests.helpers import last_line, run_remote

ICMP_IN = {"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND"}
ALL_OUT = {"PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND"}


def vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True, text=True,
                          check=True, timeout=20).stdout


def port_row(name: str) -> dict[str, object] | None:
    out = json.loads(vsctl("--format=json", "--if-exists", "--columns=name,tag,trunks,vlan_mode,"
                           "cvlans,other_config,external_ids,qos", "list", "Port", name))
    if not out["data"]:
        return None
    return dict(zip(out["headings"], out["data"][0], strict=True))


def flows_of(bridge: str, vm_id: int) -> list[str]:
    cookie = f"cookie=0x{(0x0ED0 << 48) | (vm_id << 16):x}/0xffffffffffff0000"
    out = subprocess.run(["ovs-ofctl", "dump-flows", "--no-stats", bridge, cookie],
                         capture_output=True, text=True, check=True, timeout=20).stdout
    return [line for line in out.splitlines() if "cookie=" in line]


class Net:
    """A bridge of its own per test and helpers to make VMs on it."""

    def __init__(self, remotes: Path) -> None:
        self.remotes = remotes / "vnm" / "ovsdb"
        self.bridge = f"ob{uuid.uuid4().hex[:8]}"
        self.vm_base = 7000 + int(uuid.uuid4().hex[:3], 16)
        self.plugged: list[str] = []

    def nic(self, vm: int, nic_id: int, ip: str, **attrs: object) -> dict[str, object]:
        return {"NIC_ID": nic_id, "NETWORK_ID": 3, "VN_MAD": "ovsdb", "BRIDGE": self.bridge,
                "MAC": self.mac(vm, nic_id), "IP": ip, "TARGET": f"one-{vm}-{nic_id}", **attrs}

    @staticmethod
    def mac(vm: int, nic_id: int) -> str:
        return f"02:00:{vm >> 8 & 0xff:02x}:{vm & 0xff:02x}:00:{nic_id:02x}"

    def run(self, action: str, doc: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return run_remote(self.remotes, action, list(argv), doc, timeout=120)

    def ok(self, action: str, doc: str, *argv: str) -> None:
        res = self.run(action, doc, *argv)
        assert res.returncode == 0, res.stderr

    def start(self, doc: str, nics: list[tuple[str, str, list[str]]], mtu: int | None = None
              ) -> list[netns.FakeNic]:
        """pre, the taps appear (as when libvirt starts the VM), post."""
        self.ok("pre", doc)
        fakes = [netns.plug(target, mac, addrs, mtu=mtu) for target, mac, addrs in nics]
        self.plugged += [f.target for f in fakes]
        self.ok("post", doc, "deploy-id", "node1")
        subprocess.run(["ovs-appctl", "revalidator/purge"], check=False, timeout=20)
        return fakes

    def stop(self, doc: str, targets: list[str]) -> None:
        for target in targets:
            netns.unplug(target)
        self.ok("clean", doc, "node1")

    def close(self) -> None:
        for target in self.plugged:
            netns.unplug(target)
        vsctl("--if-exists", "del-br", self.bridge)


@pytest.fixture
def net(lab_env, remotes):
    n = Net(remotes)
    yield n
    n.close()


def test_vlans_isolate_and_spoofed_traffic_is_dropped(net):
    a, b, c = net.vm_base, net.vm_base + 1, net.vm_base + 2
    filters = {"FILTER_MAC_SPOOFING": "YES", "FILTER_IP_SPOOFING": "YES"}
    docs = {vm: vm_doc(vm, [], nics=[net.nic(vm, 0, f"10.31.0.{i}", VLAN_ID=vlan, **filters)],
                       aliases=[{"NIC_ID": 5, "PARENT_ID": 0, "IP": f"10.31.0.{50 + i}"}])
            for i, (vm, vlan) in enumerate(((a, 10), (b, 10), (c, 11)), 1)}
    na, nb, _ = (net.start(docs[vm], [(f"one-{vm}-0", net.mac(vm, 0), [f"10.31.0.{i}/24"])])[0]
                  for i, vm in enumerate((a, b, c), 1))
    assert na.ping("10.31.0.2") and nb.ping("10.31.0.1"), "same VLAN must talk"
    assert not na.ping("10.31.0.3"), "different VLANs must not"
    port = port_row(f"one-{a}-0")
    assert port is not None and port["tag"] == 10 and port["vlan_mode"] == "access"
    assert ["one-drivers-vm", str(a)] in port["external_ids"][1]  # type: ignore[index]
    # IP spoofing: a second address the NIC does not own
    na.exec("ip", "addr", "add", "10.31.0.99/24", "dev", "eth0", "nodad", check=True)
    assert nb.exec("ping", "-c1", "-W1", "-I", "10.31.0.2", "10.31.0.99").returncode != 0
    assert na.exec("ping", "-c1", "-W1", "-I", "10.31.0.99", "10.31.0.2").returncode != 0
    assert na.ping("10.31.0.2"), "its own address still works"
    na.exec("ip", "addr", "add", "10.31.0.51/24", "dev", "eth0", "nodad", check=True)
    assert na.exec("ping", "-c1", "-W1", "-I", "10.31.0.51", "10.31.0.2").returncode == 0, \
        "a NIC_ALIAS address of the NIC is allowed on its port"
    # ARP spoofing: announcing b's address from a (gratuitous ARP) is dropped at a's port
    trace = subprocess.run(["ovs-appctl", "ofproto/trace", net.bridge,
                            f"in_port=one-{a}-0,arp,dl_src={net.mac(a, 0)},"
                            f"arp_sha={net.mac(a, 0)},arp_spa=10.31.0.2,arp_op=2"],
                           capture_output=True, text=True, check=True, timeout=20).stdout
    assert "drop" in trace.splitlines()[-1].lower(), trace
    # MAC spoofing: a changes its MAC and is cut off
    na.exec("ip", "link", "set", "eth0", "address", "02:00:00:00:99:99", check=True)
    na.exec("ip", "neigh", "flush", "all")
    nb.exec("ip", "neigh", "flush", "all")
    assert not na.ping("10.31.0.2")


def test_security_groups_allow_what_the_rules_say_and_replies(net):
    a, b = net.vm_base, net.vm_base + 1
    rules = [{"SECURITY_GROUP_ID": 100, **ICMP_IN}, {"SECURITY_GROUP_ID": 100, **ALL_OUT},
             {"SECURITY_GROUP_ID": 100, "PROTOCOL": "TCP", "RULE_TYPE": "INBOUND",
              "RANGE": "2200:2210", "IP": "10.32.0.0", "SIZE": 256}]
    doc_a = vm_doc(a, [], nics=[net.nic(a, 0, "10.32.0.1", SECURITY_GROUPS="100")],
                   sg_rules=rules)
    doc_b = vm_doc(b, [], nics=[net.nic(b, 0, "10.32.0.2")])
    (na,) = net.start(doc_a, [(f"one-{a}-0", net.mac(a, 0), ["10.32.0.1/24"])])
    (nb,) = net.start(doc_b, [(f"one-{b}-0", net.mac(b, 0), ["10.32.0.2/24"])])
    assert nb.ping("10.32.0.1"), "inbound ICMP is allowed"

    tcp = netns.tcp_connects

    assert tcp(nb, na, "10.32.0.1", 2205), "TCP in the allowed range from the allowed network"
    assert not tcp(nb, na, "10.32.0.1", 2211), "a port outside the range is blocked"
    assert tcp(na, nb, "10.32.0.2", 8080), "outbound is allowed, and so are its replies"
    # update_sg: ICMP no longer allowed in; the swap is one bundle
    doc_a2 = vm_doc(a, [], nics=[net.nic(a, 0, "10.32.0.1", SECURITY_GROUPS="100")],
                    sg_rules=rules[1:])
    net.ok("update_sg", doc_a2, "deploy-id")
    subprocess.run(["ovs-appctl", "revalidator/purge"], check=False, timeout=20)
    assert not nb.ping("10.32.0.1")
    assert tcp(nb, na, "10.32.0.1", 2200)


def test_trunks_qinq_mtu_and_qos(net):
    a, b = net.vm_base, net.vm_base + 1
    doc = vm_doc(a, [], nics=[
        net.nic(a, 0, "10.33.0.1", VLAN_TAGGED_ID="20,30-32", VLAN_ID=5),
        net.nic(a, 1, "10.33.1.1", VLAN_ID=40, CVLANS="100-101", QINQ_TYPE="802.1ad"),
        net.nic(a, 2, "10.33.2.1", VLAN_ID=60, MTU=9000, INBOUND_AVG_BW=1000,
                OUTBOUND_AVG_BW=500, OUTBOUND_PEAK_KB=64)])
    doc_b = vm_doc(b, [], nics=[net.nic(b, 0, "10.33.2.2", VLAN_ID=60, MTU=9000)])
    fakes = net.start(doc, [(f"one-{a}-{i}", net.mac(a, i), [f"10.33.{i}.1/24"])
                            for i in range(3)], mtu=9000)
    net.start(doc_b, [(f"one-{b}-0", net.mac(b, 0), ["10.33.2.2/24"])], mtu=9000)
    trunk, qinq = port_row(f"one-{a}-0"), port_row(f"one-{a}-1")
    assert trunk is not None and trunk["vlan_mode"] == "native-untagged"
    assert trunk["trunks"] == ["set", [20, 30, 31, 32]] and trunk["tag"] == 5
    assert qinq is not None and qinq["vlan_mode"] == "dot1q-tunnel" and qinq["tag"] == 40
    assert ["qinq-ethtype", "802.1ad"] in qinq["other_config"][1]  # type: ignore[index]
    assert vsctl("get", "Open_vSwitch", ".", "other_config:vlan-limit").strip() == '"2"'
    # the switch's own view of a frame: tagged 31 from the trunk goes out untouched; QinQ
    # pushes an 802.1ad service tag 40 over the customer's 100
    out = subprocess.run(["ovs-appctl", "ofproto/trace", net.bridge,
                          f"in_port=one-{a}-1,dl_vlan=100,dl_src={net.mac(a, 1)},"
                          "dl_dst=ff:ff:ff:ff:ff:ff"], capture_output=True, text=True,
                         check=True, timeout=20).stdout
    assert "push_vlan(tpid=0x88a8,vid=40" in out, out
    out = subprocess.run(["ovs-appctl", "ofproto/trace", net.bridge,
                          f"in_port=one-{a}-0,dl_vlan=33,dl_src={net.mac(a, 0)}"],
                         capture_output=True, text=True, check=True, timeout=20).stdout
    assert "disallowed VLAN VID" in out or "drop" in out.splitlines()[-1].lower(), out
    # MTU 9000 holds end to end (no fragmentation allowed)
    assert fakes[2].ping("10.33.2.2", size=8972, dont_fragment=True)
    mtu = vsctl("get", "Interface", f"one-{a}-2", "mtu_request").strip()
    assert mtu == "9000"
    assert vsctl("get", "Interface", f"one-{a}-2", "ingress_policing_rate").strip() == "4000"
    qos = port_row(f"one-{a}-2")
    assert qos is not None and qos["qos"] != ["set", []]
    tc = subprocess.run(["tc", "class", "show", "dev", f"one-{a}-2"], capture_output=True,
                        text=True, check=False, timeout=20).stdout
    assert "htb" in tc and "8Mbit" in tc, tc
    # update_nic: the network's VLAN and MTU change live (OpenNebula/one#6698)
    changed = vm_doc(b, [], nics=[net.nic(b, 0, "10.33.2.2", VLAN_ID=60, MTU=9000)],
                     extra="<VNET_UPDATE><VLAN_ID>61</VLAN_ID><MTU>1500</MTU></VNET_UPDATE>")
    net.ok("update_nic", changed, "deploy-id", "3")
    row = port_row(f"one-{b}-0")
    assert row is not None and row["tag"] == 61
    assert vsctl("get", "Interface", f"one-{b}-0", "mtu_request").strip() == "1500"
    subprocess.run(["ovs-appctl", "revalidator/purge"], check=False, timeout=20)
    assert not fakes[2].ping("10.33.2.2"), "VLAN 60 and 61 are apart now"


def test_clean_removes_exactly_the_vm_and_keeps_running_ports(net):
    a, b = net.vm_base, net.vm_base + 1
    doc_a = vm_doc(a, [], nics=[net.nic(a, 0, "10.34.0.1", VLAN_ID=7, FILTER_IP_SPOOFING="YES"),
                                net.nic(a, 1, "10.34.0.11", VLAN_ID=7, FILTER_IP_SPOOFING="YES")])
    doc_b = vm_doc(b, [], nics=[net.nic(b, 0, "10.34.0.2", VLAN_ID=7)])
    net.start(doc_a, [(f"one-{a}-{i}", net.mac(a, i), [f"10.34.0.{1 + 10 * i}/24"])
                      for i in range(2)])
    (nb,) = net.start(doc_b, [(f"one-{b}-0", net.mac(b, 0), ["10.34.0.2/24"])])
    assert flows_of(net.bridge, a) and flows_of(net.bridge, b)
    assert nb.ping("10.34.0.1") and nb.ping("10.34.0.11"), "IP filters on two NICs, one network"
    # an operator's port and flow on the same bridge are never ours to remove
    vsctl("add-port", net.bridge, "op-port", "--", "set", "Interface", "op-port",
          "type=internal")
    subprocess.run(["ovs-ofctl", "add-flow", net.bridge,
                    "table=99,priority=5,cookie=0x1234,actions=drop"], check=True, timeout=20)
    # clean while the taps still exist (same-host migration, OpenNebula/one#7947): nothing goes
    net.ok("clean", doc_a, "node1")
    assert port_row(f"one-{a}-0") is not None and flows_of(net.bridge, a)
    # hot-unplug of NIC 1 only
    detach = vm_doc(a, [], nics=[net.nic(a, 0, "10.34.0.1", VLAN_ID=7),
                                 net.nic(a, 1, "10.34.0.11", VLAN_ID=7, ATTACH="YES")])
    netns.unplug(f"one-{a}-1")
    net.ok("clean", detach, "node1")
    assert port_row(f"one-{a}-1") is None and port_row(f"one-{a}-0") is not None
    assert not any(f"in_port={a}" in f for f in flows_of(net.bridge, a))
    net.stop(doc_a, [f"one-{a}-0"])
    assert port_row(f"one-{a}-0") is None and not flows_of(net.bridge, a)
    assert port_row(f"one-{b}-0") is not None and flows_of(net.bridge, b), "b untouched"
    net.ok("clean", doc_a, "node1")  # again: the ports are already gone
    net.stop(doc_b, [f"one-{b}-0"])
    assert nb.target not in vsctl("--columns=name", "list", "Port")
    assert net.bridge in vsctl("list-br").split(), "the operator's port keeps the bridge"
    assert port_row("op-port") is not None
    assert "cookie=0x1234" in subprocess.run(["ovs-ofctl", "dump-flows", net.bridge, "table=99"],
                                             capture_output=True, text=True, check=True,
                                             timeout=20).stdout
    vsctl("del-port", "op-port")
    net.ok("clean", doc_b, "node1")  # a later clean finds the bridge empty: it goes
    assert net.bridge not in vsctl("list-br").split(), "the empty bridge we made is gone"


@pytest.mark.parametrize(("attrs", "rules", "message"), [
    ({"VLAN_ID": 5000}, [], "VLAN_ID=5000 is out of range"),
    ({"VLAN_TAGGED_ID": "10,40-30"}, [], "range '40-30' runs backwards"),
    ({"SECURITY_GROUPS": "100"}, [{"SECURITY_GROUP_ID": 100, "PROTOCOL": "TCP",
                                   "RULE_TYPE": "INBOUND", "IP": "10.0.0.300", "SIZE": 4}],
     "IP='10.0.0.300' is not an IP address"),
    ({"MAC": "zz:00"}, [], "is not a MAC address"),
])
def test_bad_nic_attributes_change_nothing(net, attrs, rules, message):
    vm = net.vm_base
    good = net.nic(vm, 0, "10.35.0.1", VLAN_ID=9)
    doc = vm_doc(vm, [], nics=[good, net.nic(vm, 1, "10.35.0.2", **attrs)], sg_rules=rules)
    for action, argv in (("pre", []), ("post", ["deploy-id", "node1"])):
        res = net.run(action, doc, *argv)
        assert res.returncode == 3, res.stderr
        assert message in last_line(res.stderr) and f"VM {vm}" in last_line(res.stderr)
    assert net.bridge not in vsctl("list-br").split()
    assert port_row(f"one-{vm}-0") is None


def test_twenty_vms_start_and_stop_at_once_on_one_bridge(net):
    vms = [net.vm_base + i for i in range(20)]
    docs = {vm: vm_doc(vm, [], nics=[net.nic(vm, 0, f"10.36.0.{i + 1}", VLAN_ID=12,
                                             FILTER_IP_SPOOFING="YES", SECURITY_GROUPS="0")],
                       sg_rules=[{"SECURITY_GROUP_ID": 0, **ICMP_IN},
                                 {"SECURITY_GROUP_ID": 0, **ALL_OUT}])
            for i, vm in enumerate(vms)}
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda vm: net.run("pre", docs[vm]), vms))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    fakes = [netns.plug(f"one-{vm}-0", net.mac(vm, 0), [f"10.36.0.{i + 1}/24"])
             for i, vm in enumerate(vms)]
    net.plugged += [f.target for f in fakes]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda vm: net.run("post", docs[vm], "id", "node1"), vms))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    # OpenFlow port numbers are per bridge: only this test's ports count
    ofports = [vsctl("get", "Interface", f"one-{vm}-0", "ofport").strip() for vm in vms]
    zones = [port_row(f"one-{vm}-0")["external_ids"] for vm in vms]  # type: ignore[index]
    assert len({dict(z[1])["one-drivers-zone"] for z in zones}) == 20, "zones are unique"
    assert len([p for p in ofports if p.isdigit()]) == len(set(p for p in ofports if p.isdigit()))
    assert fakes[0].ping("10.36.0.20") and fakes[19].ping("10.36.0.1")
    for f in fakes:
        netns.unplug(f.target)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda vm: net.run("clean", docs[vm], "node1"), vms))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert net.bridge not in vsctl("list-br").split()
    assert not any(port_row(f"one-{vm}-0") for vm in vms)


def test_ovs_restart_then_reconcile_brings_rules_back(net, lab_env):
    from one_drivers.lab.ovs import OvsLab

    a, b, gone = net.vm_base, net.vm_base + 1, net.vm_base + 2
    rules = [{"SECURITY_GROUP_ID": 5, **ICMP_IN}, {"SECURITY_GROUP_ID": 5, **ALL_OUT}]
    docs = {vm: vm_doc(vm, [], nics=[net.nic(vm, 0, f"10.37.0.{i}", VLAN_ID=14,
                                             FILTER_IP_SPOOFING="YES", SECURITY_GROUPS="5")],
                       sg_rules=rules) for i, vm in enumerate((a, b, gone), 1)}
    fakes = {vm: net.start(docs[vm], [(f"one-{vm}-0", net.mac(vm, 0), [f"10.37.0.{i}/24"])])[0]
             for i, vm in enumerate((a, b, gone), 1)}
    before = sorted(f.split(" ", 1)[1] for f in flows_of(net.bridge, a))
    netns.unplug(f"one-{gone}-0")  # this VM dies while OVS is down: nobody runs its clean
    OvsLab(Path(lab_env["ONE_DRIVERS_LAB_DIR"])).restart()
    assert not flows_of(net.bridge, a), "a restarted vswitchd has lost every flow"
    env = {**os.environ, **lab_env}
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "one-drivers"),
                          "ovs", "reconcile", "--grace", "0"], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "re-applied 2 NICs of 2 running VMs" in res.stdout, res.stdout
    assert sorted(f.split(" ", 1)[1] for f in flows_of(net.bridge, a)) == before
    assert port_row(f"one-{gone}-0") is None and not flows_of(net.bridge, gone)
    subprocess.run(["ovs-appctl", "revalidator/purge"], check=False, timeout=20)
    assert fakes[a].ping("10.37.0.2") and fakes[b].ping("10.37.0.1")
    fakes[a].exec("ip", "addr", "add", "10.37.0.9/24", "dev", "eth0", "nodad", check=True)
    spoof = fakes[a].exec("ping", "-c1", "-W1", "-I", "10.37.0.9", "10.37.0.2")
    assert spoof.returncode != 0, "anti-spoofing is back too"


def test_what_a_guest_shut_down_from_inside_left_is_removed_by_the_timer(net, lab_env):
    """Terminate from POWEROFF (the guest shut itself down: libvirt took its tap away, no
    `clean` ran) left the VM's flows, its bridge and its state. The reconcile timer removes them
    once the state is older than the grace; a VM whose taps do not exist yet because it is
    being deployed (`pre` ran moments ago) keeps everything."""
    vm, other = net.vm_base, net.vm_base + 1
    doc = vm_doc(vm, [], nics=[net.nic(vm, 0, "10.39.0.1", VLAN_ID=15, FILTER_IP_SPOOFING="YES")])
    net.start(doc, [(f"one-{vm}-0", net.mac(vm, 0), ["10.39.0.1/24"])])
    state = Path(lab_env["ONE_DRIVERS_VNM_STATE_DIR"]) / f"vm-{vm}.xml"
    assert state.exists() and flows_of(net.bridge, vm) and port_row(f"one-{vm}-0") is not None
    netns.unplug(f"one-{vm}-0")  # the guest powered off: its tap is gone

    def reconcile() -> str:
        res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "one-drivers"),
                              "ovs", "reconcile"], capture_output=True, text=True,
                             env={**os.environ, **lab_env}, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout

    reconcile()  # within the grace: it may be a VM being deployed
    assert state.exists() and flows_of(net.bridge, vm), "kept within the grace"
    past = time.time() - 3600
    os.utime(state, (past, past))  # the timer's next run, an hour later
    reconcile()
    assert not state.exists() and port_row(f"one-{vm}-0") is None
    # the bridge we made went with its last VM, and every flow with it
    assert net.bridge not in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                            text=True, check=True, timeout=20).stdout.split()
    # positive control for "kept": the same VM being deployed again (pre only, no tap yet)
    net.ok("pre", vm_doc(other, [], nics=[net.nic(other, 0, "10.39.0.2", VLAN_ID=15)]))
    reconcile()
    assert (Path(lab_env["ONE_DRIVERS_VNM_STATE_DIR"]) / f"vm-{other}.xml").exists()


def test_hooks_run_after_the_action_with_its_argv(net, tmp_path):
    vm = net.vm_base
    hook_dir = net.remotes / "post.d"
    hook_dir.mkdir(exist_ok=True)
    out = tmp_path / "hook.out"
    hook = hook_dir / "10-record"
    hook.write_text(f"#!/bin/sh\necho \"$@\" > {out}\nwc -c >> {out}\n")
    hook.chmod(0o755)
    try:
        doc = vm_doc(vm, [], nics=[net.nic(vm, 0, "10.38.0.1", VLAN_ID=3)])
        net.start(doc, [(f"one-{vm}-0", net.mac(vm, 0), ["10.38.0.1/24"])])
        lines = out.read_text().split()
        assert lines[:2] == ["deploy-id", "node1"] and int(lines[2]) > 100
        hook.write_text("#!/bin/sh\necho refused >&2\nexit 4\n")
        res = net.run("post", doc, "deploy-id", "node1")
        assert res.returncode == 1 and "post hook 10-record failed (exit 4): refused" in res.stderr
    finally:
        hook.unlink()


def test_phydev_bridge_conf_and_a_phydev_swap(net):
    vm = net.vm_base
    for dev in ("up1", "up2"):
        netns.plug(f"{dev}-{vm % 1000}", "02:00:00:00:fe:01", [])
        net.plugged.append(f"{dev}-{vm % 1000}")
    up1, up2 = f"up1-{vm % 1000}", f"up2-{vm % 1000}"
    conf = "mcast_snooping_enable=true,other_config:mac-aging-time=600"
    doc = vm_doc(vm, [], nics=[net.nic(vm, 0, "10.39.0.1", VLAN_ID=8, PHYDEV=up1,
                                       OVS_BRIDGE_CONF=conf)])
    net.start(doc, [(f"one-{vm}-0", net.mac(vm, 0), ["10.39.0.1/24"])])
    ports = vsctl("list-ports", net.bridge).split()
    assert up1 in ports and f"one-{vm}-0" in ports
    assert vsctl("get", "Bridge", net.bridge, "mcast_snooping_enable").strip() == "true"
    assert vsctl("get", "Bridge", net.bridge, "other_config:mac-aging-time").strip() == '"600"'
    assert vsctl("get", "Bridge", net.bridge, "datapath_type").strip() == "netdev"
    swap = vm_doc(vm, [], nics=[net.nic(vm, 0, "10.39.0.1", VLAN_ID=8, PHYDEV=up1)],
                  extra=f"<VNET_UPDATE><PHYDEV>{up2}</PHYDEV></VNET_UPDATE>")
    net.ok("update_nic", swap, "deploy-id", "3")
    ports = vsctl("list-ports", net.bridge).split()
    assert up2 in ports and up1 not in ports, "the old uplink goes: no loop through two"
    net.stop(doc, [f"one-{vm}-0"])
    assert net.bridge not in vsctl("list-br").split(), "only our uplink was left: bridge gone"


def test_removing_an_empty_bridge_never_races_a_starting_vm(net):
    """clean of the bridge's last VM and pre of a new one, at the same time, many times: the
    bridge either goes and comes back or stays; the new VM's port is always there."""
    for round_ in range(8):
        old, new = net.vm_base + 2 * round_, net.vm_base + 2 * round_ + 1
        doc_old = vm_doc(old, [], nics=[net.nic(old, 0, "10.40.0.1", VLAN_ID=2)])
        doc_new = vm_doc(new, [], nics=[net.nic(new, 0, "10.40.0.2", VLAN_ID=2)])
        net.ok("pre", doc_old)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda job: net.run(*job),
                                    [("clean", doc_old, "node1"), ("pre", doc_new)]))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        assert f"one-{new}-0" in vsctl("list-ports", net.bridge).split()
        assert port_row(f"one-{old}-0") is None
        net.ok("clean", doc_new, "node1")
        assert net.bridge not in vsctl("list-br").split()


def test_pre_configures_the_port_before_libvirt_plugs_the_guest(net, lab_env, tmp_path):
    """The window upstream leaves open (a tap on the bridge untagged and unfiltered until post):
    here libvirt finds the port ready, keeps it (``--may-exist``), and the guest's tap gets the
    OpenFlow port number the flows were written for."""
    import libvirt

    vm = net.vm_base
    target, mac = f"one-{vm}-0", net.mac(vm, 0)
    doc = vm_doc(vm, [], nics=[net.nic(vm, 0, "10.41.0.1", VLAN_ID=23, FILTER_MAC_SPOOFING="YES",
                                       FILTER_IP_SPOOFING="YES")])
    net.ok("pre", doc)
    requested = vsctl("get", "Interface", target, "ofport_request").strip()
    assert any(f"in_port={requested}" in f for f in flows_of(net.bridge, vm))
    console = tmp_path / "console.log"
    xml = f"""<domain type='qemu'><name>vnm-{vm}</name><memory unit='MiB'>192</memory>
      <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type>
        <kernel>{lab_env['ONE_LAB_GUEST_KERNEL']}</kernel>
        <initrd>{lab_env['ONE_LAB_GUEST_INITRD']}</initrd>
        <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
      <devices><serial type='file'><source path='{console}'/><target port='0'/></serial>
        <interface type='bridge'><source bridge='{net.bridge}'/><mac address='{mac}'/>
          <virtualport type='openvswitch'/><target dev='{target}'/><model type='virtio'/>
        </interface></devices></domain>"""
    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        dom = conn.createXML(xml, 0)
        try:
            port = port_row(target)
            assert port is not None and port["tag"] == 23 and port["vlan_mode"] == "access"
            assert vsctl("get", "Interface", target, "ofport").strip() == requested
            assert ["one-drivers-vm", str(vm)] in port["external_ids"][1]  # type: ignore[index]
            net.ok("post", doc, dom.UUIDString(), "node1")
            assert vsctl("get", "Interface", target, "ofport").strip() == requested
        finally:
            dom.destroy()
    finally:
        conn.close()
    assert port_row(target) is None, "libvirt removed the port with the domain"
    net.ok("clean", doc, "node1")
    assert net.bridge not in vsctl("list-br").split(), "flows and the emptied bridge went"


_SEND = ("import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind(('eth0',0));"
         "src=bytes.fromhex(sys.argv[1].replace(':',''));"
         "[s.send(b'\\xff'*6+src+b'\\x81\\x00'+int(v).to_bytes(2,'big')+b'\\x88\\xb5'+b'x'*46)"
         " for v in sys.argv[2:]]")


def test_trunk_and_qinq_frames_carry_the_right_tags_on_the_wire(net):
    """Tagged frames sent by guests, captured on the uplink (PHYDEV): a trunk passes its VLANs
    untouched and drops others; QinQ pushes the 802.1ad service tag over the customer's."""
    vm = net.vm_base
    uplink = netns.plug(f"upl-{vm % 1000}", "02:00:00:00:fe:02", [])
    net.plugged.append(uplink.target)
    doc = vm_doc(vm, [], nics=[
        net.nic(vm, 0, "10.42.0.1", VLAN_TAGGED_ID="30-31", PHYDEV=uplink.target),
        net.nic(vm, 1, "10.42.1.1", VLAN_ID=40, CVLANS="100", QINQ_TYPE="802.1ad",
                PHYDEV=uplink.target)])
    trunk, qinq = net.start(doc, [(f"one-{vm}-{i}", net.mac(vm, i), []) for i in range(2)])
    capture = subprocess.Popen(["ip", "netns", "exec", uplink.netns, "tcpdump", "-l", "-n", "-e",
                                "--immediate-mode", "-i", "eth0", "ether", "proto", "0x88b5",
                                "or", "vlan"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert capture.stderr is not None and capture.stdout is not None
        while "listening on" not in (line := capture.stderr.readline()):  # capturing now
            assert line, "tcpdump ended before it captured anything"
        # VLAN 33 first, then 30 on the same path: when 30 is seen, 33 would have been
        trunk.exec("python3", "-c", _SEND, trunk.mac, "31", "33", "30", check=True)
        qinq.exec("python3", "-c", _SEND, qinq.mac, "100", check=True)
        for line in capture.stdout:
            seen.append(line)
            if any(qinq.mac in ln for ln in seen) and any(
                    trunk.mac in ln and "vlan 30" in ln for ln in seen):
                break
    finally:
        capture.kill()
        capture.wait()
    from_trunk = [ln for ln in seen if trunk.mac in ln]
    from_qinq = [ln for ln in seen if qinq.mac in ln]
    assert any("vlan 31" in ln for ln in from_trunk), seen
    assert not any("vlan 33" in ln for ln in from_trunk), "VLAN 33 is not in the trunk"
    assert any("0x88a8" in ln and "vlan 40" in ln and "vlan 100" in ln for ln in from_qinq), seen
