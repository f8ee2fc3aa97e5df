"""VNM ovsdb against upstream's ovs-vsctl / ovs-ofctl sequence, on the lab's OVS (issue 4).

Upstream's sudo, Ruby start-up, ``virsh dumpxml`` and ssh are not counted, and it gets no security
groups to install (it has none), so the baseline flatters upstream.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import compare, report, time_argv
from one_drivers.core.remotes import install
from one_drivers.lab import netns
from one_drivers.lab.documents import vm_doc
from one_drivers.lab.lab import Lab
from one_drivers.lab.ovs import OvsLab

BRIDGE = "obbench"
VM = 9100
NICS = 8


def _nic(vm: int, i: int, **extra: object) -> dict[str, object]:
    return {"NIC_ID": i, "NETWORK_ID": 1, "VN_MAD": "ovsdb", "BRIDGE": BRIDGE,
            "MAC": f"02:00:{vm >> 8 & 0xff:02x}:{vm & 0xff:02x}:00:{i:02x}",
            "IP": f"10.50.{i}.{vm % 250 + 1}", "TARGET": f"one-{vm}-{i}", **extra}


def upstream_post(nics: list[dict[str, object]]) -> list[list[str]]:
    """The OVS commands upstream's ovswitch ``post`` runs for these NICs (OpenvSwitch.rb)."""
    cmds = [["ovs-vsctl", "list-br"], ["ovs-vsctl", "list-ports", BRIDGE]]
    for nic in nics:
        tap, mac, ip = str(nic["TARGET"]), str(nic["MAC"]), str(nic["IP"])
        cmds += [["ovs-vsctl", "set", "Port", tap, f"tag={nic['VLAN_ID']}"],
                 ["ovs-ofctl", "dump-ports", BRIDGE, tap]]
        port = f"in_port={tap}"
        flows = [f"table=0,priority=100,{port},actions=note:00,resubmit(,10)",
                 f"table=10,priority=100,{port},actions=resubmit(,20)",
                 f"table=20,priority=100,{port},actions=normal",
                 f"table=10,priority=50000,{port},dl_src={mac},actions=resubmit(,20)",
                 f"table=10,priority=45000,{port},arp,dl_src={mac},actions=resubmit(,20)",
                 f"table=10,priority=40000,{port},actions=drop",
                 f"table=20,priority=50000,{port},arp,nw_src={ip},actions=normal",
                 f"table=20,priority=49000,{port},arp,actions=drop",
                 f"table=20,priority=45000,{port},ip,nw_src={ip},actions=normal",
                 f"table=20,priority=44000,{port},udp,nw_src=0.0.0.0,tp_src=68,"
                 "nw_dst=255.255.255.255,tp_dst=67,actions=normal",
                 f"table=20,priority=45000,{port},ipv6,ipv6_src=fe80::1,actions=normal",
                 f"table=20,priority=44000,{port},icmp6,ipv6_src=::,icmp_type=133,actions=normal",
                 f"table=20,priority=44000,{port},icmp6,ipv6_src=::,icmp_type=135,actions=normal",
                 f"table=20,priority=40000,{port},ip,actions=drop",
                 f"table=20,priority=40000,{port},ipv6,actions=drop"]
        cmds.append(["ovs-ofctl", "del-flows", BRIDGE, port])
        cmds += [["ovs-ofctl", "add-flow", BRIDGE, f] for f in flows]
    return cmds


def bench_post(remotes: Path, runs: int) -> float:
    rules = [{"SECURITY_GROUP_ID": 7, "PROTOCOL": p, "RULE_TYPE": t, **extra}
             for p, t, extra in (("TCP", "INBOUND", {"RANGE": "22,80,443,8000:8100"}),
                                 ("UDP", "INBOUND", {"RANGE": "53"}),
                                 ("ICMP", "INBOUND", {}), ("ICMPV6", "INBOUND", {}),
                                 ("TCP", "INBOUND", {"RANGE": "5432", "IP": "10.0.0.0",
                                                     "SIZE": 256}),
                                 ("UDP", "INBOUND", {"RANGE": "1000:2000",
                                                     "IP": "192.168.0.0", "SIZE": 1024}),
                                 ("IPSEC", "INBOUND", {}), ("ALL", "OUTBOUND", {}),
                                 ("TCP", "OUTBOUND", {"RANGE": "1:1024"}),
                                 ("UDP", "OUTBOUND", {"RANGE": "123"}))]
    nics = [_nic(VM, i, VLAN_ID=100 + i, FILTER_MAC_SPOOFING="YES", FILTER_IP_SPOOFING="YES",
                 SECURITY_GROUPS="7") for i in range(NICS)]
    doc = base64.b64encode(vm_doc(VM, [], nics=nics, sg_rules=rules).encode())
    post = [str(remotes / "vnm" / "ovsdb" / "post"), "deploy-id", "node1"]
    time_argv([str(remotes / "vnm" / "ovsdb" / "pre")], doc)
    for nic in nics:
        netns.plug(str(nic["TARGET"]), str(nic["MAC"]), [f"{nic['IP']}/24"])
    try:
        theirs = upstream_post(nics)

        def upstream() -> float:
            t = time.perf_counter()
            for argv in theirs:
                subprocess.run(argv, capture_output=True, check=True)
            return time.perf_counter() - t

        ours, base = compare(lambda: time_argv(post, doc), upstream, runs)
        flows = subprocess.run(["ovs-ofctl", "dump-flows", BRIDGE, "cookie=0x0ed0000000000000/"
                                "0xffff000000000000"], capture_output=True, text=True,
                               check=True).stdout.count("cookie=")
        report(f"VNM post, VM with {NICS} NICs, anti-spoofing, 10 SG rules ({runs} runs each)",
               f"vnm/ovsdb/post (1 OVSDB txn, 1 bundle of {flows} flows incl. SG)", ours,
               f"upstream's {len(theirs)} ovs-vsctl/ovs-ofctl calls (no SG)", base)
        print(f"  ratio {base / ours:.1f}x (target >= 5x)")
        return base / ours
    finally:
        for nic in nics:
            netns.unplug(str(nic["TARGET"]))
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE], check=False)


def bench_reconcile(env: dict[str, str], work: Path, vms: int = 100) -> float:
    """Reconcile of a host with ``vms`` VMs x 2 NICs: from nothing, then after a restart."""
    state = work / "vnm-state"
    state.mkdir(mode=0o700)  # the driver keeps its state only in a private directory
    os.environ["ONE_DRIVERS_VNM_STATE_DIR"] = str(state)
    targets = []
    for vm in range(VM + 1, VM + 1 + vms):
        nics = [_nic(vm, i, VLAN_ID=200, FILTER_IP_SPOOFING="YES", SECURITY_GROUPS="0")
                for i in range(2)]
        rules = [{"SECURITY_GROUP_ID": 0, "PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND"},
                 {"SECURITY_GROUP_ID": 0, "PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND"}]
        (state / f"vm-{vm}.xml").write_text(vm_doc(vm, [], nics=nics, sg_rules=rules))
        for nic in nics:
            targets.append(str(nic["TARGET"]))
            subprocess.run(["ip", "link", "add", str(nic["TARGET"]), "type", "veth", "peer",
                            "name", f"p{len(targets)}"], check=True)
    cli = [str(Path(sys.executable).parent / "one-drivers"), "ovs", "reconcile"]
    try:
        first = time_argv(cli)
        OvsLab(Path(env["ONE_DRIVERS_LAB_DIR"])).restart()
        again = time_argv(cli)
        print(f"\nVNM reconcile, {vms} VMs x 2 NICs with anti-spoofing and security groups")
        print(f"  from an empty bridge (creates {len(targets)} ports)  {first:8.2f} s")
        print(f"  after restarting ovsdb-server and ovs-vswitchd     {again:8.2f} s")
        return again
    finally:
        for t in targets:
            subprocess.run(["ip", "link", "del", t], check=False)
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE], check=False)
        del os.environ["ONE_DRIVERS_VNM_STATE_DIR"]


def main() -> dict[str, float]:
    env = Lab().env()
    os.environ.update(env)
    with tempfile.TemporaryDirectory(prefix="one-drivers-bench-", dir="/var/tmp") as tmp:
        remotes = Path(tmp) / "remotes"
        install(remotes, python=sys.executable)
        return {"vnm_post_vs_cli": bench_post(remotes, runs=5),
                "vnm_reconcile_200_nics_s": bench_reconcile(env, Path(tmp))}


if __name__ == "__main__":
    main()
