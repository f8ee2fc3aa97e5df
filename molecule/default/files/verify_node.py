"""Hypervisor verify: VNM pre, post and clean of the installed ovsdb driver, run as oneadmin,
create a real Open vSwitch port (a veth in a network namespace plays the VM's tap) with its tag
and flows, and remove them."""

import base64
import subprocess
import sys
from pathlib import Path

from one_drivers.lab import netns
from one_drivers.lab.documents import vm_doc

REMOTES = Path(sys.argv[1])
VM, TARGET, MAC = 81, "one-81-0", "02:00:0a:51:00:01"
NIC = {"NIC_ID": 0, "NETWORK_ID": 1, "VN_MAD": "ovsdb", "BRIDGE": "onebr-verify", "VLAN_ID": 33,
       "MAC": MAC, "IP": "10.81.0.1", "TARGET": TARGET, "FILTER_IP_SPOOFING": "YES"}
DOC = base64.b64encode(vm_doc(VM, [], nics=[NIC]).encode())


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"verify failed: {what}")


def run(action: str, argv: list[str]) -> None:
    """As OpenNebula runs it on a host: as oneadmin (the action gets root through sudo)."""
    proc = subprocess.run(["runuser", "-u", "oneadmin", "--",
                           str(REMOTES / "vnm" / "ovsdb" / action), *argv], input=DOC,
                          capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        sys.exit(f"vnm/ovsdb/{action} failed (exit {proc.returncode}): "
                 f"{proc.stderr.decode().strip()}")


def vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", *args], capture_output=True, text=True, timeout=30,
                          check=False).stdout.strip()


run("pre", [])
netns.plug(TARGET, MAC, ["10.81.0.1/24"])
run("post", ["deploy-id", "node1"])
check(vsctl("get", "Port", TARGET, "tag") == "33", "tagged")
flows = subprocess.run(["ovs-ofctl", "dump-flows", "onebr-verify",
                        "cookie=0x0ed0000000510000/0xffffffffffff0000"], capture_output=True,
                       text=True, timeout=30, check=True).stdout
check("nw_src=10.81.0.1" in flows, "anti-spoofing flows")
netns.unplug(TARGET)
run("clean", ["node1"])
check(TARGET not in vsctl("list-ports", "onebr-verify"), "port gone")
print("node: VNM pre, post, clean through the installed remotes: ok")
