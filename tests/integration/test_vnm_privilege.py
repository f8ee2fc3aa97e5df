"""The VNM actions' way to root, attacked as a local user would (SECURITY.md): a real unprivileged
user, the real sudo, exactly the rule ``one-drivers install-sudo`` (the Ansible role) installs,
and the lab's real Open vSwitch whose socket is root's.

Each attack comes with a positive control that shows the planted thing does run when nothing
stops it, so "the marker is absent" means the defence held, not that the plant was broken."""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from one_drivers.lab import netns
from one_drivers.lab.documents import vm_doc
from one_drivers.vnm.ovsdb.privilege import default_entry, install_sudo

USER = "one-drivers-t"  # the driver user of these tests (oneadmin's role)


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "--home-dir",
                        f"/var/tmp/{USER}-home", "--shell", "/bin/sh", USER], check=True,
                       timeout=30)
        return pwd.getpwnam(USER)


class Site:
    """A hypervisor as the role leaves it: the entry and the rule installed by root, root's
    configuration, and the driver user's own remotes tree (as oned syncs it to /var/tmp/one)."""

    def __init__(self, root_dir: Path, user: pwd.struct_passwd, lab_env: dict[str, str]) -> None:
        self.root_dir = root_dir  # root-owned, 0755: entry, configuration, state, markers
        self.user = user
        self.home = Path(user.pw_dir)
        # where the role puts it (the caller finds it there by itself, as the shims run it)
        self.entry = Path(default_entry())
        self.root_conf = root_dir / "etc" / "vnm-ovsdb.conf"
        self.state_dir = root_dir / "state"
        self.sudoers = Path(f"/etc/sudoers.d/one-drivers-test-{root_dir.name[-8:]}")
        self.ovsdb = lab_env["ONE_DRIVERS_OVSDB"]
        self.remotes = self.home / f"remotes-{root_dir.name[-8:]}"
        self.bridge = f"pv{uuid.uuid4().hex[:8]}"

    def install(self) -> None:
        self.root_conf.parent.mkdir(parents=True)
        self.root_conf.write_text(f"OVSDB={self.ovsdb}\nDATAPATH_TYPE=netdev\n"
                                  f"STATE_DIR={self.state_dir}\n")
        changed = install_sudo(USER, entry=str(self.entry), config=str(self.root_conf),
                               sudoers=str(self.sudoers))
        assert changed == [str(self.entry), str(self.sudoers)]
        assert install_sudo(USER, entry=str(self.entry), config=str(self.root_conf),
                            sudoers=str(self.sudoers)) == [], "a second install changes nothing"
        # the driver user's remotes tree, owned by the user, as `onehost sync` leaves it
        subprocess.run([sys.executable, "-m", "one_drivers.cli", "install-remotes",
                        str(self.remotes)], check=True, capture_output=True, timeout=120)
        conf = self.remotes / "etc" / "vnm" / "ovsdb" / "ovsdb.conf"
        conf.write_text(conf.read_text() + f"\nOVSDB={self.ovsdb}\n")
        subprocess.run(["chown", "-R", f"{USER}:", str(self.remotes)], check=True, timeout=30)

    def as_user(self, argv: list[str], *, stdin: bytes = b"", cwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.home)}
        proc = subprocess.run(["runuser", "-u", USER, "--", "env", "-i",
                               *[f"{k}={v}" for k, v in {**base, **(env or {})}.items()], *argv],
                              input=stdin, capture_output=True, timeout=120, check=False,
                              cwd=cwd or self.home)
        return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                           proc.stderr.decode())

    def doc(self, vm: int) -> bytes:
        nic = {"NIC_ID": 0, "NETWORK_ID": 3, "VN_MAD": "ovsdb", "BRIDGE": self.bridge,
               "VLAN_ID": 41, "MAC": f"02:00:00:00:{vm & 0xff:02x}:00", "IP": "10.41.0.5",
               "TARGET": f"one-{vm}-0", "FILTER_IP_SPOOFING": "YES"}
        return base64.b64encode(vm_doc(vm, [], nics=[nic]).encode())

    def action(self, action: str, vm: int, *argv: str, **kw: object
               ) -> subprocess.CompletedProcess[str]:
        shim = str(self.remotes / "vnm" / "ovsdb" / action)
        return self.as_user([shim, *argv], stdin=self.doc(vm), **kw)  # type: ignore[arg-type]

    def remove(self) -> None:
        self.sudoers.unlink(missing_ok=True)
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", self.bridge],
                       check=False, timeout=20)
        shutil.rmtree(self.remotes, ignore_errors=True)


@pytest.fixture
def site(lab_env: dict[str, str]) -> Iterator[Site]:
    user = _user()
    root_dir = Path(f"/var/tmp/one-drivers-privtest-{uuid.uuid4().hex[:8]}")
    root_dir.mkdir(mode=0o755)
    s = Site(root_dir, user, lab_env)
    sock = Path(s.ovsdb.removeprefix("unix:"))
    assert not os.access(sock, os.W_OK, effective_ids=False) or os.geteuid() == 0
    s.install()
    probe = s.as_user([str(sys.prefix) + "/bin/python3", "-I", "-c", "import one_drivers"])
    assert probe.returncode == 0, f"the test user cannot run this checkout: {probe.stderr}"
    yield s
    s.remove()
    shutil.rmtree(root_dir, ignore_errors=True)


def _plant(where: Path, marker: Path) -> None:
    """A ``one_drivers`` package whose import writes ``marker`` with the importer's uid."""
    pkg = where / "one_drivers"
    for sub in ("", "vnm", "vnm/ovsdb"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text(
            f"import os\nopen({str(marker)!r}, 'a').write(str(os.geteuid()) + '\\n')\n")
    (pkg / "vnm" / "ovsdb" / "privileged.py").write_text("def main(*a, **k): pass\n")
    (where / "startup.py").write_text(
        f"import os\nopen({str(marker)!r}, 'a').write(str(os.geteuid()) + '\\n')\n")


def test_the_driver_user_configures_ovs_through_the_one_rule(site: Site) -> None:
    vm = 9100 + int(uuid.uuid4().hex[:2], 16)
    pre = site.action("pre", vm)
    assert pre.returncode == 0, pre.stderr
    assert "ran as root through sudo" in pre.stderr
    tag = subprocess.run(["ovs-vsctl", "get", "Port", f"one-{vm}-0", "tag"], capture_output=True,
                         text=True, timeout=20, check=True).stdout.strip()
    assert tag == "41"
    state = site.state_dir / f"vm-{vm}.xml"
    st = state.lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), "root's state, root's only"
    assert stat.S_IMODE(site.state_dir.stat().st_mode) == 0o700
    clean = site.action("clean", vm, "node1")
    assert clean.returncode == 0, clean.stderr
    assert not state.exists()


def test_a_package_planted_where_the_user_stands_never_runs_as_root(site: Site) -> None:
    work = site.home / f"plant-{uuid.uuid4().hex[:6]}"
    markers = site.root_dir / "markers"
    markers.mkdir()
    markers.chmod(0o777)  # whoever runs the plant can leave its uid there
    marker = markers / "marker"
    work.mkdir()
    _plant(work, marker)
    subprocess.run(["chown", "-R", f"{USER}:", str(work)], check=True, timeout=30)
    # positive control: the plant runs when Python is not isolated (what the old rule did)
    control = site.as_user([sys.prefix + "/bin/python3", "-m", "one_drivers.vnm.ovsdb"],
                           cwd=work)
    assert marker.exists(), f"the plant did not run: {control.stderr}"
    marker.unlink()
    vm = 9400 + int(uuid.uuid4().hex[:2], 16)
    hostile_env = {"PYTHONPATH": str(work), "PYTHONSTARTUP": str(work / "startup.py"),
                   "PYTHONINSPECT": "1", "PYTHONHOME": str(work)}
    res = site.action("pre", vm, cwd=work, env=hostile_env)
    assert res.returncode == 0, res.stderr
    assert "ran as root through sudo" in res.stderr
    direct = site.as_user(["sudo", "-n", str(site.entry), "clean", "node1"],
                          stdin=site.doc(vm), cwd=work, env=hostile_env)
    assert direct.returncode == 0, direct.stderr
    uids = marker.read_text().split() if marker.exists() else []
    assert "0" not in uids, "planted code ran as root"


def test_sudo_allows_only_the_entry_and_no_environment(site: Site) -> None:
    vm = 9700 + int(uuid.uuid4().hex[:2], 16)
    python = sys.prefix + "/bin/python3"
    for argv in ([python, "-m", "one_drivers.vnm.ovsdb.privileged", "pre"],  # the old rule
                 [python, "-I", "-c", "print(1)"],
                 ["PYTHONPATH=/tmp", str(site.entry), "pre"]):
        res = site.as_user(["sudo", "-n", *argv], stdin=site.doc(vm))
        assert res.returncode == 1, (argv, res.stderr)
        assert "password is required" in res.stderr or "not allowed" in res.stderr, res.stderr
    res = site.as_user(["sudo", "-n", str(site.entry), "vnet_create", "3"], stdin=b"")
    assert res.returncode == 2 and "must be one of" in res.stderr
    ok = site.as_user(["sudo", "-n", str(site.entry), "pre"], stdin=site.doc(vm))
    assert ok.returncode == 0, ok.stderr  # positive control: the entry itself is allowed
    site.as_user(["sudo", "-n", str(site.entry), "clean", "node1"], stdin=site.doc(vm))


def test_root_ignores_the_user_configuration_and_never_writes_where_the_user_can(
        site: Site) -> None:
    vm = 9800 + int(uuid.uuid4().hex[:2], 16)
    mine = site.home / f"state-{uuid.uuid4().hex[:6]}"
    mine.mkdir()
    shutil.chown(mine, USER)
    victim = site.root_dir / "victim"
    victim.write_text("root's secret\n")
    victim.chmod(0o600)
    # a hostile remotes configuration: root's state in the user's directory, another socket
    conf = site.remotes / "etc" / "vnm" / "ovsdb" / "ovsdb.conf"
    conf.write_text(conf.read_text() + f"STATE_DIR={mine}\nOVS_RUNDIR={mine}\n")
    for i in range(64):  # symlinks wherever an old-style temporary name could be
        os.symlink(victim, mine / f"vm-{vm}.xml.tmp.{i}")
    os.symlink(victim, mine / f"vm-{vm}.xml")
    res = site.action("pre", vm)
    assert res.returncode == 0, res.stderr
    assert (site.state_dir / f"vm-{vm}.xml").exists(), "root kept its state where it belongs"
    assert victim.read_text() == "root's secret\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    # root's own configuration pointing into the user's directory: refused, nothing written
    site.root_conf.write_text(site.root_conf.read_text() + f"STATE_DIR={mine}\n")
    bad = site.action("pre", vm)
    assert bad.returncode != 0
    assert "owned by uid" in bad.stderr.splitlines()[-1]
    assert victim.read_text() == "root's secret\n"
    # a configuration the user could change is not read at all
    site.root_conf.write_text(f"OVSDB={site.ovsdb}\nDATAPATH_TYPE=netdev\n"
                              f"STATE_DIR={site.state_dir}\n")
    site.root_conf.chmod(0o666)
    bad = site.action("clean", vm, "node1")
    assert bad.returncode != 0 and "can be changed by others" in bad.stderr
    site.root_conf.chmod(0o644)
    assert site.action("clean", vm, "node1").returncode == 0
    netns.unplug(f"one-{vm}-0")


def test_a_front_end_without_the_rule_creates_and_deletes_vnets(site: Site) -> None:
    """oned runs vnet_create/vnet_delete on the front-end as oneadmin, where no sudo rule is
    installed and OVSDB (if any) is root's: they must not take the sudo route (a real oned put
    the network in ERROR with `sudo: a password is required`)."""
    site.sudoers.unlink()
    # positive control: an action that does need root is refused here, so this is a site where
    # the sudo route fails
    vm = 9300 + int(uuid.uuid4().hex[:2], 16)
    pre = site.action("pre", vm)
    assert pre.returncode != 0 and "sudoers rule" in pre.stderr, pre.stderr
    vnet = base64.b64encode(b"<VNET><ID>7</ID><VN_MAD>ovsdb</VN_MAD><VLAN_ID>42</VLAN_ID>"
                            b"<TEMPLATE><MTU>1450</MTU></TEMPLATE></VNET>")
    for action in ("vnet_create", "vnet_delete"):
        shim = str(site.remotes / "vnm" / "ovsdb" / action)
        res = site.as_user([shim, "7"], stdin=vnet)
        assert res.returncode == 0, f"{action}: {res.stderr}"
        assert "sudo" not in res.stderr
    bad = base64.b64encode(b"<VNET><ID>7</ID><VN_MAD>ovsdb</VN_MAD><VLAN_ID>5000</VLAN_ID>"
                           b"<TEMPLATE/></VNET>")
    res = site.as_user([str(site.remotes / "vnm" / "ovsdb" / "vnet_create"), "7"], stdin=bad)
    assert res.returncode != 0 and "VLAN_ID='5000'" in res.stderr, res.stderr
