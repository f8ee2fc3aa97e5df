"""The lab's services are real and wired as production would be."""

import json
import os
import subprocess
import time
import uuid

import pytest

pytestmark = pytest.mark.lab


def test_ceph_is_healthy_and_clone_v2_is_enabled(lab_env):
    import rados

    cluster = rados.Rados(conffile=lab_env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    try:
        ret, out, _ = cluster.mon_command(json.dumps({"prefix": "status", "format": "json"}), b"")
        status = json.loads(out)
        assert ret == 0 and status["health"]["status"] == "HEALTH_OK"
        ret, out, _ = cluster.mon_command(json.dumps({"prefix": "osd dump", "format": "json"}),
                                          b"")
        assert json.loads(out)["require_min_compat_client"] == "mimic"
    finally:
        cluster.shutdown()


def test_restricted_client_works_on_its_pool_only(lab_env):
    import rados
    import rbd

    cluster = rados.Rados(conffile=lab_env["CEPH_CONF"], rados_id=lab_env["ONE_LAB_CEPH_USER"],
                          conf={"keyring": lab_env["ONE_LAB_CEPH_KEYRING"]})
    cluster.connect(timeout=10)
    name = f"lab-test-{uuid.uuid4().hex[:8]}"
    try:
        with cluster.open_ioctx(lab_env["ONE_LAB_CEPH_POOL"]) as ioctx:
            rbd.RBD().create(ioctx, name, 4 * 1024 * 1024)
            try:
                with rbd.Image(ioctx, name) as img:
                    img.create_snap("s")
                rbd.RBD().clone(ioctx, name, "s", ioctx, name + "-c")  # no protect: clone v2
                rbd.RBD().remove(ioctx, name + "-c")
                with rbd.Image(ioctx, name) as img:
                    img.remove_snap("s")
            finally:
                rbd.RBD().remove(ioctx, name)
        with (pytest.raises((rados.PermissionError, rados.PermissionDeniedError)),
              cluster.open_ioctx("device_health_metrics") as other):
            other.write_full("x", b"no")
    finally:
        cluster.shutdown()


def test_ovs_userspace_bridge_and_port(lab_env):
    env = {**os.environ, **lab_env}
    br = f"lt{uuid.uuid4().hex[:6]}"

    def vsctl(*args):
        return subprocess.run(["ovs-vsctl", "--timeout=10", *args], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    vsctl("add-br", br, "--", "set", "bridge", br, "datapath_type=netdev")
    try:
        # vswitchd really created it (ovs-vsctl exits 0 even when it could not)
        assert vsctl("get", "interface", br, "ofport") != "-1"
        assert vsctl("get", "bridge", br, "datapath_type") == "netdev"
    finally:
        vsctl("--if-exists", "del-br", br)


def active(dom) -> bool:
    """A transient domain vanishes when it stops: gone counts as not active."""
    import libvirt

    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False


def test_libvirt_boots_the_guest_and_plugs_it_into_the_lab_ovs(lab_env, tmp_path):
    import libvirt

    env = {**os.environ, **lab_env}
    br = f"lv{uuid.uuid4().hex[:6]}"
    subprocess.run(["ovs-vsctl", "--timeout=10", "add-br", br, "--", "set", "bridge", br,
                    "datapath_type=netdev"], env=env, check=True)
    console = tmp_path / "console.log"
    name = f"lab-test-{uuid.uuid4().hex[:8]}"
    tap = f"t{uuid.uuid4().hex[:8]}"
    xml = f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>192</memory>
      <vcpu>1</vcpu><features><acpi/></features>
      <os><type arch='x86_64' machine='pc'>hvm</type>
        <kernel>{lab_env['ONE_LAB_GUEST_KERNEL']}</kernel>
        <initrd>{lab_env['ONE_LAB_GUEST_INITRD']}</initrd>
        <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
      <devices><serial type='file'><source path='{console}'/><target port='0'/></serial>
        <interface type='bridge'><source bridge='{br}'/><virtualport type='openvswitch'/>
          <target dev='{tap}'/><model type='virtio'/><vlan><tag id='4095'/></vlan></interface>
      </devices></domain>"""
    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        dom = conn.createXML(xml, 0)
        try:
            deadline = time.monotonic() + 60
            while lab_env["ONE_LAB_GUEST_READY"] not in console.read_text(errors="replace"):
                assert time.monotonic() < deadline, console.read_text(errors="replace")
                time.sleep(0.2)
            assert "nics: eth0" in console.read_text(errors="replace")
            port = subprocess.run(["ovs-vsctl", "--timeout=10", "--format=json", "--columns=tag",
                                   "list", "port", tap], env=env, check=True,
                                  capture_output=True, text=True).stdout
            assert json.loads(port)["data"][0][0] == 4095
            dom.shutdown()  # ACPI: the guest's acpid powers it off
            deadline = time.monotonic() + 30
            while active(dom):
                assert time.monotonic() < deadline, "guest ignored the ACPI power button"
                time.sleep(0.1)
        finally:
            if active(dom):
                dom.destroy()
    finally:
        conn.close()
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", br], env=env, check=False)


def test_remote_execution_over_real_ssh_keeps_argv_and_streams(lab_env):
    from one_drivers.core import remote

    host = lab_env["ONE_LAB_SSH_HOST"]
    assert not remote.is_local(host)
    tricky = ["printf", "%s|", "a b", "$(id)", "'q'", ";rm -rf /nope"]
    out = remote.run(host, tricky, timeout=30).stdout.decode()
    assert out == "a b|$(id)|'q'|;rm -rf /nope|"
    payload = os.urandom(1 << 20)
    assert remote.run(host, ["cat"], input=payload, timeout=30).stdout == payload
    proc = remote.popen(host, ["sh", "-c", "read x; echo got:$x"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
    out, _ = proc.communicate(b"hello\n", timeout=30)
    assert out == b"got:hello\n"


def test_remote_execution_reports_unreachable_hosts(lab_env, tmp_path, monkeypatch):
    from one_drivers.core import remote
    from one_drivers.core.errors import ActionFailed, BackendUnavailable

    with pytest.raises(ActionFailed, match="exit code 3"):
        remote.run(lab_env["ONE_LAB_SSH_HOST"], ["sh", "-c", "exit 3"], timeout=30)
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host dead-host\n  HostName 127.0.0.1\n  Port 9\n  BatchMode yes\n")
    monkeypatch.setenv("ONE_DRIVERS_SSH_CONFIG", str(cfg))
    with pytest.raises(BackendUnavailable, match="cannot reach dead-host over ssh"):
        remote.run("dead-host", ["true"], timeout=30)
