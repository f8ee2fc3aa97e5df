"""Commands in the guest through the QEMU guest agent: ``onevm exec`` (OpenNebula 7.2).

``exec`` starts QEMU_GA_EXEC/COMMAND (split like a shell would, never run by one) with STDIN
(base64, as OpenNebula keeps it) through ``guest-exec`` and records the guest's process id in the
domain's own libvirt metadata: nothing on the host's file system to race for or swap, and it
goes with the domain. The monitoring client reads it back (EXEC_VM), asks ``guest-exec-status``
and reports STATUS/RETURN_CODE/STDOUT/STDERR once the command has ended. ``exec_cancel`` kills
the process in the guest and forgets it. :func:`sync_time` sets the guest's clock after a
restore or a migration (SYNC_TIME).

The command and its input are read from the action's document, not from the command line
OpenNebula builds (one_vmm_exec joins them into a line the host's shell splits again).
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
import xml.etree.ElementTree as ET
from typing import Any

from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BadInput, DriverError, NotFound
from one_drivers.vmm.libvirt.common import host_hypervisor
from one_drivers.vmm.libvirt.connection import Hypervisor

EXEC_NS = "https://one-drivers.org/xmlns/guest-exec/1"
EXEC_KEY = "onedrvexec"
MAX_STDIN = 1 << 20  # what guest-exec's input-data may carry here, base64 (1 MiB)


def agent_command(hv: Hypervisor, dom: Any, command: dict[str, Any], what: str) -> Any:
    """One guest agent command, its ``return``; a guest without an agent is named."""
    import libvirt_qemu

    timeout = max(1, int(hv.deadline.cap(hv.settings.float("GUEST_AGENT_TIMEOUT", 10), what)))
    try:
        answer = hv.call(libvirt_qemu.qemuAgentCommand, dom, json.dumps(command), timeout, 0,
                         what=what)
    except ActionFailed as exc:
        raise ActionFailed(f"{what}: the guest agent did not answer ({exc})",
                           hint="the VM needs FEATURES=[GUEST_AGENT=yes] and qemu-guest-agent "
                                "running in the guest") from None
    return json.loads(answer).get("return")


def running_exec(dom: Any) -> int | None:
    """The guest process id ``exec`` recorded on the domain, None when there is none."""
    import libvirt

    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, EXEC_NS,
                            libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError:
        return None
    pid = ET.fromstring(text).get("pid", "")  # noqa: S314 - libvirt's own answer
    return int(pid) if pid.isdigit() else None


def record_exec(dom: Any, pid: int | None) -> None:
    """Record (or with None, forget) the running command's guest process id."""
    import libvirt

    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    None if pid is None else f'<exec pid="{pid}"/>',
                    None if pid is None else EXEC_KEY, EXEC_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def sync_time(hv: Hypervisor, deploy_id: str) -> None:
    """SYNC_TIME (yes by default, as upstream's kvmrc): after a restore or a migration the
    guest's clock is set from the host through the guest agent. Never fatal: a guest without an
    agent keeps its clock (said in an INFO line); the attempt is bounded by GUEST_AGENT_TIMEOUT."""
    if not hv.settings.bool("SYNC_TIME", True):
        return
    dom = hv.domain(deploy_id)
    if dom is None:
        return
    timeout = hv.settings.float("GUEST_AGENT_TIMEOUT", 10)
    try:
        hv.call(dom.setTime, None, hv.lv.VIR_DOMAIN_TIME_SYNC, timeout=timeout,
                what="setting the guest's clock")
        log.info("set the guest's clock from the host's (SYNC_TIME)")
    except DriverError as exc:
        log.info(f"the guest's clock was not set: {exc}")


def _command(call: Call) -> tuple[list[str], str | None]:
    template = call.doc.vm.template
    command = template.opt("QEMU_GA_EXEC/COMMAND")
    if not command:
        raise BadInput("no QEMU_GA_EXEC/COMMAND in the VM", subject=call.subject)
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadInput(f"QEMU_GA_EXEC/COMMAND cannot be split into words: {exc}",
                       subject=call.subject) from None
    if not argv:
        raise BadInput("QEMU_GA_EXEC/COMMAND is empty", subject=call.subject)
    stdin = "".join((template.opt("QEMU_GA_EXEC/STDIN") or "").split())
    if len(stdin) > MAX_STDIN:
        raise BadInput(f"QEMU_GA_EXEC/STDIN is larger than {MAX_STDIN} bytes of base64",
                       subject=call.subject)
    if stdin:
        try:
            base64.b64decode(stdin, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("QEMU_GA_EXEC/STDIN is not base64", subject=call.subject) from None
    return argv, stdin or None


def _domain(hv: Hypervisor, call: Call) -> Any:
    deploy_id = call.doc.deploy_id or f"one-{call.args['vmid']}"
    return hv.require(deploy_id)


def exec_(call: Call) -> None:
    argv, stdin = _command(call)
    with host_hypervisor(call) as hv:
        dom = _domain(hv, call)
        if running_exec(dom) is not None:
            raise ActionFailed("a command started in this VM has not been reported yet",
                               subject=call.subject,
                               hint="wait for it to end, or cancel it (onevm exec-cancel)")
        request: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin:
            request["input-data"] = stdin
        answer = agent_command(hv, dom, {"execute": "guest-exec", "arguments": request},
                               f"starting {argv[0]} in the guest")
        pid = int(answer["pid"])
        record_exec(dom, pid)
    log.info(f"started {argv[0]} in the guest (pid {pid})")


def exec_cancel(call: Call) -> None:
    with host_hypervisor(call) as hv:
        try:
            dom = _domain(hv, call)
        except NotFound:
            log.info("the domain is gone: nothing to cancel")
            return
        pid = running_exec(dom)
        if pid is None:
            log.info("no command is running in the guest")
            return
        status = agent_command(hv, dom, {"execute": "guest-exec-status",
                                         "arguments": {"pid": pid}}, "reading the command's state")
        if not status.get("exited"):
            agent_command(hv, dom, {"execute": "guest-exec", "arguments": {
                "path": "kill", "arg": ["-9", str(pid)]}}, f"killing process {pid} in the guest")
        record_exec(dom, None)
    log.info(f"cancelled process {pid} in the guest")
