"""A real OpenNebula front-end (oned + monitord, built from OpenNebula's public source and
installed self-contained outside this repository) driving our drivers on the lab.

The install is the operator's, not ours: we only do to it what an operator does, with our own
tools (``one-drivers oned-conf --merge``, ``install-remotes``) and its CLI. Its hosts are the
lab's two ssh hosts, registered by address: ``10.254.0.2`` (its own /var/lib/one/datastores,
libvirtd ``libvirt2``, switch ``ovs2``, in its own network namespace) and ``10.254.0.1`` (this
machine's libvirtd, switch and /var/lib/one/datastores), so VMs live-migrate between them; its
datastores are the lab's Ceph.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

ONE_DRIVERS = str(Path(sys.executable).parent / "one-drivers")


class OneError(AssertionError):
    pass


class OpenNebula:
    def __init__(self, location: Path, work: Path, lab_env: dict[str, str]) -> None:
        self.location = location
        self.work = work
        self.lab = lab_env
        self.home = work / "home"
        self.auth = work / "one_auth"
        self.env = {
            "PATH": f"{work / 'bin'}:{location / 'bin'}:{Path(sys.executable).parent}:"
                    "/usr/sbin:/usr/bin:/sbin:/bin",
            "ONE_LOCATION": str(location), "ONE_AUTH": str(self.auth),
            "RUBYLIB": str(location / "lib" / "ruby"), "HOME": str(self.home),
            "LANG": "C.UTF-8",
            # our TM reaches the host the way the lab's tests do
            "ONE_DRIVERS_SSH_CONFIG": lab_env["ONE_DRIVERS_SSH_CONFIG"],
            "CEPH_CONF": lab_env["CEPH_CONF"],
        }

    # -- set up as an operator would -------------------------------------------------------
    def install(self) -> None:
        self.stop()
        if self.work.exists():
            shutil.rmtree(self.work)
        # in /var/tmp, which anyone can write: made afresh by us, private, or not at all (the
        # ssh wrappers in it are run by oned)
        self.work.mkdir(mode=0o700)
        # oned's drivers run plain ssh/scp, which read the passwd user's ~/.ssh, not $HOME's:
        # wrappers first on its PATH give them the lab's configuration
        bin_dir = self.work / "bin"
        bin_dir.mkdir()
        self.home.mkdir()
        for tool in ("ssh", "scp"):
            wrapper = bin_dir / tool
            wrapper.write_text(f"#!{sys.executable} -I\nimport os, sys\n"
                               f"os.execv('/usr/bin/{tool}', ['{tool}', '-F', "
                               f"{self.lab['ONE_DRIVERS_SSH_CONFIG']!r}, *sys.argv[1:]])\n")
            wrapper.chmod(0o755)
        self.auth.write_text(f"oneadmin:{os.urandom(12).hex()}\n")
        var = self.location / "var"
        for stale in (var / "one.db", var / ".one"):  # a new cloud each run
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
        etc = self.location / "etc"
        self.run([ONE_DRIVERS, "oned-conf", "--merge", str(etc / "oned.conf"),
                  str(etc / "monitord.conf"), str(etc / "vmm_exec" / "vmm_execrc")])
        # users oned does not know log in through LDAP (the lab's slapd)
        conf = (etc / "oned.conf").read_text()
        conf = re.sub(r'(?m)^#?\s*DEFAULT_AUTH\s*=.*$', 'DEFAULT_AUTH = "ldap"', conf)
        # a packaged front-end's VM directories: each lab host has its own there (a
        # self-contained install's default, under $ONE_LOCATION, would be one directory that
        # every host on this machine shares, hiding what a migration must move)
        # oned monitors marketplaces on a timer (600 s by default, the first tick some 15 s
        # after start): a market created after that tick would wait ten minutes for its first
        # monitor, so the test's market is not raced against it
        conf = re.sub(r'(?m)^#?\s*MONITORING_INTERVAL_MARKET\s*=.*$',
                      'MONITORING_INTERVAL_MARKET = 10', conf)
        conf = re.sub(r'(?m)^#?\s*DATASTORE_LOCATION\s*=.*$',
                      'DATASTORE_LOCATION = /var/lib/one/datastores', conf)
        (etc / "oned.conf").write_text(conf)
        ldap_conf = self.work / "ldap_auth.conf"
        ldap_conf.write_text(
            "lab:\n    :host: 127.0.0.1\n"
            f"    :port: {urllib.parse.urlsplit(self.lab['ONE_LAB_LDAPS_URI']).port}\n"
            f"    :encryption: :simple_tls\n    :ca_cert: '{self.lab['ONE_LAB_LDAP_CA']}'\n"
            f"    :user: '{self.lab['ONE_LAB_LDAP_BIND_DN']}'\n"
            f"    :password: '{self.lab['ONE_LAB_LDAP_BIND_PW']}'\n"
            f"    :base: '{self.lab['ONE_LAB_LDAP_BASE']}'\n    :user_field: uid\n"
            "    :mapping_timeout: 0\n:order:\n    - lab\n")
        remotes = var / "remotes"
        # each host's libvirtd, switch and VNM state are where a real host has them (the lab's
        # sshd give each host its own): no per-host paths here. The destination of a live
        # migration is reached as upstream does, over ssh (our wrapper: the lab's keys); the
        # memory stream goes to the host's address (the hosts are registered by address)
        remote_uri = f"qemu+ssh://{{host}}/system?command={bin_dir / 'ssh'}"
        settings = {
            "vmm/libvirt/libvirt.conf": {"DOMAIN_TYPE": "qemu", "ACPI_TIMEOUT": "20",
                                         "LIBVIRT_REMOTE_URI": remote_uri,
                                         "MIGRATE_URI": "tcp://{host}"},
            "tm/rbd/rbd.conf": {"LIBVIRT_REMOTE_URI": remote_uri},
            "im/libvirt/libvirt.conf": {"STATE_DIR": str(self.work / "im")},
            "auth/ldap/ldap.conf": {"CONFIG": str(ldap_conf),
                                    "MAPPING_DIR": str(self.work / "auth")},
            "auth/oidc/oidc.conf": {"JWKS_DIR": str(self.work / "auth")},
            "vnm/ovsdb/ovsdb.conf": {"DATAPATH_TYPE": "netdev"},
            "ipam/kea/kea.conf": {"KEA_URL": self.lab["ONE_LAB_KEA_URL"],
                                  "KEA_CREDENTIALS": self.lab["ONE_LAB_KEA_CREDENTIALS"],
                                  "PDNS_URL": self.lab["ONE_LAB_PDNS_URL"],
                                  "PDNS_API_KEY_FILE": self.lab["ONE_LAB_PDNS_KEY_FILE"],
                                  "DNS_ZONES": self.lab["ONE_LAB_DNS_ZONES"],
                                  "STATE_DIR": str(self.work / "ipam")},
        }
        # each run on the files as shipped (install-remotes keeps a changed configuration
        # file: an earlier run's additions would pile up)
        for rel in settings:
            (remotes / "etc" / rel).unlink(missing_ok=True)
        self.run([ONE_DRIVERS, "install-remotes", str(remotes)])
        # upstream's restic datastore runs the restic it ships from its remotes (synced to the
        # backup server by its monitor): here Debian's
        shutil.copy2("/usr/bin/restic", remotes / "datastore" / "restic" / "restic")
        for rel, values in settings.items():
            conf = remotes / "etc" / rel
            conf.write_text(conf.read_text() + "".join(f"\n{k}={v}" for k, v in values.items())
                            + "\n")

    def start(self) -> None:
        self.run(["one", "start"], timeout=120)
        self.wait(lambda: self.cli("onehost", "list") is not None, "oned to answer", 60)

    def clean_up(self) -> None:
        """Every VM, image and network this cloud still has, removed the way a user would
        (terminate --hard, delete), so a failed run does not leave domains, ports or RBD images
        that the next run's VM 0 would collide with."""
        # hosts last: deleting one stops its monitoring client
        pools = {"onevm": "VM_POOL/VM/ID", "oneimage": "IMAGE_POOL/IMAGE/ID",
                 "onevnet": "VNET_POOL/VNET/ID", "onehost": "HOST_POOL/HOST/ID"}
        for kind, path in pools.items():
            try:
                listing = ET.fromstring(self.run([kind, "list", "-x"], timeout=60))
            except (OneError, ET.ParseError):
                continue
            for oid in [e.text for e in listing.iterfind(path.split("/", 1)[1]) if e.text]:
                if kind == "onevm":
                    self.cli("onevm", "recover", "--delete", oid)
                else:
                    self.cli(kind, "delete", oid)
            try:
                self.wait(lambda kind=kind, path=path: not ET.fromstring(
                    self.run([kind, "list", "-x"], timeout=60)).findall(
                        path.split("/", 1)[1]), f"every {kind[3:]} to go", 180)
            except OneError as exc:
                print(f"e2e clean-up: {exc}")
        self.stop_monitoring_clients()

    def stop_monitoring_clients(self) -> None:
        """oned stops a deleted host's monitoring client (STOP_MONITOR) on its own time; the
        clients this cloud started (its own state directory) are stopped before oned goes."""
        import signal

        state = self.work / "im"
        for pidfile in state.glob("host-*.pid") if state.is_dir() else []:
            try:
                self.wait(lambda pidfile=pidfile: not pidfile.exists(),
                          f"oned to stop the client of {pidfile.name}", 30)
                continue
            except OneError:
                pass
            pid = int(pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.exists() and str(state).encode() in cmdline.read_bytes():
                os.kill(pid, signal.SIGTERM)
            pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        if (self.location / "bin" / "one").exists():
            subprocess.run([str(self.location / "bin" / "one"), "stop"], env=self.env,
                           capture_output=True, timeout=120, check=False)
        from one_drivers.lab.proc import stop_processes_mentioning

        # what this cloud's drivers left running in its work directory: the ldap login agent
        stop_processes_mentioning(str(self.work))

    # -- the CLI ---------------------------------------------------------------------------
    def run(self, argv: list[str], *, timeout: float = 300, stdin: str | None = None) -> str:
        proc = subprocess.run(argv, env=self.env, input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.work)
        if proc.returncode != 0:
            raise OneError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc.stdout

    def cli(self, *argv: str) -> str | None:
        """A CLI command; None when it fails (oned not answering yet)."""
        try:
            return self.run(list(argv), timeout=60)
        except OneError:
            return None

    def xml(self, *argv: str) -> ET.Element:
        return ET.fromstring(self.run([*argv, "-x"], timeout=60))

    def create(self, kind: str, template: str, *extra: str) -> int:
        path = self.work / f"{kind}-{time.monotonic_ns()}.tmpl"
        path.write_text(template)
        out = self.run([kind, "create", *extra, str(path)])
        return int(out.strip().rsplit(" ", 1)[-1])

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = 120,
             fail: Callable[[], str | None] | None = None) -> None:
        """Until ``predicate()`` holds; ``fail()`` naming a state that will never change
        (an ERROR) ends the wait at once."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            reason = fail() if fail else None
            if reason:
                raise OneError(f"waiting for {what}: {reason}")
            time.sleep(0.5)
        raise OneError(f"{what} did not happen within {timeout:g} s")

    def log_tail(self, name: str = "oned.log", lines: int = 40) -> str:
        path = self.location / "var" / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) \
            if path.exists() else ""
