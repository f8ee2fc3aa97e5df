"""deploy, shutdown, cancel, reboot and reset."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from typing import Any

from one_drivers.core import faults, log
from one_drivers.core.atomic import write_atomic
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, NotFound
from one_drivers.vmm.libvirt.common import SHUTOFF, host_hypervisor, resolved
from one_drivers.vmm.libvirt.connection import Hypervisor
from one_drivers.vmm.libvirt.deployment import check_emulator, prepare
from one_drivers.vmm.libvirt.firmware import ensure_nvram
from one_drivers.vmm.libvirt.snapshots import redefine_snapshots
from one_drivers.vmm.libvirt.tpm import adopt, served

DESTROY_RESERVE = 15.0  # seconds of the action kept for destroying a guest that ignored ACPI


def deploy(call: Call) -> str:
    """Create the domain from the deployment file on stdin and answer its UUID (the deploy id).
    A re-run finds the domain it already created and answers the same UUID."""
    settings = resolved(call.settings)
    root = prepare(call.raw_stdin or "", settings)
    check_emulator(root)
    vm_dir = os.path.dirname(call.args["deployment_file"])
    swtpm = adopt(root, vm_dir)
    xml = ET.tostring(root, encoding="unicode")
    _write(call.args["deployment_file"], xml)
    ensure_nvram(root, vm_dir, settings)
    name = root.findtext("name") or ""
    with host_hypervisor(call) as hv:
        existing = hv.domain(root.findtext("uuid") or name)
        if existing is not None and hv.state(existing) not in (None, SHUTOFF):
            log.info(f"domain {name} is already running: nothing to create")
            return str(existing.UUIDString())
        with served(swtpm, call.deadline):
            dom = hv.call(hv.conn.createXML, xml, 0, what=f"creating domain {name}")
        redefine_snapshots(hv, dom, root)
        return str(dom.UUIDString())


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, text)


def _gone_or_off(hv: Hypervisor, dom: Any) -> bool:
    return hv.state(dom) in (None, SHUTOFF)


def shutdown(call: Call) -> None:
    """ACPI power button, pressed again every ACPI_PRESS_INTERVAL seconds (a guest still booting
    loses a press: a single re-press at half time made terminating a just-booted VM take half
    of ACPI_TIMEOUT); after ACPI_TIMEOUT the domain is destroyed (FORCE_DESTROY=yes, the
    default) or the action fails. Never longer than that (nor than the action's own limit,
    keeping time to destroy), and it holds no lock: a cancel sent meanwhile just ends it
    sooner (OpenNebula/one#2586)."""
    deploy_id = call.args["deploy_id"]
    settings = resolved(call.settings)
    timeout = min(settings.float("ACPI_TIMEOUT", 180),
                  max(1.0, call.deadline.remaining() - DESTROY_RESERVE))
    interval = max(1.0, settings.float("ACPI_PRESS_INTERVAL", 5))
    with host_hypervisor(call) as hv:
        dom = hv.domain(deploy_id)
        if dom is None or _gone_or_off(hv, dom):
            log.info(f"domain {deploy_id} is already gone")
            return
        if settings.bool("CANCEL_NO_ACPI", False) and not _has_acpi(hv, dom):
            log.info(f"domain {deploy_id} has no ACPI (CANCEL_NO_ACPI): destroying it")
            _destroy(hv, dom)
            return
        end = time.monotonic() + timeout
        presses = 0
        while True:
            try:
                hv.retryable(dom.shutdown, what="pressing the ACPI power button")
            except (ActionFailed, NotFound) as exc:
                if _gone_or_off(hv, dom):  # it went while we pressed
                    return
                if presses == 0:
                    raise
                log.info(f"power button press {presses + 1} not delivered ({exc})")
            presses += 1
            faults.point("shutdown:pressed")
            left = end - time.monotonic()
            if left <= 0:
                break
            if hv.wait_until(lambda: _gone_or_off(hv, dom), seconds=min(interval, left)):
                if presses > 1:
                    log.info(f"domain {deploy_id} powered off after {presses} presses")
                return
            if time.monotonic() >= end:
                break
        if not settings.bool("FORCE_DESTROY", True):
            raise ActionFailed(f"domain {deploy_id} did not power off within {timeout:g} s",
                               hint="the guest ignores ACPI; use poweroff --hard")
        log.info(f"domain {deploy_id} ignored ACPI for {timeout:g} s: destroying it")
        _destroy(hv, dom)


def _has_acpi(hv: Hypervisor, dom: Any) -> bool:
    xml = ET.fromstring(hv.retryable(dom.XMLDesc, 0, what="reading the domain XML"))  # noqa: S314
    return xml.find("features/acpi") is not None


def _destroy(hv: Hypervisor, dom: Any) -> None:
    try:
        hv.retryable(dom.destroy, what="destroying the domain")
    except (ActionFailed, NotFound):
        if not _gone_or_off(hv, dom):
            raise


def cancel(call: Call) -> None:
    """Hard power-off; a domain that is already gone is success."""
    with host_hypervisor(call) as hv:
        dom = hv.domain(call.args["deploy_id"])
        if dom is None or _gone_or_off(hv, dom):
            log.info(f"domain {call.args['deploy_id']} is already gone")
            return
        _destroy(hv, dom)


def reboot(call: Call) -> None:
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        hv.call(dom.reboot, 0, what="rebooting the domain (ACPI)")


def reset(call: Call) -> None:
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        hv.call(dom.reset, 0, what="resetting the domain")
