"""``one-drivers doctor``: everything the drivers need on this node, one line per problem.

On a front-end: the remotes tree matches this package, oned.conf / monitord.conf / vmm_execrc
(the files OpenNebula really reads) carry the registration, oned answers, and every datastore on
our drivers reaches Ceph as its own user, with the attributes the drivers need. On a host: the
remotes tree, libvirt, OpenNebula's default emulator, Open vSwitch (directly, or through the one
sudo rule as installed). Each problem says what to fix; the exit status is non-zero when there is
any. Nothing is changed, except one RADOS object per datastore pool written and removed at once
(proof that the datastore's user may write there).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from one_drivers.core.config import DEFAULT_REMOTES, Settings, config_path, load_file
from one_drivers.core.errors import DriverError

if TYPE_CHECKING:
    from one_drivers.core.oned import Oned


class Problem(NamedTuple):
    where: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what} -- {self.fix}"


class Note(NamedTuple):
    """What doctor found out and is worth saying (not a problem): where Ceph is reached from."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


class Node(NamedTuple):
    role: str  # frontend | host
    remotes: Path
    etc: Path  # OpenNebula's configuration: /etc/one, or $ONE_LOCATION/etc
    timeout: float
    skip: frozenset[str]


Check = Callable[[Node], Iterator[Problem | Note]]


def _settings(node: Node, family: str, driver: str) -> Settings:
    """The driver's settings in this node's remotes tree. Run as root, only a file root alone
    can change is read: the tree is oneadmin's, and a LIBVIRT_URI such as ``qemu+ext://...
    ?command=`` or an OVSDB endpoint chosen there must not steer root (defaults instead)."""
    from one_drivers.core.config import load_root_file
    from one_drivers.core.registry import get_driver

    drv = get_driver(family, driver)
    load = load_root_file if os.geteuid() == 0 else load_file
    try:
        configured = load(config_path(family, driver, node.remotes))
    except (OSError, DriverError):  # safefs.Untrusted is one
        configured = {}
    return Settings([drv.default_values(), configured], subject=f"{family}/{driver}")


def remotes(node: Node) -> Iterator[Problem]:
    from one_drivers.core.remotes import drifted

    if not node.remotes.is_dir():
        yield Problem("remotes", f"{node.remotes} does not exist",
                      f"run one-drivers install-remotes {node.remotes}")
        return
    stale = drifted(node.remotes)
    if stale:
        fix = f"run one-drivers install-remotes {node.remotes}"
        if node.role == "host":
            fix += " on the front-end, then onehost sync"
        yield Problem("remotes", f"{len(stale)} driver shims missing or not this package's "
                                 f"(e.g. {stale[0].relative_to(node.remotes)})", fix)


def registration(node: Node) -> Iterator[Problem]:
    from one_drivers.core.conf_merge import merge_file
    from one_drivers.core.oned_conf import registration as wanted

    reg = wanted()
    for rel in ("oned.conf", "monitord.conf", "vmm_exec/vmm_execrc"):
        path = node.etc / rel
        if not path.is_file():
            yield Problem("registration", f"{path} not found (OpenNebula reads it there)",
                          "install OpenNebula, or set ONE_LOCATION for a self-contained one")
            continue
        try:
            missing = merge_file(str(path), reg, check=True)
        except OSError as exc:
            yield Problem("registration", f"cannot read {path}: {exc.strerror}",
                          "run doctor as oneadmin (OpenNebula's group reads it) or root")
            continue
        except DriverError as exc:  # not the file OpenNebula ships
            yield Problem("registration", str(exc), f"check {path}")
            continue
        if missing:
            yield Problem("registration", f"{path} lacks the one-drivers registration",
                          f"run one-drivers oned-conf --merge {path}, then restart oned")


def oned_and_datastores(node: Node) -> Iterator[Problem | Note]:
    from one_drivers.core.oned import Oned

    try:
        client = Oned(timeout=node.timeout)
        pool = client.call("one.datastorepool.info", client.session, -2)
    except DriverError as exc:
        yield Problem("oned", str(exc), "check that oned runs, ONE_XMLRPC and one_auth")
        return
    from one_drivers.core.xmlview import parse_xml

    root = parse_xml(pool, what="oned's datastore pool", root="DATASTORE_POOL")
    defaults = {"rbd": _settings(node, "datastore", "rbd"),  # read once, templates over them
                "tm": _settings(node, "tm", "rbd")}
    hosts: list[str] | None = None
    for ds in root.iterfind("DATASTORE"):
        ds_mad, tm_mad = ds.findtext("DS_MAD") or "", ds.findtext("TM_MAD") or ""
        if "rbd" not in (ds_mad, tm_mad):
            continue
        name = f"datastore {ds.findtext('ID')} ({ds.findtext('NAME')})"
        template = {e.tag: e.text or "" for e in ds.find("TEMPLATE") or []}
        yield from _datastore(node, name, ds.findtext("TYPE") or "", template,
                              defaults["rbd"].over(template))
        places = ceph_places(ds_mad == "rbd", tm_mad == "rbd", defaults["tm"].over(template))
        if any(where == "the VM's host" for where, _ in places.values()) and hosts is None:
            try:
                hosts = _hosts(client)
            except DriverError as exc:
                yield Problem("oned", f"cannot list hosts: {exc}", "check oned and one_auth")
                hosts = []
        yield from _ceph_from_everywhere(node, name, places, hosts or [],
                                         defaults["rbd"].over(template))


def _hosts(client: Oned) -> list[str]:
    """The hosts oned has, except disabled and offline ones (no VM goes there)."""
    from one_drivers.core.xmlview import parse_xml

    pool = parse_xml(client.call("one.hostpool.info", client.session), what="oned's host pool",
                     root="HOST_POOL")
    return [h.findtext("NAME") or "" for h in pool.iterfind("HOST")
            if h.findtext("STATE") not in ("4", "8")]


def ceph_places(ds_side: bool, tm_side: bool, settings: Settings
                ) -> dict[str, tuple[str, list[str]]]:
    """Where each side of a datastore reaches Ceph: ``{"DS actions": (mode, bridges)}``."""
    bridges = (settings.get("BRIDGE_LIST") or "").split()
    places: dict[str, tuple[str, list[str]]] = {}
    if ds_side:
        mode = settings.get("CEPH_ACCESS") or "local"
        places["DS actions"] = ("the bridges" if mode == "bridge" else "here", bridges)
    if tm_side:
        mode = settings.get("TM_CEPH_ACCESS") or settings.get("CEPH_ACCESS") or "local"
        where = {"bridge": "the bridges", "host": "the VM's host"}.get(mode, "here")
        places["TM actions"] = (where, bridges)
    return places


def _ceph_from_everywhere(node: Node, name: str, places: dict[str, tuple[str, list[str]]],
                          hosts: list[str], settings: Settings) -> Iterator[Problem | Note]:
    """Say where each side reaches Ceph; check it answers from every such host (here is
    checked by :func:`_datastore` already)."""
    remote_hosts: list[str] = []
    for side, (where, bridges) in places.items():
        targets = bridges if where == "the bridges" else hosts if where != "here" else []
        yield Note(name, f"{side} reach Ceph from {where}"
                         + (f" ({', '.join(targets)})" if targets else ""))
        if where != "here" and not targets:
            yield Problem(name, f"{side} reach Ceph from {where}, and there is none",
                          "add BRIDGE_LIST to the datastore, or hosts to OpenNebula")
        remote_hosts += [t for t in targets if t not in remote_hosts]
    for host in remote_hosts:
        yield from _ceph_on(host, name, settings, node.timeout)


CEPH_KEYS = ("POOL_NAME", "CEPH_USER", "CEPH_KEY", "CEPH_CONF", "CEPH_HOST", "EC_POOL_NAME")


def _ceph_on(host: str, name: str, settings: Settings, timeout: float
             ) -> Iterator[Problem | Note]:
    """The same Ceph check, run on ``host`` over ssh (the datastore's access sent on stdin,
    never on the command line)."""
    import json
    import sys

    from one_drivers.core import remote

    access = {k: settings.get(k) or "" for k in CEPH_KEYS}
    python = settings.get("BRIDGE_PYTHON") or sys.executable
    try:
        proc = remote.run(host, [python, "-m", "one_drivers.cli", "doctor", "--role", "host",
                                 "--probe-ceph", "--timeout", f"{timeout:g}"],
                          input=json.dumps(access).encode(), timeout=timeout + 15,
                          check=False, idempotent=True)
    except DriverError as exc:
        yield Problem(f"{name} on {host}", str(exc), "check ssh from the front-end to it")
        return
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode == 0:
        yield Note(name, f"Ceph answers on {host}")
    else:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = (out or err or [f"exit {proc.returncode}"])[-1]
        yield Problem(f"{name} on {host}", detail,
                      "install one-drivers and the datastore's ceph.conf and key there")


def probe_ceph(data: bytes, timeout: float) -> list[Problem]:
    """``doctor --probe-ceph``: the Ceph check for the access given on stdin (JSON)."""
    import json

    from one_drivers.core.registry import get_driver

    access = json.loads(data or b"{}")
    if not isinstance(access, dict):
        return [Problem("probe", "the access sent is not a JSON object", "update one-drivers")]
    given = {k: str(v) for k, v in access.items() if k in CEPH_KEYS and v}
    settings = Settings([get_driver("datastore", "rbd").default_values(), given],
                        subject="probe")
    return [p for p in _ceph(f"Ceph on {socket.gethostname()}", settings, timeout)]


def _datastore(node: Node, name: str, ds_type: str, template: dict[str, str],
               settings: Settings) -> Iterator[Problem]:
    if ds_type == "1" and template.get("DISK_TYPE", "FILE").upper() != "RBD":
        yield Problem(name, "a system datastore whose DISK_TYPE is not RBD: oned writes volatile "
                            "disks into deployment files as files",
                      'set DISK_TYPE="RBD" in its template (onedatastore update)')
    if ds_type != "1" and not template.get("CEPH_SECRET"):
        yield Problem(name, "no CEPH_SECRET: libvirt cannot open its disks",
                      "set CEPH_SECRET to the UUID of the libvirt secret holding the key")
    if (template.get("RBD_FORMAT") or "2").strip() != "2":
        yield Problem(name, f"RBD_FORMAT={template['RBD_FORMAT']}: images can only be made in "
                            "format 2 (actions that create one refuse)",
                      "remove RBD_FORMAT from its template, or set it to 2")
    yield from _ceph(name, settings, node.timeout)


def _ceph(name: str, settings: Settings, timeout: float) -> Iterator[Problem]:
    from one_drivers.ceph.session import CephAccess, CephSession
    from one_drivers.core.retry import Deadline

    access = CephAccess.from_settings(settings)
    who = f"client.{access.user or 'admin'}"
    probe = f"one-drivers.doctor.{socket.gethostname()}"
    try:
        with CephSession(access, Deadline(timeout), subject=name) as session:
            ioctx = session.cluster.open_ioctx(access.pool)
            try:
                ioctx.write_full(probe, b"")
                ioctx.remove_object(probe)
            finally:
                ioctx.close()
    except Exception as exc:  # every failure is the finding: reported, never raised
        yield Problem(name, f"Ceph pool {access.pool} as {who}: {str(exc).strip() or exc!r}",
                      "check CEPH_CONF/CEPH_HOST, CEPH_USER and CEPH_KEY, the pool, and the "
                      "user's caps (mon 'profile rbd' osd 'profile rbd pool=...')")


def libvirt_and_emulator(node: Node) -> Iterator[Problem]:
    from one_drivers.core.oned_conf import ONE_EMULATOR

    settings = _settings(node, "vmm", "libvirt")
    uri = settings.get("LIBVIRT_URI") or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"
    try:
        import libvirt

        from one_drivers.core.retry import call_with_timeout

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        conn = call_with_timeout(libvirt.open, uri, timeout=node.timeout,
                                 what=f"libvirt at {uri}")
        conn.close()
    except Exception as exc:  # the finding
        yield Problem("libvirt", f"{uri}: {exc}",
                      "start libvirtd (or its sockets) and give the driver user its group")
    emulator = settings.get("EMULATOR") or ONE_EMULATOR
    if not os.access(emulator, os.X_OK):
        yield Problem("emulator", f"{emulator} (the emulator oned writes into deployment files) "
                                  "is missing",
                      "run the libvirt_host role (it links oned's default to QEMU), or set "
                      "EMULATOR in the host template (and here, for doctor)")


def open_vswitch(node: Node) -> Iterator[Problem]:
    from one_drivers.ovs.ovsdb import Ovsdb
    from one_drivers.vnm.ovsdb.host import DEFAULT_OVSDB
    from one_drivers.vnm.ovsdb.privilege import default_entry, needs_privilege

    settings = _settings(node, "vnm", "ovsdb")
    endpoint = settings.get("OVSDB") or os.environ.get("ONE_DRIVERS_OVSDB") or DEFAULT_OVSDB
    if needs_privilege(endpoint) and settings.bool("SUDO", True):
        entry = settings.get("SUDO_COMMAND") or default_entry()
        if not Path(entry).is_file() or Path(entry).stat().st_uid != 0:
            yield Problem("vnm sudo", f"the privileged entry {entry} is not installed (root's)",
                          "run one-drivers install-sudo as root")
            return
        listed = subprocess.run(["sudo", "-n", "-l", entry, "pre"], capture_output=True,
                                timeout=node.timeout, check=False)
        if listed.returncode != 0:
            yield Problem("vnm sudo", f"sudo does not let this user run {entry}",
                          "run one-drivers install-sudo as root (the sudoers rule)")
        return
    try:
        Ovsdb(endpoint, node.timeout).rows("Open_vSwitch")
    except DriverError as exc:
        yield Problem("ovsdb", str(exc), "start Open vSwitch, or set OVSDB in the driver's "
                                         "configuration")


def kea_ipam(node: Node) -> Iterator[Problem]:
    """The kea IPAM's services, once its settings are the operator's (any not the default):
    Kea's agent answers with our credentials and its server has the lease commands; PowerDNS
    answers with our key and serves every zone ARs may name."""
    from one_drivers.core.registry import get_driver
    from one_drivers.core.retry import Deadline
    from one_drivers.ipam.kea.kea import Kea
    from one_drivers.ipam.kea.pdns import PowerDns

    settings = _settings(node, "ipam", "kea")
    defaults = get_driver("ipam", "kea").default_values()
    if all(settings.get(k) == (v or None) for k, v in defaults.items()):
        return  # not configured: the driver is registered but no AR can use it yet
    deadline = Deadline(node.timeout * 4, "doctor's IPAM check")
    try:
        _, commands = Kea(settings, deadline).command("list-commands")
    except DriverError as exc:
        yield Problem("kea", exc.message, "start kea-ctrl-agent and kea-dhcp4, or fix KEA_URL / "
                                       "KEA_CREDENTIALS in ipam/kea/kea.conf")
        return
    if "lease4-add" not in (commands or []):
        yield Problem("kea", "Kea's DHCPv4 server has no lease commands",
                      "load the lease_cmds hook (libdhcp_lease_cmds.so) in kea-dhcp4")
    if not settings.get("DNS_ZONES"):
        return
    try:
        dns = PowerDns(settings, deadline)
        for zone in dns.zones:
            dns.check_zone(zone)
    except DriverError as exc:
        yield Problem("powerdns", exc.message, "start pdns_server with its API, or fix PDNS_URL / "
                                            "PDNS_API_KEY_FILE / DNS_ZONES in ipam/kea/kea.conf")


CHECKS: dict[str, tuple[set[str], Check]] = {
    "remotes": ({"frontend", "host"}, remotes),
    "registration": ({"frontend"}, registration),
    "oned": ({"frontend"}, oned_and_datastores),
    "ipam": ({"frontend"}, kea_ipam),
    "libvirt": ({"host"}, libvirt_and_emulator),
    "ovs": ({"host"}, open_vswitch),
}


def diagnose(node: Node) -> list[Problem | Note]:
    out: list[Problem | Note] = []
    for name, (roles, check) in CHECKS.items():
        if node.role in roles and name not in node.skip:
            out.extend(check(node))
    return out


def default_node(role: str, remotes: str | None, skip: set[str], timeout: float) -> Node:
    location = os.environ.get("ONE_LOCATION")
    etc = Path(location) / "etc" if location else Path("/etc/one")
    where = remotes or os.environ.get("ONE_DRIVERS_REMOTES") or (
        f"{location}/var/remotes" if location and role == "frontend" else
        DEFAULT_REMOTES if role == "frontend" else "/var/tmp/one")
    return Node(role, Path(where), etc, timeout, frozenset(skip))
