"""The host side every ``ovsdb`` action shares: settings, the OVSDB connection, applying a set of
NICs (OVSDB, then one OpenFlow bundle per bridge), removing NICs, and the per-VM state file that
``one-drivers ovs reconcile`` replays after an Open vSwitch restart."""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from one_drivers.core import log
from one_drivers.core.atomic import write_atomic
from one_drivers.core.config import Settings
from one_drivers.core.errors import ActionFailed
from one_drivers.core.safefs import open_trusted_dir
from one_drivers.ovs import flows
from one_drivers.ovs.ofctl import OpenFlow, run_dir
from one_drivers.ovs.spec import PortSpec

if TYPE_CHECKING:
    from one_drivers.ovs.ovsdb import Ovsdb, PortState

DRIVER = "ovsdb"
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_STATE_DIR = "/var/lib/one/one-drivers/vnm"
ROOT_STATE_DIR = "/var/lib/one-drivers/vnm"  # root's: never under oneadmin's home


def default_state_dir() -> str:
    return ROOT_STATE_DIR if os.geteuid() == 0 else DEFAULT_STATE_DIR


def resolved(settings: Settings) -> Settings:
    """Settings with the environment defaults the lab (and tests) use filled in."""
    env = {"OVSDB": os.environ.get("ONE_DRIVERS_OVSDB") or DEFAULT_OVSDB,
           "DATAPATH_TYPE": os.environ.get("ONE_DRIVERS_OVS_DATAPATH_TYPE") or "system",
           "STATE_DIR": os.environ.get("ONE_DRIVERS_VNM_STATE_DIR") or default_state_dir()}
    return settings.over({k: v for k, v in env.items() if not settings.get(k)})


class Host:
    """This hypervisor's Open vSwitch, for one action."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint = settings.get("OVSDB") or DEFAULT_OVSDB
        self.openflow = OpenFlow(run_dir(self.endpoint, settings.get("OVS_RUNDIR")),
                                 settings.float("OPENFLOW_TIMEOUT", 10))
        self._db: Ovsdb | None = None

    @property
    def db(self) -> Ovsdb:
        if self._db is None:
            from one_drivers.ovs.ovsdb import Ovsdb  # ovsdbapp: ~60 ms, only when needed

            self._db = Ovsdb(self.endpoint, self.settings.float("OVSDB_TIMEOUT", 10))
        return self._db

    def apply(self, specs: list[PortSpec], *, require_tap: bool,
              exclusive_phydev: bool = False, exact_group: bool = False
              ) -> dict[str, PortState]:
        """Ports first (their OpenFlow numbers are requested, so flows can be written before the
        tap exists), then each bridge's flows in one bundle: a NIC is never on a bridge without
        its VLAN settings and filters, not even between libvirt plugging the tap and ``post``."""
        if not specs:
            return {}
        states = self.db.apply(specs, exclusive_phydev=exclusive_phydev)
        if require_tap:
            missing = [s.target for s in specs if states[s.target].ofport < 0]
            if missing:
                raise ActionFailed(f"no tap device {', '.join(missing)} on this host",
                                   hint="is the VM running here? `post` runs after deploy")
        self.write_flows(specs, states, exact_group=exact_group)
        return states

    def write_flows(self, specs: Iterable[PortSpec], states: dict[str, PortState], *,
                    exact_group: bool = False) -> None:
        """Each bridge's NIC flows, its skeleton and its flood group in one bundle, under the
        bridge's lock (the group is shared: read, changed and written by one action at a
        time); then NORMAL's flooding off for protected ports, on for the others.
        ``exact_group``: the specs are every protected NIC of the bridge (reconcile)."""
        per_bridge: dict[str, list[PortSpec]] = defaultdict(list)
        for spec in specs:
            per_bridge[spec.bridge].append(spec)
        for bridge, group in per_bridge.items():
            deletes: list[tuple[int, int]] = []
            ports: list[int] = []
            protected: set[int] = set()
            adds = [(flows.SKELETON_COOKIE, f)
                    for f in flows.skeleton(self.db.foreign_access_ports(bridge))]
            for spec in group:
                state = states[spec.target]
                cookie = flows.nic_cookie(spec.vm_id, spec.nic_id)
                deletes.append((cookie, flows.NIC_MASK))
                ports.append(state.openflow_port)
                if flows.filtered(spec):
                    protected.add(state.openflow_port)
                adds += [(cookie, f) for f in flows.nic_flows(spec, state.openflow_port,
                                                              state.zone)]
            with self.bridge_lock(bridge) as members:
                current = set() if exact_group else members.read()
                wanted = (current - set(ports)) | protected
                self.openflow.apply(bridge, flows.bundle(deletes, adds, ports,
                                                         [flows.flood_group(wanted)]))
                members.write(wanted)
            live = {states[s.target].openflow_port for s in group if states[s.target].ofport > 0}
            self.openflow.set_flooding(bridge, sorted(live & protected), flood=False)
            self.openflow.set_flooding(bridge, sorted((live - protected) & current), flood=True)

    @contextlib.contextmanager
    def bridge_lock(self, bridge: str) -> Iterator[GroupMembers]:
        """One action at a time changes a bridge's shared flood group: an flock on a file in
        the state directory (private to its writer) that also lists the group's ports."""
        import fcntl
        import time

        dfd = open_trusted_dir(state_file(self.settings).directory, private=True,
                               create_mode=0o700)
        try:
            fd = os.open(f".bridge-{bridge}.group",
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
        finally:
            os.close(dfd)
        try:
            until = time.monotonic() + self.settings.float("OPENFLOW_TIMEOUT", 10)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > until:
                        raise ActionFailed(f"bridge {bridge} is being changed by another "
                                           "action for too long", hint="retry") from None
                    time.sleep(0.01)
            yield GroupMembers(fd)
        finally:
            os.close(fd)

    def remove(self, owners: Iterable[tuple[int, int, str]], *, bridges: Iterable[str] = ()
               ) -> list[str]:
        """Remove NICs given as (VM id, NIC id, port name): flows first (so a port number that
        is later reused never meets old rules), then ports, QoS rows and emptied bridges."""
        owners, bridges = list(owners), set(bridges)
        targets = {name for _, _, name in owners}
        owned = {s.target: s for s in self.db.owned_ports()}
        where = {t: s.bridge for t, s in owned.items()}
        existing = self.db.bridges()
        for bridge in sorted({where.get(t, "") for t in targets} | bridges):
            if bridge in existing:
                gone = {owned[t].openflow_port for t in targets
                        if t in owned and owned[t].bridge == bridge}
                with self.bridge_lock(bridge) as members:
                    wanted = members.read() - gone
                    self.openflow.apply(bridge, flows.bundle(
                        [(flows.nic_cookie(vm, nic), flows.NIC_MASK) for vm, nic, _ in owners],
                        [], groups=[flows.flood_group(wanted)]))
                    members.write(wanted)
        removed = self.db.remove(targets, bridges=bridges, keep_empty_bridges=self.settings.bool(
            "KEEP_EMPTY_BRIDGE", False))
        for bridge in removed:
            log.info(f"removed bridge {bridge}: no VM uses it any more")
        return removed


class GroupMembers(NamedTuple):
    """The ports of a bridge's flood group, as the last action under its lock left them."""

    fd: int

    def read(self) -> set[int]:
        os.lseek(self.fd, 0, os.SEEK_SET)
        text = os.read(self.fd, 1 << 20).decode(errors="replace")
        return {int(p) for p in text.split() if p.isascii() and p.isdigit()}

    def write(self, ports: set[int]) -> None:
        data = " ".join(str(p) for p in sorted(ports)).encode() + b"\n"
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, data)
        os.ftruncate(self.fd, len(data))


def tap_exists(name: str) -> bool:
    return os.path.exists(os.path.join("/sys/class/net", name))


class StateFile(NamedTuple):
    """``<STATE_DIR>/vm-<id>.xml``: the VM document of the last successful pre/post/update.
    The directory is its writer's own (mode 0700, checked on every access): root replays these
    documents, so nobody else may plant or swap one."""

    directory: str

    def path(self, vm_id: int) -> str:
        return os.path.join(self.directory, f"vm-{vm_id}.xml")

    def save(self, vm_id: int, xml: bytes) -> None:
        write_atomic(self.path(vm_id), xml, mode=0o600, private=True, create_dirs=True)

    def drop(self, vm_id: int) -> None:
        try:
            dfd = open_trusted_dir(self.directory, private=True)
        except FileNotFoundError:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"vm-{vm_id}.xml", dir_fd=dfd)
        finally:
            os.close(dfd)

    def load_all(self) -> dict[int, bytes]:
        return {vm_id: saved.document for vm_id, saved in self.saved().items()}

    def saved(self) -> dict[int, Saved]:
        """Every saved document with the time it was written."""
        out: dict[int, Saved] = {}
        try:
            dfd = open_trusted_dir(self.directory, private=True)
        except FileNotFoundError:
            return out
        try:
            for name in os.listdir(dfd):
                if name.startswith("vm-") and name.endswith(".xml") and name[3:-4].isdigit():
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                    with os.fdopen(fd, "rb") as fh:
                        out[int(name[3:-4])] = Saved(fh.read(), os.fstat(fh.fileno()).st_mtime)
        finally:
            os.close(dfd)
        return out


class Saved(NamedTuple):
    document: bytes
    mtime: float


def state_file(settings: Settings) -> StateFile:
    return StateFile(settings.get("STATE_DIR") or default_state_dir())
