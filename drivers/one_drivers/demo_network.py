"""The network part of ``one-drivers demo``: the demo VM's NIC on a VLAN with anti-spoofing and a
security group, through the ``ovsdb`` VNM shims, with a network namespace in place of the guest."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

from one_drivers.lab import netns
from one_drivers.lab.documents import vm_doc

BRIDGE = "onebr-demo"
RULES = [{"SECURITY_GROUP_ID": 100, "SECURITY_GROUP_NAME": "web", "PROTOCOL": "TCP",
          "RULE_TYPE": "INBOUND", "RANGE": "22,80"},
         {"SECURITY_GROUP_ID": 100, "PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND"},
         {"SECURITY_GROUP_ID": 100, "PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND"}]


def _nic(vm: int, ip: str, **extra: str) -> dict[str, object]:
    return {"NIC_ID": 0, "NETWORK_ID": 7, "NETWORK": "demo-vlan42", "VN_MAD": "ovsdb",
            "BRIDGE": BRIDGE, "VLAN_ID": 42, "MAC": f"02:00:c0:00:02:{vm % 256:02x}", "IP": ip,
            "TARGET": f"one-{vm}-0", **extra}


def _shim(remotes: Path, action: str, argv: list[str], doc: str) -> None:
    t = time.monotonic()
    proc = subprocess.run([str(remotes / "vnm" / "ovsdb" / action), *argv],
                          input=base64.b64encode(doc.encode()), capture_output=True, timeout=120,
                          check=False)
    print(f"\n$ vnm/ovsdb/{action} {' '.join(argv)} <<< base64(VM)   "
          f"(exit {proc.returncode}, {(time.monotonic() - t) * 1000:.0f} ms)")
    for line in proc.stderr.decode().strip().splitlines():
        print(f"  {line}")
    if proc.returncode != 0:
        raise SystemExit("demo step failed")


def vm_network(remotes: Path) -> None:
    vm, peer = 4244, 4245
    doc = vm_doc(vm, [], nics=[_nic(vm, "192.0.2.10", FILTER_MAC_SPOOFING="YES",
                                    FILTER_IP_SPOOFING="YES", SECURITY_GROUPS="100")],
                 sg_rules=RULES)
    peer_doc = vm_doc(peer, [], nics=[_nic(peer, "192.0.2.11")])
    print(f"\n== VM {vm}'s NIC: VLAN 42, anti-spoofing, security group 'web' "
          "(TCP 22,80 + ICMP in, all out); a namespace plays the guest")
    _shim(remotes, "pre", [], doc)
    _shim(remotes, "pre", [], peer_doc)
    guest = netns.plug(f"one-{vm}-0", f"02:00:c0:00:02:{vm % 256:02x}", ["192.0.2.10/24"])
    other = netns.plug(f"one-{peer}-0", f"02:00:c0:00:02:{peer % 256:02x}", ["192.0.2.11/24"])
    try:
        _shim(remotes, "post", ["demo-deploy-id", "node1"], doc)
        _shim(remotes, "post", ["peer-deploy-id", "node1"], peer_doc)
        row = subprocess.run(["ovs-vsctl", "--columns=name,tag,vlan_mode,external_ids", "list",
                              "Port", f"one-{vm}-0"], capture_output=True, text=True, check=True,
                             timeout=20).stdout
        print("\n$ ovs-vsctl list Port one-4244-0\n  " + row.strip().replace("\n", "\n  "))
        cookie = f"cookie=0x{(0x0ED0 << 48) | (vm << 16):x}/0xffffffffffff0000"
        flows = subprocess.run(["ovs-ofctl", "dump-flows", "--no-stats", BRIDGE, cookie],
                               capture_output=True, text=True, check=True, timeout=20).stdout
        lines = [ln.strip() for ln in flows.splitlines() if "cookie=" in ln]
        print(f"\n$ ovs-ofctl dump-flows {BRIDGE} {cookie}   # {len(lines)} flows, a few:")
        for line in lines[:3] + [ln for ln in lines if "ct(commit" in ln][:3]:
            print(f"  {line}")
        subprocess.run(["ovs-appctl", "revalidator/purge"], check=False, timeout=20)
        print("\n  peer -> VM ping:", "answered" if other.ping("192.0.2.10") else "no answer")
        print("  peer -> VM tcp/22:", "connected" if netns.tcp_connects(
            other, guest, "192.0.2.10", 22) else "blocked")
        print("  peer -> VM tcp/23:", "connected" if netns.tcp_connects(
            other, guest, "192.0.2.10", 23) else "blocked (no rule allows it)")
        guest.exec("ip", "addr", "add", "192.0.2.99/24", "dev", "eth0", "nodad")
        spoofed = guest.exec("ping", "-c1", "-W1", "-I", "192.0.2.99", "192.0.2.11")
        print("  VM pings from an address it does not own:",
              "answered" if spoofed.returncode == 0 else "dropped at its port")
    finally:
        netns.unplug(guest.target)
        netns.unplug(other.target)
    _shim(remotes, "clean", ["node1"], doc)
    _shim(remotes, "clean", ["node1"], peer_doc)
    left = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, check=True,
                          timeout=20).stdout.split()
    print(f"  bridge {BRIDGE} after the last clean: {'kept' if BRIDGE in left else 'removed'}")
