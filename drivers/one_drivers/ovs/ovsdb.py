"""OVSDB through ovsdbapp (imported only when an action reaches OVSDB): one connection per
process with only the tables we use, and each action's changes as one transaction (ovsdbapp
re-runs it when a concurrent writer got there first, so creating a bridge, picking an OpenFlow
port number or a conntrack zone never races).

What we create is marked: bridges and PHYDEV ports with ``one-drivers-owner``, NIC ports also with
the VM and NIC ids, QoS rows with the port they belong to. Removal only ever touches marked rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from one_drivers.core.errors import ActionFailed, BackendTimeout, BackendUnavailable, BadInput
from one_drivers.core.retry import call_with_timeout
from one_drivers.ovs.pbr_shortcut import without_pbr_version_lookup
from one_drivers.ovs.spec import PortSpec

with without_pbr_version_lookup():
    from ovsdbapp.backend.ovs_idl import connection
    from ovsdbapp.backend.ovs_idl.command import BaseCommand
    from ovsdbapp.schema.open_vswitch import impl_idl

TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface", "QoS")
OWNER, VM, NIC, MAC, ZONE = ("one-drivers-owner", "one-drivers-vm", "one-drivers-nic",
                             "one-drivers-mac", "one-drivers-zone")
OWNER_VALUE = "vnm-ovsdb"
QOS_PORT = "one-drivers-port"
ZONE_SEQ = "one-drivers-zone-seq"  # written when a zone is taken: serialises allocations
MAX_ZONE = 65535
MAX_OFPORT = 65279


class PortState(NamedTuple):
    target: str
    bridge: str
    vm_id: int
    nic_id: int
    ofport: int  # -1 while the tap does not exist
    ofport_request: int
    zone: int

    @property
    def openflow_port(self) -> int:
        """The port's OpenFlow number: assigned, or the one it will get when its tap appears."""
        return self.ofport if self.ofport > 0 else self.ofport_request


def _one(value: Any) -> Any:
    """An optional OVSDB column's value (the IDL gives lists)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


class Ovsdb:
    """``Ovsdb(endpoint, timeout)``; the connection lives as long as the process."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        for name in ("ovsdbapp", "ovs"):  # their tracebacks go to our log, never to stderr
            logger = logging.getLogger(name)
            logger.propagate = False
            if not logger.handlers:
                logger.addHandler(_ToDriverLog())
        def connect() -> Any:
            idl = connection.OvsdbIdl.from_server(endpoint, "Open_vSwitch",
                                                  helper_tables=TABLES)
            conn = connection.Connection(idl=idl, timeout=max(1, int(timeout)))
            return impl_idl.OvsdbIdl(conn)

        try:
            # fetching the schema waits for the server without a limit of its own: a hung
            # (SIGSTOPped) ovsdb-server must cost OVSDB_TIMEOUT, not forever. The thread left
            # behind on a timeout ends with this short-lived process.
            self.api = call_with_timeout(connect, timeout=timeout,
                                         what=f"OVSDB at {endpoint}")
        except BackendTimeout:
            raise
        except Exception as exc:  # ovsdbapp raises bare Exception on connect timeouts
            raise BackendUnavailable(f"cannot reach OVSDB at {endpoint} ({_reason(exc)})",
                                     hint="is ovsdb-server running, and may this user "
                                          "use its socket?") from None

    # -- reads --------------------------------------------------------------------------------
    def rows(self, table: str) -> list[Any]:
        return list(self.api.tables[table].rows.values())

    def owned_ports(self) -> list[PortState]:
        """Every NIC port we created, with its bridge, OpenFlow port and conntrack zone."""
        bridge_of = {p.uuid: b.name for b in self.rows("Bridge") for p in b.ports}
        out = []
        for port in self.rows("Port"):
            ids = port.external_ids
            if ids.get(OWNER) != OWNER_VALUE or VM not in ids:
                continue
            iface = port.interfaces[0] if port.interfaces else None
            ofport = _one(iface.ofport) if iface is not None else None
            request = _one(iface.ofport_request) if iface is not None else None
            out.append(PortState(port.name, bridge_of.get(port.uuid, ""), int(ids[VM]),
                                 int(ids[NIC]), ofport if ofport and ofport > 0 else -1,
                                 request or -1, int(ids.get(ZONE, 0))))
        return out

    def bridges(self) -> set[str]:
        return {b.name for b in self.rows("Bridge")}

    def foreign_access_ports(self, bridge: str) -> list[tuple[int, int]]:
        """(OpenFlow port, VLAN) of the access ports on ``bridge`` that are not ours (an
        operator's router or service port): their frames' VLAN is known to the gates."""
        out = []
        for b in self.rows("Bridge"):
            if b.name != bridge:
                continue
            for port in b.ports:
                tag = _one(port.tag)
                if port.external_ids.get(OWNER) == OWNER_VALUE or tag is None or \
                        _one(port.vlan_mode) not in (None, "access"):
                    continue
                for iface in port.interfaces:
                    ofport = _one(iface.ofport)
                    if ofport and ofport > 0:
                        out.append((int(ofport), int(tag)))
        return out

    # -- writes -------------------------------------------------------------------------------
    def _commit(self, command: Any, what: str) -> None:
        try:
            with self.api.transaction(check_error=True) as txn:
                txn.add(command)
        except BadInput:
            raise
        except Exception as exc:
            if "timeout" in type(exc).__name__.lower() or "timed out" in str(exc).lower():
                raise BackendTimeout(f"OVSDB transaction to {what} took over "
                                     f"{self.timeout:g} s") from None
            raise ActionFailed(f"OVSDB transaction to {what} failed ({_reason(exc)}); "
                               "nothing was changed") from None

    def apply(self, specs: list[PortSpec], *, exclusive_phydev: bool = False
              ) -> dict[str, PortState]:
        """Bridges, PHYDEV ports and NIC ports (VLANs, MTU, QoS, marks) as ``specs`` say, in one
        transaction; returns each NIC port's state once ovs-vswitchd has applied it.
        ``exclusive_phydev``: a changed PHYDEV replaces the one we added before (update_nic)."""
        self._commit(_ApplyPorts(self.api, specs, exclusive_phydev), "configure "
                     + ", ".join(s.target for s in specs))
        states = {s.target: s for s in self.owned_ports()}
        return {spec.target: states[spec.target] for spec in specs}

    def remove(self, targets: Iterable[str], *, keep_empty_bridges: bool,
               bridges: Iterable[str] = ()) -> list[str]:
        """Delete our ports named ``targets`` (and their QoS rows), then the bridges we created
        that hold nothing else any more: those the ports were on and ``bridges`` (all of ours
        when both are empty). Returns the bridges removed."""
        cmd = _RemovePorts(self.api, set(targets), keep_empty_bridges, set(bridges))
        self._commit(cmd, "remove " + (", ".join(sorted(targets)) or "empty bridges"))
        return cmd.removed_bridges


class _ToDriverLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from one_drivers.core import log

        log.write_log("DEBUG", f"{record.name}: {record.getMessage()}")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class _ApplyPorts(BaseCommand):  # type: ignore[misc]
    def __init__(self, api: Any, specs: list[PortSpec], exclusive_phydev: bool) -> None:
        super().__init__(api)
        self.specs = specs
        self.exclusive_phydev = exclusive_phydev

    def run_idl(self, txn: Any) -> None:
        t = self.api.tables
        root = next(iter(t["Open_vSwitch"].rows.values()))
        bridges = {b.name: b for b in t["Bridge"].rows.values()}
        ports = {p.name: p for p in t["Port"].rows.values()}
        port_bridge = {p.uuid: b for b in bridges.values() for p in b.ports}
        zones = {int(p.external_ids[ZONE]) for p in ports.values() if ZONE in p.external_ids}
        for spec in self.specs:
            br = bridges.get(spec.bridge)
            if br is None:
                br = bridges[spec.bridge] = self._bridge(txn, root, spec)
            _set_columns(t["Bridge"], br, spec.bridge_conf, f"{spec.label} OVS_BRIDGE_CONF")
            if spec.phydev and spec.phydev not in ports:
                ports[spec.phydev] = self._port(txn, br, spec.phydev, {OWNER: OWNER_VALUE})
            if self.exclusive_phydev:
                for old in list(br.ports):
                    ids = old.external_ids
                    if (ids.get(OWNER) == OWNER_VALUE and VM not in ids
                            and old.name != spec.phydev):
                        ports.pop(old.name, None)
                        br.verify("ports")
                        br.delvalue("ports", old)
                        old.delete()
            port = ports.get(spec.target)
            old_br = port_bridge.get(port.uuid) if port is not None else None
            if port is not None and old_br is not None and old_br.name != spec.bridge:
                old_br.verify("ports")  # moving to another bridge (update_nic): delete + add
                old_br.delvalue("ports", port)
                port.delete()
                port = None
            if port is None:
                port = ports[spec.target] = self._port(txn, br, spec.target, {})
            self._check_mac(spec, port, ports, port_bridge, br)
            zone = port.external_ids.get(ZONE)
            if zone is None:
                zone = _free(zones, 1, MAX_ZONE, "conntrack zones")
                zones.add(zone)
                root.verify("external_ids")
                root.setkey("external_ids", ZONE_SEQ, str(zone))
            self._configure(txn, root, port, spec, int(zone))

    def _bridge(self, txn: Any, root: Any, spec: PortSpec) -> Any:
        t = self.api.tables
        root.verify("bridges")  # two VMs creating the same bridge: one retries and finds it
        br = txn.insert(t["Bridge"])
        br.name = spec.bridge
        br.datapath_type = spec.datapath_type
        br.external_ids = {OWNER: OWNER_VALUE}
        iface = txn.insert(t["Interface"])
        iface.name = spec.bridge
        iface.type = "internal"
        port = txn.insert(t["Port"])
        port.name = spec.bridge
        port.interfaces = [iface]
        br.ports = [port]
        root.addvalue("bridges", br)
        return br

    def _port(self, txn: Any, br: Any, name: str, external_ids: dict[str, str]) -> Any:
        t = self.api.tables
        br.verify("ports")  # OpenFlow port numbers are picked per bridge: serialise
        taken: set[int] = set()
        for p in br.ports:
            for i in p.interfaces:
                taken.update(n for n in (_one(getattr(i, "ofport", None)),
                                         _one(getattr(i, "ofport_request", None))) if n)
        iface = txn.insert(t["Interface"])
        iface.name = name
        iface.ofport_request = _free(taken, 1, MAX_OFPORT, f"OpenFlow ports of {br.name}")
        port = txn.insert(t["Port"])
        port.name = name
        port.interfaces = [iface]
        port.external_ids = external_ids
        port.other_config = {}  # columns of a new row read back only once written
        port.qos = []
        br.addvalue("ports", port)
        return port

    @staticmethod
    def _check_mac(spec: PortSpec, port: Any, ports: dict[str, Any],
                   port_bridge: dict[Any, Any], br: Any) -> None:
        """Inbound security groups pick a NIC's traffic by destination MAC: two NICs of
        different VMs with one MAC on one bridge would share (and clobber) those flows."""
        if spec.rules is None:
            return
        for other in ports.values():
            ids = other.external_ids
            if (other is not port and ids.get(MAC) == spec.mac and ids.get(VM) != str(spec.vm_id)
                    and port_bridge.get(other.uuid) is br):
                raise BadInput(f"NIC {spec.nic_id}: MAC {spec.mac} is also VM {ids.get(VM)} NIC "
                               f"{ids.get(NIC)}'s on bridge {spec.bridge}",
                               hint="security groups need MACs unique per bridge")

    def _configure(self, txn: Any, root: Any, port: Any, spec: PortSpec, zone: int) -> None:
        port.tag = [spec.tag] if spec.tag is not None else []
        port.vlan_mode = [spec.vlan_mode]
        port.trunks = list(spec.trunks)
        port.cvlans = list(spec.cvlans)
        if spec.cvlans:
            port.setkey("other_config", "qinq-ethtype", spec.qinq_type)
            if root.other_config.get("vlan-limit", "1") not in ("0", "2"):
                root.setkey("other_config", "vlan-limit", "2")  # QinQ needs two tags
        elif "qinq-ethtype" in port.other_config:
            port.delkey("other_config", "qinq-ethtype")
        for key, value in ((OWNER, OWNER_VALUE), (VM, str(spec.vm_id)),
                           (NIC, str(spec.nic_id)), (MAC, spec.mac), (ZONE, str(zone))):
            if port.external_ids.get(key) != value:
                port.setkey("external_ids", key, value)
        iface = port.interfaces[0]
        iface.mtu_request = [spec.mtu] if spec.mtu else []
        out = spec.outbound  # from the VM = into the switch: ingress policing, in kbit
        iface.ingress_policing_rate = out.average * 8 if out else 0
        iface.ingress_policing_burst = (out.burst or 0) * 8 if out else 0
        self._qos(txn, port, spec)

    def _qos(self, txn: Any, port: Any, spec: PortSpec) -> None:
        """Traffic to the VM shaped by a linux-htb QoS row of our own (OpenNebula's KB/s)."""
        current = _one(port.qos)
        ours = current is not None and current.external_ids.get(QOS_PORT) == spec.target
        if spec.inbound is None:
            if ours:
                port.qos = []
                current.delete()
            return
        rate = str((spec.inbound.peak or spec.inbound.average) * 8000)
        config = {"max-rate": rate}
        if spec.inbound.burst:
            config["burst"] = str(spec.inbound.burst * 8000)
        if not ours:
            current = txn.insert(self.api.tables["QoS"])
            current.external_ids = {OWNER: OWNER_VALUE, QOS_PORT: spec.target}
            port.qos = [current]
        current.type = "linux-htb"
        if dict(getattr(current, "other_config", {})) != config:
            current.other_config = config


class _RemovePorts(BaseCommand):  # type: ignore[misc]
    def __init__(self, api: Any, targets: set[str], keep_empty: bool, bridges: set[str]
                 ) -> None:
        super().__init__(api)
        self.targets = targets
        self.keep_empty = keep_empty
        self.bridges = bridges
        self.removed_bridges: list[str] = []

    def run_idl(self, txn: Any) -> None:
        t = self.api.tables
        self.removed_bridges = []
        root = next(iter(t["Open_vSwitch"].rows.values()))
        for qos in list(t["QoS"].rows.values()):  # libvirt may have deleted the port already
            if qos.external_ids.get(QOS_PORT) in self.targets:
                for p in t["Port"].rows.values():
                    if _one(p.qos) is qos:
                        p.qos = []
                qos.delete()
        touched = []
        for br in t["Bridge"].rows.values():
            for port in list(br.ports):
                if port.name in self.targets and port.external_ids.get(OWNER) == OWNER_VALUE:
                    br.verify("ports")
                    br.delvalue("ports", port)
                    port.delete()
                    if br not in touched:
                        touched.append(br)
        if self.keep_empty:
            return
        candidates = [br for br in t["Bridge"].rows.values()
                      if not (self.targets or self.bridges) or br in touched
                      or br.name in self.bridges]
        for br in candidates:
            if br.external_ids.get(OWNER) != OWNER_VALUE:
                continue
            left = [p for p in br.ports if p.name != br.name and p.name not in self.targets
                    and not (p.external_ids.get(OWNER) == OWNER_VALUE and VM not in p.external_ids)]
            if left:
                continue
            name = br.name  # a deleted row cannot be read any more
            br.verify("ports")  # a VM adding a port meanwhile makes this transaction retry
            root.verify("bridges")
            root.delvalue("bridges", br)
            br.delete()
            self.removed_bridges.append(name)


def _free(taken: set[int], lo: int, hi: int, what: str) -> int:
    for n in range(lo, hi + 1):
        if n not in taken:
            return n
    raise ActionFailed(f"no free {what} left")


def _set_columns(table: Any, row: Any, pairs: Iterable[tuple[str, str]], where: str) -> None:
    """``column=value`` or ``column:key=value`` (OVS_BRIDGE_CONF), typed by the schema."""
    for name, raw in pairs:
        column, _, key = name.partition(":")
        col = table.columns.get(column)
        if col is None:
            raise BadInput(f"{where}: Bridge has no column {column!r}")
        if key:
            if not col.type.is_map():
                raise BadInput(f"{where}: {column} is not a map column")
            if getattr(row, column, {}).get(key) != raw:
                row.setkey(column, key, raw)
            continue
        value = _atom(col.type.key.type.name, raw, f"{where}: {name}")
        current = getattr(row, column, None)  # a row new in this transaction has no value yet
        wanted: Any = value if col.type.n_max == 1 and col.type.n_min == 1 else [value]
        if current != wanted:
            setattr(row, column, wanted)


def _atom(kind: str, raw: str, where: str) -> Any:
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise BadInput(f"{where}: {raw!r} is not an integer") from None
    if kind == "boolean":
        if raw.lower() not in ("true", "false"):
            raise BadInput(f"{where}: {raw!r} is not true or false")
        return raw.lower() == "true"
    if kind == "string":
        return raw
    raise BadInput(f"{where}: columns of type {kind} cannot be set here")
