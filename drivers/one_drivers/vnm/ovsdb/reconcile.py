"""``one-drivers ovs reconcile``: bring this host's Open vSwitch back to what its VMs need.

After ovs-vswitchd restarts every flow is gone (ports survive in OVSDB, or not, if the operator's
network setup rebuilt the bridges): VMs would run without VLAN filters and security groups, or
without connectivity (upstream: OpenNebula/one#1214). Reconcile replays the VM documents saved by
the last successful pre/post/update of each VM whose taps still exist, in one OVSDB transaction
and one OpenFlow bundle per bridge, and removes what we own that no running VM needs: ports,
QoS rows, flows by cookie, state files, bridges we created that are now empty.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from one_drivers.core.config import Settings
from one_drivers.core.documents import VM
from one_drivers.core.errors import DriverError
from one_drivers.core.xmlview import parse_xml
from one_drivers.ovs import flows
from one_drivers.ovs.spec import PortSpec, vm_specs
from one_drivers.vnm.ovsdb.host import DRIVER, Host, state_file, tap_exists


class Report(NamedTuple):
    vms: int
    nics: int
    removed_ports: int
    removed_flows: int
    removed_bridges: list[str]
    skipped: list[str]  # VM documents that no longer parse or validate


GRACE = 600.0  # seconds a VM without taps keeps its ports: deploy runs after pre made them


def reconcile(settings: Settings, *, dry_run: bool = False, grace: float = GRACE) -> Report:
    """``grace``: a VM none of whose taps exist is gone (a guest shut down from inside, a host
    whose OVS restarted while it stopped: no ``clean`` ran) only once its document is older
    than this; a younger one is being deployed (``pre`` ran, the domain is not there yet)."""
    import time

    host = Host(settings)
    store = state_file(settings)
    live: list[PortSpec] = []
    pending: list[PortSpec] = []  # within the grace: left as they are
    skipped: list[str] = []
    gone_vms: list[int] = []
    now = time.time()
    for vm_id, saved in sorted(store.saved().items()):
        try:
            vm = VM(parse_xml(saved.document, what=f"saved document of VM {vm_id}", root="VM"))
            specs = vm_specs(vm, DRIVER, settings, only_attached=False)
        except DriverError as exc:
            skipped.append(f"VM {vm_id}: {exc}")
            continue
        running = [s for s in specs if tap_exists(s.target)]
        live.extend(running)
        if not running and now - saved.mtime < grace:
            pending.extend(specs)
        elif not running:
            gone_vms.append(vm_id)
    wanted = {s.target for s in live + pending}
    stale = [p for p in host.db.owned_ports() if p.target not in wanted
             and not tap_exists(p.target)]
    keep = {(s.vm_id, s.nic_id) for s in live + pending}
    if dry_run:
        stale_flows = _stale_flows(host, keep)
        return Report(len({s.vm_id for s in live}), len(live), len(stale),
                      sum(len(c) for c in stale_flows.values()), [], skipped)
    if live:  # first: its transaction returns once ovs-vswitchd has caught up after a restart
        host.apply(live, require_tap=False, exact_group=True)
    stale_flows = _stale_flows(host, keep)
    for bridge, cookies in stale_flows.items():
        host.openflow.apply(bridge, flows.bundle([(c, flows.NIC_MASK) for c in cookies], []))
    removed = host.db.remove({p.target for p in stale}, keep_empty_bridges=settings.bool(
        "KEEP_EMPTY_BRIDGE", False))
    for vm_id in gone_vms:
        store.drop(vm_id)
    return Report(len({s.vm_id for s in live}), len(live), len(stale),
                  sum(len(c) for c in stale_flows.values()), removed, skipped)


def _stale_flows(host: Host, keep: set[tuple[int, int]]) -> dict[str, set[int]]:
    """Our NIC cookies on every bridge that belong to no running NIC."""
    out: dict[str, set[int]] = defaultdict(set)
    for bridge in sorted(host.db.bridges()):
        for cookie in host.openflow.cookies(bridge, flows.MAGIC << 48, flows.ALL_NICS_MASK):
            owner = flows.cookie_owner(cookie)
            if owner is not None and owner not in keep:
                out[bridge].add(cookie)
    return out
