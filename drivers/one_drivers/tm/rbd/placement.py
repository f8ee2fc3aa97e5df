"""Where a TM action that touches Ceph runs: the front-end, the VM's host, or a bridge.

``TM_CEPH_ACCESS`` of the datastore the action line names (or the driver's configuration)
chooses; without it ``CEPH_ACCESS``, which the image datastore's own actions read too (so an
image datastore in bridge mode sends its disks' TM actions to its bridges unless it says
``TM_CEPH_ACCESS=host``):

- ``local`` (default): here; the front-end is a Ceph client.
- ``host``: on the host the action line names (where the VM runs or will run), as upstream's
  scripts do; when the line names no other host (an undeployed VM, a save-as from a stopped VM)
  or that host cannot be reached, on a BRIDGE_LIST host.
- ``bridge``: on a BRIDGE_LIST host, tried round-robin from the VM id.

The far side cannot ask oned (no credentials there, and it may not even reach it): the front-end
reads the VM and datastore documents the action needs, once, and sends them along with the call,
over the same single ssh session (:mod:`one_drivers.core.relay`). On the far side the host's own
name counts as local, so the VM directory there is handled without an ssh to itself.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable

from one_drivers.core import log, relay, remote
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.documents import VM, Datastore
from one_drivers.core.errors import BackendUnavailable, BadInput, MissingAttribute
from one_drivers.core.oned import Oned
from one_drivers.core.xmlview import parse_xml

MODES = ("local", "host", "bridge")
RELAY_ROOT = "ONE_DRIVERS_RELAYED"
MAX_RELAYED = 16 << 20  # the documents of one VM and one datastore: far below this
# the Ceph-touching actions; context, mv and the migration hooks work on VM directories only
ROUTED = frozenset({
    "clone", "ln", "mkimage", "mkswap", "delete", "resize", "mvds", "cpds", "snap_create",
    "snap_create_live", "snap_revert", "snap_delete", "clone.ssh", "ln.ssh", "mvds.ssh",
    "cpds.ssh", "resize.ssh",
})


class Documents:
    """oned's answers for one action, read once: from oned on the front-end, from what the
    front-end relayed on the far side."""

    def __init__(self, oned: Oned | None, vms: dict[int, VM] | None = None,
                 datastores: dict[int, Datastore] | None = None) -> None:
        self.oned = oned
        self.vms = vms or {}
        self.datastores = datastores or {}

    def vm(self, vm_id: int) -> VM:
        if vm_id not in self.vms:
            self.vms[vm_id] = self._ask("VM", vm_id).vm(vm_id)
        return self.vms[vm_id]

    def datastore(self, ds_id: int) -> Datastore:
        if ds_id not in self.datastores:
            self.datastores[ds_id] = self._ask("datastore", ds_id).datastore(ds_id)
        return self.datastores[ds_id]

    def _ask(self, what: str, ident: int) -> Oned:
        if self.oned is None:
            raise BadInput(f"{what} {ident}'s document was not sent along with the call",
                           hint="the front-end relays what the action needs: update "
                                "one-drivers on the front-end and the hosts together")
        return self.oned

    def encode(self) -> bytes:
        root = ET.Element(RELAY_ROOT)
        for doc in [*self.vms.values(), *self.datastores.values()]:
            root.append(doc.elem)
        return ET.tostring(root)

    @classmethod
    def decode(cls, data: bytes) -> Documents:
        root = parse_xml(data.decode("utf-8"), what="the documents relayed by the front-end",
                         root=RELAY_ROOT)
        vms = {VM(e).id: VM(e) for e in root.findall("VM")}
        datastores = {Datastore(e).id: Datastore(e) for e in root.findall("DATASTORE")}
        return cls(None, vms, datastores)


def documents(call: Call) -> Documents:
    """The documents of this call (what :func:`one_drivers.tm.rbd.common.oned_for` answers)."""
    docs = call.extras.get("documents")
    if not isinstance(docs, Documents):
        docs = Documents(Oned(timeout=call.deadline.cap(
            call.settings.float("ONED_TIMEOUT", 15), "asking oned")))
        call.extras["documents"] = docs
    return docs


def line_host(call: Call) -> str | None:
    """The host the action line names for the disk or VM directory (not a clone's source)."""
    for name in ("dst", "disk", "src"):
        where = call.args.get(name)
        if isinstance(where, HostPath):
            return where.host
    return None


def route(call: Call, action: Callable[[Call], str | None]) -> str | None:
    if relay.on_far_side():
        if call.action in ROUTED:
            data = sys.stdin.buffer.read(MAX_RELAYED + 1)
            if len(data) > MAX_RELAYED:
                raise BadInput("the documents relayed by the front-end are too large")
            call.extras["documents"] = Documents.decode(data)
        return action(call)
    if call.action not in ROUTED:
        return action(call)
    docs = documents(call)
    settings = call.settings
    dsid = call.args.get("dsid")
    if isinstance(dsid, int):
        settings = settings.over(docs.datastore(dsid).template)
    mode = settings.get("TM_CEPH_ACCESS") or settings.get("CEPH_ACCESS") or "local"
    if mode not in MODES:
        raise BadInput(f"TM_CEPH_ACCESS/CEPH_ACCESS={mode!r} is not one of {', '.join(MODES)}",
                       hint="set it on the datastore, or in the tm/rbd configuration")
    if mode == "local":
        return action(call)
    vmid = call.args["vmid"]
    docs.vm(vmid)  # read here, sent along
    bridges = [remote.check_host(h) for h in (settings.get("BRIDGE_LIST") or "").split()]
    first = vmid % len(bridges) if bridges else 0
    bridges = bridges[first:] + bridges[:first]
    host = line_host(call)
    targets = bridges
    if mode == "host" and host is not None and not remote.is_local(host):
        targets = [remote.check_host(host)] + [b for b in bridges if b != host]
    if not targets:
        raise MissingAttribute("BRIDGE_LIST", subject=call.subject,
                               hint=f"CEPH_ACCESS={mode} needs a host to run on when the "
                                    "action names none: add BRIDGE_LIST to the datastore")
    python = call.settings.get("HOST_PYTHON") or sys.executable
    payload = docs.encode()
    tried = []
    for target in targets:
        log.info(f"running {call.action} on {target} (CEPH_ACCESS={mode})")
        out = relay.run_on(target, python, call, payload, role="host",
                           env={"ONE_DRIVERS_LOCAL_NAMES": target})
        if out is not None:
            return out
        log.info(f"{target} is unreachable over ssh")
        tried.append(target)
    raise BackendUnavailable(f"no host to run {call.action} on is reachable "
                             f"({', '.join(tried)})",
                             hint="check ssh from the front-end to those hosts")
