"""Hypervisor verify: VNM pre, post and clean of the installed ovsdb driver, run as oneadmin,
create a real Open vSwitch port (a veth in a network namespace plays the VM's tap) with its tag
and flows, and remove them.

They run as an attacking oneadmin would run them: from a directory holding a planted
``one_drivers`` package, with PYTHONPATH/PYTHONSTARTUP pointing at it, with a hostile remotes
configuration (root's state in oneadmin's directory, full of symlinks to a root file). Root must
run only its own code and configuration (the positive control shows the plant does run when
Python is not isolated)."""

import base64
import os
import stat
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


PLANT = Path("/var/tmp/one/plant")
MARKERS = Path("/var/tmp/one-drivers-markers")
EVIL_STATE = Path("/var/tmp/one/evil-state")
VICTIM = Path("/etc/one-drivers-victim")
HOSTILE = {"PYTHONPATH": str(PLANT), "PYTHONSTARTUP": str(PLANT / "startup.py")}


def as_oneadmin(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = [f"{k}={v}" for k, v in HOSTILE.items()]
    return subprocess.run(["runuser", "-u", "oneadmin", "--", "env", *env, *argv], input=stdin,
                          capture_output=True, timeout=120, check=False, cwd=PLANT)


def plant() -> None:
    MARKERS.mkdir(mode=0o777, exist_ok=True)
    MARKERS.chmod(0o777)
    code = "import os\nopen('/var/tmp/one-drivers-markers/m', 'a').write(f'{os.geteuid()}\\n')\n"
    for sub in ("one_drivers", "one_drivers/vnm", "one_drivers/vnm/ovsdb"):
        (PLANT / sub).mkdir(parents=True, exist_ok=True)
        (PLANT / sub / "__init__.py").write_text(code)
    (PLANT / "startup.py").write_text(code)
    VICTIM.write_text("root's\n")
    VICTIM.chmod(0o600)
    EVIL_STATE.mkdir(exist_ok=True)
    for name in (f"vm-{VM}.xml", *(f"vm-{VM}.xml.tmp.{i}" for i in range(4096))):
        if not (EVIL_STATE / name).is_symlink():
            (EVIL_STATE / name).symlink_to(VICTIM)
    conf = REMOTES / "etc" / "vnm" / "ovsdb" / "ovsdb.conf"
    conf.write_text(conf.read_text() + f"\nSTATE_DIR={EVIL_STATE}\n")
    subprocess.run(["chown", "-R", "oneadmin:", str(PLANT), str(EVIL_STATE)], check=True)
    control = as_oneadmin(["/opt/one-drivers/bin/python3", "-m", "one_drivers.vnm.ovsdb"])
    check((MARKERS / "m").exists(), f"positive control: the plant runs ({control.stderr!r})")
    (MARKERS / "m").unlink()


def run(action: str, argv: list[str]) -> None:
    """As OpenNebula runs it on a host: as oneadmin (the action gets root through sudo)."""
    proc = as_oneadmin([str(REMOTES / "vnm" / "ovsdb" / action), *argv], DOC)
    if proc.returncode != 0:
        sys.exit(f"vnm/ovsdb/{action} failed (exit {proc.returncode}): "
                 f"{proc.stderr.decode().strip()}")


def vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", *args], capture_output=True, text=True, timeout=30,
                          check=False).stdout.strip()


plant()
old_rule = as_oneadmin(["sudo", "-n", "/opt/one-drivers/bin/python3", "-m",
                        "one_drivers.vnm.ovsdb.privileged", "pre"], DOC)
check(old_rule.returncode == 1, "sudo refuses anything but the fixed entry")
run("pre", [])
state = Path(f"/var/lib/one-drivers/vnm/vm-{VM}.xml")
check(state.lstat().st_uid == 0 and stat.S_IMODE(state.lstat().st_mode) == 0o600,
      "root's state in root's directory")
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
check(not (MARKERS / "m").exists() or "0" not in (MARKERS / "m").read_text().split(),
      "planted code never ran as root")
check(VICTIM.read_text() == "root's\n" and stat.S_IMODE(VICTIM.stat().st_mode) == 0o600,
      "nothing written through oneadmin's symlinks")
os.unlink(VICTIM)
print("node: VNM pre, post, clean as a hostile oneadmin through the installed remotes: ok")
