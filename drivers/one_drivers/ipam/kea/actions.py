"""``ipam/kea/*``: oned's address ranges as Kea subnets, its addresses as Kea leases (and DNS).

- register_address_range: the AR becomes a Kea subnet (the AR's addresses its pool; gateway, DNS
  servers, MTU and search domains its options; leases that never expire) and the answer gives
  oned the range with KEA_SUBNET_ID, by which later calls find it. A re-run finds the subnet it
  made (by the AR's network and range) instead of making a second.
- get_address: the lowest run of free addresses of the AR (free in Kea), leased in Kea to the MACs
  oned will give them; allocate_address: the addresses oned chose, leased the same way (already
  leased to that MAC: nothing to do; to another: refused). Both publish A/PTR records when the AR
  was registered with a DNS_ZONE.
- free_address: the lease and the records go, only while the lease is still that MAC's.
- unregister_address_range: the subnet goes, refused while Kea holds leases in it.

Every subnet and lease is marked as ours in its user-context; KEA_SUBNET_ID is only believed when
the subnet it names carries our mark for exactly this AR's range. A failure undoes what the same
call made, so nothing is left half-reserved.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from typing import Any

from one_drivers.core import log
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.errors import (
    ActionFailed,
    BackendTimeout,
    BadInput,
    NotFound,
    PermissionDenied,
)
from one_drivers.core.retry import Deadline
from one_drivers.core.xmlview import Template
from one_drivers.ipam.kea.kea import INFINITE, OWNER, Kea, ours, subnets
from one_drivers.ipam.kea.ranges import (
    AddressRange,
    address_answer,
    ip_int,
    ip_text,
    mac_at,
    mac_int,
    mac_text,
)


def _data(call: Call) -> tuple[AddressRange, Template | None]:
    doc = call.doc
    ar = AddressRange(doc.address_range, registering=call.action == "register_address_range")
    return ar, doc.child("ADDRESS", Template, required=False)


@contextlib.contextmanager
def locked(settings: Settings, deadline: Deadline) -> Iterator[None]:
    """One driver process at a time changes Kea (oned sends one IPAM call at a time, but
    ``one-drivers ipam reconcile`` may run beside it): an flock in the driver user's private
    directory, waited for within the deadline."""
    from one_drivers.core.safefs import open_trusted_dir

    folder = os.path.expanduser(settings.get("STATE_DIR") or "~/.one-drivers/ipam")
    dfd = open_trusted_dir(folder, create_mode=0o700, private=True)
    try:
        fd = os.open("kea.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dfd)
    finally:
        os.close(dfd)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline.remaining() < 0.05:
                    raise BackendTimeout("another IPAM call kept the kea driver's lock "
                                         "past the deadline") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def _mark(ar: AddressRange) -> dict[str, Any]:
    return {"ip": ip_text(ar.first), "size": ar.size, **({"zone": ar.zone} if ar.zone else {})}


def _same_range(mark: dict[str, Any], ar: AddressRange) -> bool:
    return mark.get("ip") == ip_text(ar.first) and mark.get("size") == ar.size


def _subnet_for(config: dict[str, Any], ar: AddressRange) -> dict[str, Any] | None:
    """The subnet this AR's calls may act on: KEA_SUBNET_ID's, only when it is ours and made
    for this very range (an AR's attributes are its vnet owner's to edit)."""
    for subnet in subnets(config):
        if subnet.get("id") == ar.subnet_id:
            mark = ours(subnet)
            if mark is None or not _same_range(mark, ar) or \
                    subnet.get("subnet") != str(ar.network):
                raise PermissionDenied(f"Kea subnet {ar.subnet_id} was not made by the kea IPAM "
                                       f"for the AR {ip_text(ar.first)} + {ar.size}")
            return subnet
    return None


def _subnet_spec(ar: AddressRange, subnet_id: int, settings: Settings) -> dict[str, Any]:
    options: list[dict[str, Any]] = []
    if ar.gateway is not None:
        options.append({"name": "routers", "data": ip_text(ar.gateway)})
    if ar.dns:
        options.append({"name": "domain-name-servers",
                        "data": ", ".join(ip_text(d) for d in ar.dns)})
    if ar.mtu:
        options.append({"name": "interface-mtu", "data": str(ar.mtu)})
    if ar.search:
        options.append({"name": "domain-name", "data": ar.search[0].rstrip(".")})
        options.append({"name": "domain-search", "data": ", ".join(ar.search)})
    lifetime = settings.int("LEASE_LIFETIME", INFINITE)
    spec: dict[str, Any] = {
        "id": subnet_id, "subnet": str(ar.network),
        "pools": [{"pool": f"{ip_text(ar.first)} - {ip_text(ar.last)}"}],
        # a VM keeps its address as long as oned leases it: Kea must never take it back
        "valid-lifetime": lifetime, "min-valid-lifetime": lifetime,
        "max-valid-lifetime": lifetime,
        # the MAC is the NIC's identity in oned: a guest's client id must not change the answer
        "match-client-id": False,
        "option-data": options,
        "user-context": {OWNER: _mark(ar)},
    }
    interface = settings.get("KEA_INTERFACE")
    if interface:  # a server on several segments: which one this subnet is on
        spec["interface"] = interface
    return spec


# -- register / unregister --------------------------------------------------------------------


def register_address_range(call: Call) -> str:
    ar, _ = _data(call)
    settings = call.settings
    if ar.zone:
        from one_drivers.ipam.kea.pdns import PowerDns

        PowerDns(settings, call.deadline).check_zone(ar.zone)
    kea = Kea(settings, call.deadline)
    with locked(settings, call.deadline):
        config = kea.config()
        existing = subnets(config)
        for subnet in existing:
            mark = ours(subnet)
            if subnet.get("subnet") == str(ar.network):
                if mark is not None and _same_range(mark, ar):
                    log.info(f"Kea subnet {subnet['id']} is this AR's already")
                    return ar.answer(int(subnet["id"]))
                owner = "another AR's" if mark is not None else "not made by the kea IPAM"
                raise ActionFailed(f"Kea has subnet {ar.network} already (id {subnet.get('id')}, "
                                   f"{owner})", hint="one Kea subnet per network: one AR each")
            if _overlaps(str(subnet.get("subnet", "")), ar):
                raise ActionFailed(f"{ar.network} overlaps Kea subnet {subnet.get('subnet')} "
                                   f"(id {subnet.get('id')})")
        subnet_id = max((int(s.get("id", 0)) for s in existing), default=0) + 1
        before = copied(config)
        config["Dhcp4"].setdefault("subnet4", []).append(_subnet_spec(ar, subnet_id, settings))
        kea.apply(config, before)
    log.info(f"Kea subnet {subnet_id}: {ar.network}, pool {ip_text(ar.first)} - "
             f"{ip_text(ar.last)}")
    return ar.answer(subnet_id)


def _overlaps(prefix: str, ar: AddressRange) -> bool:
    import ipaddress

    try:
        return ipaddress.IPv4Network(prefix).overlaps(ar.network)
    except ValueError:
        return False


def copied(config: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(config))  # type: ignore[no-any-return]


def unregister_address_range(call: Call) -> None:
    ar, _ = _data(call)
    kea = Kea(call.settings, call.deadline)
    with locked(call.settings, call.deadline):
        config = kea.config()
        if ar.subnet_id is None:
            log.info("the AR names no Kea subnet: nothing to remove")
            return
        subnet = _subnet_for(config, ar)
        if subnet is None:
            log.info(f"Kea subnet {ar.subnet_id} is gone already")
            return
        held = kea.leases(ar.subnet_id)
        if held:
            shown = ", ".join(f"{lease.get('ip-address')} ({lease.get('hw-address')})"
                              for lease in held[:5])
            raise ActionFailed(f"Kea subnet {ar.subnet_id} still holds {len(held)} lease(s): "
                               f"{shown}", hint="free them, or run `one-drivers ipam reconcile "
                               "--fix` (it removes leases and subnets oned no longer has)")
        before = copied(config)
        remove_subnet(config, ar.subnet_id)
        kea.apply(config, before)
    log.info(f"Kea subnet {ar.subnet_id} removed")


def fence(kea: Kea, config: dict[str, Any], subnet: dict[str, Any], ar: AddressRange) -> None:
    """Keep strangers out of the subnet's pool: without this, any client on the segment would
    get a free address of the AR for good (the leases never expire), one oned may give a VM
    next. Only MACs that share the bytes the AR's first and last MAC share get an address
    (oned's MACs of the AR all do; a VM's own lease is renewed, as it is in the pool). Made at
    the first address call: oned gives the AR its MAC only after registering it."""
    subnet_id = int(subnet["id"])
    test = ar.mac_fence()
    if test is None:
        return  # an AR across the first byte of the MAC: nothing to fence with
    before = copied(config)
    name = class_name(subnet_id)
    classes = [c for c in config["Dhcp4"].get("client-classes") or [] if c.get("name") != name]
    classes.append({"name": name, "test": test, "user-context": {OWNER: {"subnet": subnet_id}}})
    config["Dhcp4"]["client-classes"] = classes
    for pool in subnet["pools"]:
        pool["client-class"] = name
    kea.apply(config, before)
    log.info(f"Kea subnet {subnet_id} serves only MACs where {test}")


def class_name(subnet_id: int) -> str:
    return f"one-drivers-subnet-{subnet_id}"


def remove_subnet(config: dict[str, Any], subnet_id: int) -> None:
    """The subnet and the client class that fences its pool."""
    dhcp4 = config["Dhcp4"]
    if dhcp4.get("client-classes"):
        dhcp4["client-classes"] = [c for c in dhcp4["client-classes"]
                                   if c.get("name") != class_name(subnet_id)]
    for holder in [dhcp4, *(dhcp4.get("shared-networks") or [])]:
        if "subnet4" in holder:
            holder["subnet4"] = [s for s in holder["subnet4"] if s.get("id") != subnet_id]


# -- addresses --------------------------------------------------------------------------------


class Leasing:
    """The leases (and records) one call makes, undone together if the call fails."""

    def __init__(self, call: Call, ar: AddressRange, kea: Kea) -> None:
        self.ar, self.kea, self.call = ar, kea, call
        self.zone: str | None = None
        self.dns: Any = None
        self.made: list[int] = []  # leases this call added (what undo removes)
        self.covered: list[int] = []  # every address of the call (what publish names)

    def open(self, config: dict[str, Any]) -> None:
        if self.ar.subnet_id is None:
            raise BadInput("the AR has no KEA_SUBNET_ID",
                           hint="it was not registered by the kea IPAM")
        subnet = _subnet_for(config, self.ar)
        if subnet is None:
            raise NotFound(f"Kea has no subnet {self.ar.subnet_id} (the AR's KEA_SUBNET_ID)",
                           hint="`one-drivers ipam reconcile` shows what oned and Kea disagree on")
        if self.ar.mac is not None and not all(p.get("client-class") for p in subnet["pools"]):
            fence(self.kea, config, subnet, self.ar)
        self.zone = (ours(subnet) or {}).get("zone")  # the zone set at registration, not the AR's
        if self.zone:
            from one_drivers.ipam.kea.pdns import PowerDns

            self.dns = PowerDns(self.call.settings, self.call.deadline)

    def lease(self, ip: int, mac: int) -> bool:
        """Lease ``ip`` to ``mac``: True when made now, False when that MAC holds it already;
        ActionFailed when another does."""
        hostname = None
        if self.zone:
            from one_drivers.ipam.kea.pdns import host_name

            hostname = host_name(ip, self.zone, self.dns.prefix).rstrip(".")
        record = lease_record(self.ar, ip, mac, self.call.settings, hostname)
        self.covered.append(ip)
        if self.kea.add_lease(record):
            self.made.append(ip)
            return True
        held = self.kea.lease(ip_text(ip)) or {}
        if _mac_of(held) == mac:
            return False
        raise InUse(ip, held)

    def publish(self) -> None:
        if self.dns is not None:
            for ip in self.covered:  # a re-run publishes what a crash left unpublished
                self.dns.publish(ip, self.zone)

    def undo(self) -> None:
        for ip in self.made:
            with contextlib.suppress(Exception):
                if self.dns is not None:
                    self.dns.withdraw(ip, self.zone)
            with contextlib.suppress(Exception):
                self.kea.delete_lease(ip_text(ip))
        self.made, self.covered = [], []


def lease_record(ar: AddressRange, ip: int, mac: int, settings: Settings,
                 hostname: str | None = None) -> dict[str, Any]:
    """The lease4-add arguments of a lease the driver makes (its mark included)."""
    record: dict[str, Any] = {"ip-address": ip_text(ip), "hw-address": mac_text(mac),
                              "subnet-id": ar.subnet_id,
                              "valid-lft": settings.int("LEASE_LIFETIME", INFINITE),
                              "user-context": {OWNER: {"ar": ip_text(ar.first)}}}
    if hostname:
        record["hostname"] = hostname
    return record


class InUse(ActionFailed):
    def __init__(self, ip: int, held: dict[str, Any]) -> None:
        holder = held.get("hw-address") or "another client"
        super().__init__(f"{ip_text(ip)} is leased in Kea to {holder}")
        self.ip = ip


def _mac_of(lease: dict[str, Any]) -> int | None:
    try:
        return mac_int(str(lease.get("hw-address", "")))
    except BadInput:
        return None


def _size(address: Template | None, ar: AddressRange) -> int:
    raw = (address.get("SIZE") if address is not None else None) or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= ar.size:
        raise BadInput(f"ADDRESS SIZE {raw!r} is not 1..{ar.size}")
    return int(raw)


@contextlib.contextmanager
def _leasing(call: Call, ar: AddressRange) -> Iterator[Leasing]:
    """The AR's subnet opened for leasing, under the driver's lock."""
    kea = Kea(call.settings, call.deadline)
    with locked(call.settings, call.deadline):
        leasing = Leasing(call, ar, kea)
        leasing.open(kea.config())
        yield leasing


def get_address(call: Call) -> str:
    ar, address = _data(call)
    size = _size(address, ar)
    with _leasing(call, ar) as leasing:
        kea = leasing.kea
        for _attempt in range(5):  # a DHCP client may take an address between our look and add
            used = {_ip_int(lease) for lease in kea.leases(ar.subnet_id or 0)}
            start = _free_run(ar, used, size)
            if start is None:
                raise ActionFailed(f"no {size} free address(es) left in the AR "
                                   f"{ip_text(ar.first)} + {ar.size}: Kea holds {len(used)}")
            try:
                for index in range(start, start + size):
                    leasing.lease(ar.first + index, ar.mac_of(index))
                leasing.publish()
            except InUse:
                leasing.undo()
                continue
            except BaseException:
                leasing.undo()
                raise
            log.info(f"leased {ip_text(ar.first + start)} + {size} to "
                     f"{mac_text(ar.mac_of(start))}")
            return address_answer(ar.first + start, size)
    raise ActionFailed("the AR's free addresses kept being taken by DHCP clients: try again")


def _ip_int(lease: dict[str, Any]) -> int:
    try:
        return ip_int(str(lease.get("ip-address")))
    except BadInput:
        return -1


def _free_run(ar: AddressRange, used: set[int], size: int) -> int | None:
    run = 0
    for index in range(ar.size):
        run = 0 if ar.first + index in used else run + 1
        if run == size:
            return index - size + 1
    return None


def _address(address: Template | None, ar: AddressRange) -> tuple[int, int, int]:
    """(index, MAC, size) of the ADDRESS oned sent."""
    if address is None or not address.get("IP"):
        raise BadInput("the request has no ADDRESS IP")
    ip = ip_int(address.get("IP") or "", "ADDRESS IP")
    size = _size(address, ar)
    index = ar.index_of(ip)
    ar.index_of(ip + size - 1)
    mac = mac_int(address.get("MAC") or "", "ADDRESS MAC") if address.get("MAC") \
        else ar.mac_of(index)
    return index, mac, size


def allocate_address(call: Call) -> None:
    ar, address = _data(call)
    index, mac, size = _address(address, ar)
    with _leasing(call, ar) as leasing:
        try:
            for n in range(size):
                leasing.lease(ar.first + index + n, mac_at(mac, n))
            leasing.publish()
        except BaseException:
            leasing.undo()
            raise
    if leasing.made:
        log.info(f"leased {ip_text(ar.first + index)} + {size} to {mac_text(mac)}")
    else:
        log.info(f"{ip_text(ar.first + index)} + {size} leased to {mac_text(mac)} already")


def free_address(call: Call) -> None:
    ar, address = _data(call)
    index, mac, size = _address(address, ar)
    with _leasing(call, ar) as leasing:
        kea = leasing.kea
        for n in range(size):
            ip = ar.first + index + n
            want = mac_at(mac, n)
            held = kea.lease(ip_text(ip))
            if held is None:
                log.info(f"{ip_text(ip)} has no lease in Kea: nothing to free")
                continue
            if _mac_of(held) != want or ours(held) is None:
                log.warn(f"{ip_text(ip)} is leased in Kea to {held.get('hw-address')}, not "
                         f"{mac_text(want)} by this driver: left alone")
                continue
            if leasing.dns is not None:
                leasing.dns.withdraw(ip, leasing.zone)
            kea.delete_lease(ip_text(ip))
            log.info(f"freed {ip_text(ip)} ({mac_text(want)})")
