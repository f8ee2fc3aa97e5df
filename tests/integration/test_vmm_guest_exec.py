"""``onevm exec`` (OpenNebula 7.2) against the lab guest's real QEMU guest agent: the VMM's
exec/exec_cancel as one_vmm_exec runs them, the IM's EXEC_VM as monitord would receive it."""

from __future__ import annotations

import base64
import re
import time

import pytest

from one_drivers.core.xmlview import escape
from one_drivers.lab.console import GuestConsole
from tests.integration import test_vmm_libvirt as vmm

pytestmark = pytest.mark.lab
READY, HOST = vmm.READY, vmm.HOST
# the VMM tests' fixtures: a VM with the lab guest on an RBD disk, the remotes it runs through
vm, guest_raw, vmm_remotes = vmm.vm, vmm.guest_raw, vmm.vmm_remotes

AGENT_UP = "one-lab-guest: guest agent on"


def exec_doc(vm, command: str, stdin: bytes = b"") -> str:
    """The action data with QEMU_GA_EXEC as oned sets it before calling exec."""
    ga = (f"<QEMU_GA_EXEC><COMMAND>{escape(command)}</COMMAND>"
          f"<STDIN>{base64.b64encode(stdin).decode()}</STDIN></QEMU_GA_EXEC>")
    return vm.action_data().replace("<TEMPLATE>", f"<TEMPLATE>{ga}", 1)


def reported(lab_env, vm_id: int, timeout: float = 60) -> dict[str, str]:
    """The EXEC_VM line for this VM, probed as the monitoring client does every period."""
    import libvirt

    from one_drivers.im.libvirt.probes import exec_vm

    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in exec_vm(conn).splitlines():
                fields = dict(re.findall(r'(\w+)="([^"]*)"', line))
                if fields.get("ID") == str(vm_id):
                    return fields
            time.sleep(0.5)
        raise AssertionError(f"no EXEC_VM result for VM {vm_id} within {timeout:g} s")
    finally:
        conn.close()


def nothing_reported(lab_env, vm_id: int) -> bool:
    import libvirt

    from one_drivers.im.libvirt.probes import exec_vm

    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        return f'ID="{vm_id}"' not in exec_vm(conn)
    finally:
        conn.close()


def agent_up(lab_env, vm, timeout: float = 60) -> None:
    """Until the guest agent answers a ping (the guest started it: it may not listen yet)."""
    import libvirt
    import libvirt_qemu

    vm.console.wait_for(AGENT_UP)
    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        dom = conn.lookupByUUIDString(vm.deploy_id)
        end = time.monotonic() + timeout
        while True:
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-ping"}', 2, 0)
                return
            except libvirt.libvirtError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)
    finally:
        conn.close()


def deploy_with_agent(vm, lab_env) -> None:
    """The lab guest with its agent's channel, booted and its agent answering."""
    vm.deploy(guest_agent=True)
    vm.console.wait_for(READY)
    agent_up(lab_env, vm)


def b64(text: str) -> str:
    return base64.b64decode(text).decode()


def test_exec_runs_in_the_guest_and_the_im_reports_it_once(vm, lab_env):
    deploy_with_agent(vm, lab_env)
    res = vm.run("exec", stdin=exec_doc(vm, "sh -c 'echo hello; echo oops >&2; exit 3'"))
    assert res.returncode == 0, res.stderr
    fields = reported(lab_env, vm.id)
    assert (fields["STATUS"], fields["RETURN_CODE"]) == ("DONE", "3"), fields
    assert (b64(fields["STDOUT"]), b64(fields["STDERR"])) == ("hello\n", "oops\n")
    assert nothing_reported(lab_env, vm.id), "a result is reported once"

    res = vm.run("exec", stdin=exec_doc(vm, "cat", b"piped in\n"))  # STDIN reaches it
    assert res.returncode == 0, res.stderr
    fields = reported(lab_env, vm.id)
    assert (fields["RETURN_CODE"], b64(fields["STDOUT"])) == ("0", "piped in\n"), fields

    # a wild command line stays words for the guest, never a shell on the host
    res = vm.run("exec", stdin=exec_doc(vm, "echo '$(id)' ';' `uname`"))
    assert res.returncode == 0, res.stderr
    assert b64(reported(lab_env, vm.id)["STDOUT"]) == "$(id) ; `uname`\n"


def test_exec_cancel_kills_the_command_and_a_second_exec_waits(vm, lab_env):
    deploy_with_agent(vm, lab_env)
    res = vm.run("exec", stdin=exec_doc(vm, "sleep 600"))
    assert res.returncode == 0, res.stderr
    assert vm.console.wait_until_output("ps | grep '[s]leep 600' >/dev/null && echo yes", "yes")
    second = vm.run("exec", stdin=exec_doc(vm, "true"))
    assert second.returncode != 0 and "has not been reported yet" in second.stderr
    assert nothing_reported(lab_env, vm.id)  # still running: nothing to say

    cancel = vm.run("exec_cancel")
    assert cancel.returncode == 0, cancel.stderr
    assert vm.console.wait_until_output("ps | grep '[s]leep 600' >/dev/null || echo gone", "gone")
    assert nothing_reported(lab_env, vm.id)  # cancelled: oned says CANCELLED itself
    again = vm.run("exec_cancel")  # a re-run converges
    assert again.returncode == 0 and "no command is running" in again.stderr
    res = vm.run("exec", stdin=exec_doc(vm, "true"))  # and a new command may start
    assert res.returncode == 0, res.stderr
    assert reported(lab_env, vm.id)["RETURN_CODE"] == "0"


def test_exec_without_a_guest_agent_says_so(vm):
    vm.deploy()  # no channel: the guest agent cannot be reached
    res = vm.run("exec", stdin=exec_doc(vm, "true"))
    assert res.returncode != 0
    assert "guest agent" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    bad = vm.run("exec", stdin=exec_doc(vm, "echo 'unterminated"))
    assert bad.returncode == 3 and "cannot be split" in bad.stderr


def test_restore_sets_the_guests_clock_through_its_agent(vm, lab_env, vmm_remotes):
    """SYNC_TIME: the guest's clock, set back to 2001 before a save, reads this year after the
    restore; with SYNC_TIME=no (the positive control) it still reads 2001."""
    this_year = time.gmtime().tm_year
    deploy_with_agent(vm, lab_env)
    conf = vmm_remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    original = conf.read_text()
    data = vm.action_data(tm_mad="ssh")
    checkpoint = vm.dir / "checkpoint"
    try:
        for sync, year in (("no", 2001), ("yes", this_year)):
            conf.write_text(original + f"\nSYNC_TIME={sync}\n")
            vm.console.run("date -u -s '2001-02-03 04:05:06' >/dev/null")
            assert vm.console.run("date -u +%Y") == "2001"
            vm.ok("save", vm.deploy_id, str(checkpoint), HOST, stdin=data)
            res = vm.run("restore", str(checkpoint), HOST, vm.deploy_id, stdin=data)
            assert res.returncode == 0, res.stderr
            assert vm.console.run("date -u +%Y") == str(year), f"SYNC_TIME={sync}"
            assert ("set the guest's clock" in res.stderr) == (sync == "yes"), res.stderr
    finally:
        conf.write_text(original)


def test_monitor_vm_carries_what_the_guest_agent_says(vm, lab_env):
    """OS_* and GUEST_IP(_ADDRESSES) in MONITOR_VM, from the guest's own agent: an address set
    in the guest shows up; a VM without an agent carries none of these keys."""
    import subprocess
    import uuid

    import libvirt

    from one_drivers.im.libvirt.probes import domains, monitor_vm
    from one_drivers.lab.documents import vm_doc

    bridge, mac, target = f"ga{uuid.uuid4().hex[:6]}", "02:00:00:0d:00:07", f"one-{vm.id}-0"
    nic = {"NIC_ID": 0, "NETWORK_ID": 1, "VN_MAD": "ovsdb", "BRIDGE": bridge, "MAC": mac,
           "TARGET": target}
    vnm_doc = base64.b64encode(vm_doc(vm.id, [], nics=[nic]).encode())
    vnm = vm.remotes / "vnm" / "ovsdb"
    pre = subprocess.run([str(vnm / "pre")], input=vnm_doc, capture_output=True, timeout=60,
                         check=False)
    assert pre.returncode == 0, pre.stderr

    def keys() -> dict[str, str]:
        conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
        try:
            doms = [d for d in domains(conn) if d.vm_id == vm.id]
            text, _ = monitor_vm(doms, {}, time.time(), guest_agent=True)
        finally:
            conn.close()
        monitor = base64.b64decode(re.search(r'MONITOR="([^"]*)"', text).group(1)).decode()
        return dict(re.findall(r'^(\w+)="([^"]*)"$', monitor, re.M))

    try:
        vm.deploy(nics=[(bridge, mac, target)])  # no agent channel: no guest keys
        vm.console.wait_for(READY)
        plain = keys()
        assert "CPU" in plain and not {"OS_ID", "GUEST_IP"} & plain.keys(), plain
        vm.ok("cancel", vm.deploy_id, HOST)

        vm.deploy(nics=[(bridge, mac, target)], guest_agent=True)
        vm.console.wait_for(READY)
        agent_up(lab_env, vm)
        vm.console.run("ip addr add 10.77.9.5/24 dev eth0")
        end = time.monotonic() + 30
        while (got := keys()).get("GUEST_IP") != "10.77.9.5" and time.monotonic() < end:
            time.sleep(0.5)
        assert got["GUEST_IP"] == "10.77.9.5" and "10.77.9.5" in got["GUEST_IP_ADDRESSES"], got
        assert (got["OS_TYPE"], got["OS_MACHINE"]) == ("posix", "x86_64"), got
        assert got["OS_ID"]  # the guest has no os-release: "unknown", as upstream says
    finally:
        vm.close()
        clean = subprocess.run([str(vnm / "clean"), HOST], input=vnm_doc, capture_output=True,
                               timeout=60, check=False)
        assert clean.returncode == 0, clean.stderr


def test_restore_follows_the_vms_directory(vm, lab_env, tmp_path):
    """A VM saved on one system datastore comes back from its checkpoint on another (oned moved
    its directory): the restored domain's paths (its console here) are in the new directory."""
    import shutil

    vm.deploy()
    vm.console.wait_for(READY)
    vm.console.run("echo kept > /tmp/mark")
    data = vm.action_data(tm_mad="ssh")
    vm.ok("save", vm.deploy_id, str(vm.dir / "checkpoint"), HOST, stdin=data)
    moved = tmp_path / "other-datastore" / str(vm.id)
    shutil.copytree(vm.dir, moved, ignore=shutil.ignore_patterns("console*"))
    shutil.rmtree(vm.dir)
    res = vm.run("restore", str(moved / "checkpoint"), HOST, vm.deploy_id, stdin=data)
    assert res.returncode == 0, res.stderr
    assert f"the VM's directory moved from {vm.dir} to {moved}" in res.stderr
    assert GuestConsole(moved / "console").run("cat /tmp/mark") == "kept"
    vm.dir = moved


def test_restore_wakes_a_guest_suspended_to_ram(vm, lab_env):
    import libvirt

    pm = "<pm><suspend-to-mem enabled='yes'/></pm>"
    vm.deploy_id = vm.ok("deploy", str(vm.dir / "deployment.0"), HOST,
                         stdin=vm.domain(guest_agent=True).replace("<devices>", pm + "<devices>"))
    vm.console.wait_for(READY)
    agent_up(lab_env, vm)
    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        dom = conn.lookupByUUIDString(vm.deploy_id)
        dom.pMSuspendForDuration(libvirt.VIR_NODE_SUSPEND_TARGET_MEM, 0, 0)
        end = time.monotonic() + 60
        while dom.state()[0] != libvirt.VIR_DOMAIN_PMSUSPENDED and time.monotonic() < end:
            time.sleep(0.3)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PMSUSPENDED
        res = vm.run("restore", str(vm.dir / "checkpoint"), HOST, vm.deploy_id)
        assert res.returncode == 0 and "woken up" in res.stderr, res.stderr
        end = time.monotonic() + 60
        while dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING and time.monotonic() < end:
            time.sleep(0.3)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        conn.close()
    # the woken console may lose the start of the first line it gets: asked until it answers
    assert vm.console.wait_until_output("echo awake", "awake", timeout=60)
