"""TM rbd: a VM's disks through their whole life, with transfer files as oned writes them, the
documents served by the lab's oned stand-in, Ceph checked after each step, the VM directory on a
host reached over the lab's real sshd."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from one_drivers.ceph import ownership
from one_drivers.lab.documents import datastore_doc, disk_attrs, ds_doc, vm_doc
from one_drivers.lab.lab import Lab
from tests.helpers import allocated, rbd_names, read_image, run_remote, trash_names

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
IMAGE_DS, SYS_DS = 100, 101
_ids = itertools.count(random.randint(10_000, 90_000) * 10)


@pytest.fixture
def world(lab_env, remotes, ceph_admin, tmp_path):
    """Two datastores recorded in the oned stand-in, an image (cp'd through the DS driver) and a
    persistent image, a VM directory root on the 'host'."""
    oned = Lab().oned
    oned.record("datastore", IMAGE_DS, datastore_doc(lab_env, IMAGE_DS))
    oned.record("datastore", SYS_DS, datastore_doc(lab_env, SYS_DS, system=True))
    image, persistent = next(_ids), next(_ids)
    data = os.urandom(2 * MIB) + bytes(6 * MIB)
    src = tmp_path / "disk.raw"
    src.write_bytes(data)
    for iid in (image, persistent):
        doc = ds_doc(lab_env, iid, image={"PATH": str(src)}, ds={"SAFE_DIRS": "/tmp"})
        assert run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc).returncode == 0
    root = tmp_path / "datastores"
    yield {"oned": oned, "image": image, "persistent": persistent, "data": data, "root": root,
           "env": lab_env}
    for iid in (image, persistent):
        run_remote(remotes, "datastore/rbd/rm", [str(iid)],
                   ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"}))


def run_transfer(remotes: Path, tmp_path: Path, lines: list[str], env=None):
    transfer = tmp_path / f"transfer.{next(_ids)}"
    transfer.write_text("\n".join(lines) + "\n")
    return subprocess.run([str(Path(sys.executable).parent / "one-drivers"), "tm",
                           "run-transfer", str(transfer), "--remotes", str(remotes)],
                          capture_output=True, text=True, timeout=600, check=False, env=env)


def record_vm(world, vmid: int, host: str, **extra_disk_attrs) -> None:
    env, image, persistent = world["env"], world["image"], world["persistent"]
    disks = [
        disk_attrs(env, 0, IMAGE_ID=image, SOURCE=f"one/one-{image}", CLONE="YES", TYPE="RBD",
                   DATASTORE_ID=IMAGE_DS, SIZE=16, ORIGINAL_SIZE=8, **extra_disk_attrs),
        disk_attrs(env, 1, TYPE="FS", FS="ext4", SIZE=32, DATASTORE_ID=SYS_DS),
        disk_attrs(env, 2, TYPE="SWAP", SIZE=16, DATASTORE_ID=SYS_DS),
        disk_attrs(env, 3, IMAGE_ID=persistent, SOURCE=f"one/one-{persistent}", CLONE="NO",
                   PERSISTENT="YES", TYPE="RBD", DATASTORE_ID=IMAGE_DS),
    ]
    world["oned"].record("vm", vmid, vm_doc(vmid, disks, host=host, sys_ds=SYS_DS))


def test_a_vm_life_through_transfer_files(world, remotes, ceph_admin, tmp_path, lab_env):
    import rbd

    _, ioctx = ceph_admin
    vmid, image, persistent = next(_ids), world["image"], world["persistent"]
    host = lab_env["ONE_LAB_SSH_HOST"]  # a host reached over real ssh, with its own datastores
    vm_dir = f"/var/lib/one/datastores/{SYS_DS}/{vmid}"
    on_host = Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / str(SYS_DS) / str(vmid)
    record_vm(world, vmid, host)
    ctx_file = tmp_path / "context.sh"
    ctx_file.write_text("ETH0_IP='10.0.0.2'\n")
    (tmp_path / "key.pub").write_text("ssh-ed25519 AAAA test\n")

    prolog = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{image} {host}:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        f"MKIMAGE rbd 32 raw {host}:{vm_dir}/disk.1 {vmid} {SYS_DS}",
        f"MKSWAP rbd 16 {host}:{vm_dir}/disk.2 {vmid} {SYS_DS}",
        f"LN rbd fe:one/one-{persistent} {host}:{vm_dir}/disk.3 {vmid} {IMAGE_DS}",
        f"CONTEXT rbd {ctx_file} {tmp_path}/key.pub:authorized_keys {host}:{vm_dir}/disk.4 "
        f"{vmid} {SYS_DS}",
    ])
    assert prolog.returncode == 0, prolog.stdout + prolog.stderr
    clone_name = f"one-{image}-{vmid}-0"
    with rbd.Image(ioctx, clone_name, read_only=True) as disk:
        assert disk.get_parent_image_spec()["image_name"] == f"one-{image}"
        assert disk.size() == 16 * MIB  # grown to the disk's SIZE
    assert read_image(ioctx, clone_name)[:8 * MIB] == world["data"]
    assert allocated(ioctx, clone_name) == 0  # copy-on-write
    fs_disk = read_image(ioctx, f"one-sys-{vmid}-1")
    assert len(fs_disk) == 32 * MIB and fs_disk[1080:1082] == b"\x53\xef"  # ext4
    assert read_image(ioctx, f"one-sys-{vmid}-2")[4086:4096] == b"SWAPSPACE2"
    for name, kind, disk_id in ((clone_name, "clone", "0"), (f"one-sys-{vmid}-1", "volatile", "1"),
                                (f"one-sys-{vmid}-2", "volatile", "2")):
        with rbd.Image(ioctx, name, read_only=True) as disk:  # ownership: what GC may delete
            meta = ownership.read(disk)
        assert (meta.get("kind"), meta.get("vm"), meta.get("disk")) == (kind, str(vmid), disk_id)
    iso = on_host / "disk.4"  # written on the host, not here
    assert not Path(vm_dir).exists()
    listing = subprocess.run(["xorriso", "-indev", str(iso), "-ls", "/"], capture_output=True,
                             text=True, check=True).stdout
    assert "context.sh" in listing and "authorized_keys" in listing
    iso_bytes = iso.read_bytes()

    again = run_transfer(remotes, tmp_path, [  # oned may retry a prolog: it converges
        f"CLONE rbd fe:one/one-{image} {host}:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        f"MKIMAGE rbd 32 raw {host}:{vm_dir}/disk.1 {vmid} {SYS_DS}",
    ])
    assert again.returncode == 0, again.stdout + again.stderr

    # disk snapshots on the running clone, a revert, a delete, a resize
    with rbd.Image(ioctx, clone_name) as disk:
        disk.write(b"before", 0)
    snaps = run_transfer(remotes, tmp_path, [
        f"SNAP_CREATE rbd {host}:{vm_dir}/disk.0 0 {vmid} {IMAGE_DS}",
    ])
    assert snaps.returncode == 0, snaps.stdout + snaps.stderr
    with rbd.Image(ioctx, clone_name) as disk:
        disk.write(b"after!", 0)
    steps = run_transfer(remotes, tmp_path, [
        f"SNAP_REVERT rbd {host}:{vm_dir}/disk.0 0 {vmid} {IMAGE_DS}",
        f"SNAP_DELETE rbd {host}:{vm_dir}/disk.0 0 {vmid} {IMAGE_DS}",
        f"RESIZE rbd {host}:{vm_dir}/disk.0 24 {vmid} {IMAGE_DS}",
    ])
    assert steps.returncode == 0, steps.stdout + steps.stderr
    assert read_image(ioctx, clone_name)[:6] == b"before"
    with rbd.Image(ioctx, clone_name, read_only=True) as disk:
        assert disk.size() == 24 * MIB and list(disk.list_snaps()) == []

    # disk-saveas into an image whose name the datastore reserved
    saved = next(_ids)
    reserve = run_remote(remotes, "datastore/rbd/mkfs", [str(saved)],
                         ds_doc(lab_env, saved, image={"SIZE": 24, "FORMAT": "save_as"}))
    assert reserve.stdout == f"one/one-{saved}\n"
    cpds = run_transfer(remotes, tmp_path, [
        f"CPDS rbd {host}:{vm_dir}/disk.0 one/one-{saved} -1 {vmid} {IMAGE_DS}",
    ])
    assert cpds.returncode == 0, cpds.stdout + cpds.stderr
    assert read_image(ioctx, f"one-{saved}") == read_image(ioctx, clone_name)

    # stop: the VM directory goes from the host to the front-end (this machine), same path
    stop = run_transfer(remotes, tmp_path, [
        f"MV rbd {host}:{vm_dir}/disk.0 localhost:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        f"MV rbd {host}:{vm_dir} localhost:{vm_dir} {vmid} {SYS_DS}",
    ])
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert (Path(vm_dir) / "disk.4").read_bytes() == iso_bytes and not on_host.exists()
    assert not (Path(vm_dir) / ".one-drivers-copy").exists()
    resume = run_transfer(remotes, tmp_path, [
        f"MV rbd localhost:{vm_dir} {host}:{vm_dir} {vmid} {SYS_DS}",
        f"MV rbd {host}:{vm_dir} {host}:{vm_dir} {vmid} {SYS_DS}",  # same host: no-op
    ])
    assert resume.returncode == 0, resume.stdout + resume.stderr
    assert (on_host / "disk.4").read_bytes() == iso_bytes and not Path(vm_dir).exists()

    # terminate: persistent disk kept, everything else gone, the image's clone snapshot too
    epilog = run_transfer(remotes, tmp_path, [
        f"MVDS rbd {host}:{vm_dir}/disk.3 one/one-{persistent} {vmid} {IMAGE_DS}",
        f"DELETE rbd {host}:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        f"DELETE rbd {host}:{vm_dir}/disk.1 {vmid} {SYS_DS}",
        f"DELETE rbd {host}:{vm_dir}/disk.2 {vmid} {SYS_DS}",
        f"DELETE rbd {host}:{vm_dir}/disk.3 {vmid} {IMAGE_DS}",
        f"DELETE rbd {host}:{vm_dir} {vmid} {SYS_DS}",
    ])
    assert epilog.returncode == 0, epilog.stdout + epilog.stderr
    names = rbd_names(ioctx) | trash_names(ioctx)
    assert not {n for n in names if f"-{vmid}-" in n}
    assert {f"one-{image}", f"one-{persistent}", f"one-{saved}"} <= names
    with rbd.Image(ioctx, f"one-{image}", read_only=True) as img:
        assert [s["name"] for s in img.list_snaps()] == []  # its clone snapshot went too
    assert not on_host.exists()
    repeat = run_transfer(remotes, tmp_path, [  # a retried epilog succeeds on what is gone
        f"DELETE rbd {host}:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        f"DELETE rbd {host}:{vm_dir} {vmid} {SYS_DS}",
    ])
    assert repeat.returncode == 0, repeat.stdout + repeat.stderr
    run_remote(remotes, "datastore/rbd/rm", [str(saved)],
               ds_doc(lab_env, saved, image={"SOURCE": f"one/one-{saved}"}))


def test_fifteen_clones_of_one_image_at_once(world, remotes, ceph_admin, tmp_path, lab_env):
    _, ioctx = ceph_admin
    vms = [next(_ids) for _ in range(15)]
    for vmid in vms:
        record_vm(world, vmid, "localhost")

    def clone(vmid: int) -> subprocess.CompletedProcess[str]:
        return run_transfer(remotes, tmp_path, [
            f"CLONE rbd fe:one/one-{world['image']} localhost:{world['root']}/{SYS_DS}/{vmid}"
            f"/disk.0 {vmid} {IMAGE_DS}"])

    with ThreadPoolExecutor(15) as pool:
        results = list(pool.map(clone, vms))
    assert [r.returncode for r in results] == [0] * 15, [r.stderr for r in results if
                                                         r.returncode]
    for vmid in vms:
        assert read_image(ioctx, f"one-{world['image']}-{vmid}-0")[:8 * MIB] == world["data"]
    with ThreadPoolExecutor(15) as pool:
        gone = list(pool.map(lambda v: run_transfer(remotes, tmp_path, [
            f"DELETE rbd localhost:{world['root']}/{SYS_DS}/{v}/disk.0 {v} {IMAGE_DS}"]), vms))
    assert [r.returncode for r in gone] == [0] * 15
    assert not {n for n in rbd_names(ioctx) if n.startswith(f"one-{world['image']}-")}


def test_bad_lines_missing_disks_and_unreachable_hosts(world, remotes, tmp_path, lab_env):
    vmid = next(_ids)
    record_vm(world, vmid, "localhost")
    vm_dir = f"{world['root']}/{SYS_DS}/{vmid}"
    bad = run_transfer(remotes, tmp_path, ["CLONE"])
    assert bad.returncode == 3 and "is not '<ACTION> <TM_MAD> <ARGS...>'" in bad.stderr
    unknown = run_transfer(remotes, tmp_path, [f"FROBNICATE rbd a b {vmid} 1"])
    assert unknown.returncode == 2
    no_disk = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{world['image']} localhost:{vm_dir}/disk.9 {vmid} {IMAGE_DS}"])
    assert no_disk.returncode == 3
    assert f"VM {vmid} has no DISK with DISK_ID=9" in no_disk.stderr
    ghost = 987_654_321  # never recorded in the stand-in
    no_vm = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{world['image']} localhost:/x/{SYS_DS}/{ghost}/disk.0 {ghost} "
        f"{IMAGE_DS}"])
    assert no_vm.returncode == 6 and f"Error getting virtual machine [{ghost}]" in no_vm.stderr
    stops = run_transfer(remotes, tmp_path, [
        f"MKSWAP rbd 16 localhost:{vm_dir}/disk.9 {vmid} {SYS_DS}",
        f"MKSWAP rbd 16 localhost:{vm_dir}/disk.2 {vmid} {SYS_DS}",
    ])
    assert stops.returncode == 3 and "line 1 (MKSWAP)" in stops.stderr
    assert f"MKSWAP rbd 16 localhost:{vm_dir}/disk.2" not in stops.stdout  # stopped there
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host dead-host\n  HostName 127.0.0.1\n  Port 9\n  BatchMode yes\n")
    ctx = tmp_path / "context.sh"
    ctx.write_text("X=1\n")
    dead = run_transfer(remotes, tmp_path, [
        f"CONTEXT rbd {ctx} dead-host:{vm_dir}/disk.4 {vmid} {SYS_DS}"],
        env={**os.environ, "ONE_DRIVERS_SSH_CONFIG": str(cfg)})
    assert dead.returncode == 4 and "cannot reach dead-host over ssh" in dead.stderr
    oned_down = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{world['image']} localhost:{vm_dir}/disk.0 {vmid} {IMAGE_DS}"],
        env={**os.environ, "ONE_XMLRPC": "http://127.0.0.1:9/RPC2"})
    assert oned_down.returncode == 4 and "cannot reach oned" in oned_down.stderr
    evil = run_transfer(remotes, tmp_path, [f"DELETE rbd localhost:/ {vmid} {SYS_DS}"])
    assert evil.returncode == 3 and "is not a VM directory" in evil.stderr


def test_live_migration_of_the_vm_directory(world, remotes, lab_env, tmp_path):
    import base64

    vmid = next(_ids)
    record_vm(world, vmid, "localhost")
    host = lab_env["ONE_LAB_SSH_HOST"]
    vm_dir = f"/var/lib/one/datastores/{SYS_DS}/{vmid}"
    on_host = Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / str(SYS_DS) / str(vmid)
    on_host.mkdir(parents=True)
    (on_host / "deployment.0").write_text("<domain/>")
    # another TM drives disk 3: its migrate actions are called, with our name as the caller
    other = remotes / "tm" / "other"
    other.mkdir(parents=True, exist_ok=True)
    calls = tmp_path / "other-calls"
    for action in ("premigrate", "postmigrate", "failmigrate"):
        script = other / action
        script.write_text(f"#!/bin/sh\necho {action} \"$@\" >> {calls}\ncat >> {calls}\n")
        script.chmod(0o755)
    disks = [disk_attrs(lab_env, 0, TYPE="FS", SIZE=1, DATASTORE_ID=SYS_DS),
             disk_attrs(lab_env, 3, TM_MAD="other", SOURCE="x/y", TYPE="FILE")]
    vm = vm_doc(vmid, disks, host=host, sys_ds=SYS_DS)
    stdin = base64.b64encode(vm.encode())

    def migrate(action, src, dst):
        return subprocess.run([str(remotes / "tm" / "rbd" / action), src, dst, vm_dir,
                               str(vmid), str(SYS_DS)], input=stdin, capture_output=True,
                              timeout=120, check=False)

    pre = migrate("premigrate", host, "localhost")
    assert pre.returncode == 0, pre.stderr
    assert (Path(vm_dir) / "deployment.0").read_text() == "<domain/>"
    assert (on_host / "deployment.0").exists()  # the source keeps its copy until the end
    fail = migrate("failmigrate", host, "localhost")
    assert fail.returncode == 0, fail.stderr
    assert not Path(vm_dir).exists() and (on_host / "deployment.0").exists()
    assert migrate("premigrate", host, "localhost").returncode == 0
    post = migrate("postmigrate", host, "localhost")
    assert post.returncode == 0, post.stderr
    assert (Path(vm_dir) / "deployment.0").exists() and not on_host.exists()
    assert not (Path(vm_dir) / ".one-drivers-copy").exists()
    log = calls.read_text()
    assert f"premigrate {host} localhost {vm_dir} {vmid} {SYS_DS} rbd" in log
    assert f"failmigrate {host} localhost {vm_dir} {vmid} {SYS_DS} rbd" in log
    assert stdin.decode() in log  # the VM, as oned sent it
    # two names for one machine (short name and FQDN, OpenNebula/one#3010): nothing is lost
    ssh_dir = Path(lab_env["ONE_DRIVERS_SSH_CONFIG"]).parent
    port = Path(lab_env["ONE_DRIVERS_SSH_CONFIG"]).read_text().split("Port ")[1].split()[0]
    alias_cfg = tmp_path / "ssh_config"
    alias_cfg.write_text(f"Include {lab_env['ONE_DRIVERS_SSH_CONFIG']}\n"
                         f"Host one-lab-alias\n  HostName 127.0.0.1\n  Port {port}\n"
                         f"  User root\n  IdentityFile {ssh_dir}/id_ed25519\n"
                         f"  UserKnownHostsFile {ssh_dir}/known_hosts\n"
                         f"  HostKeyAlias [127.0.0.1]:{port}\n  BatchMode yes\n")
    env = {**os.environ, "ONE_DRIVERS_SSH_CONFIG": str(alias_cfg)}
    (on_host.parent).mkdir(parents=True, exist_ok=True)
    on_host.mkdir()
    (on_host / "disk.4").write_text("iso")
    moved = subprocess.run([str(remotes / "tm" / "rbd" / "mv"), f"{host}:{vm_dir}",
                            f"one-lab-alias:{vm_dir}", str(vmid), str(SYS_DS)],
                           capture_output=True, text=True, timeout=120, check=False, env=env)
    assert moved.returncode == 0, moved.stderr
    assert "are the same directory: kept" in moved.stderr
    assert (on_host / "disk.4").read_text() == "iso"
    subprocess.run(["rm", "-rf", vm_dir, str(on_host)], check=True)


def test_system_datastore_monitor_sends_disk_sizes(world, remotes, ceph_admin, lab_env,
                                                   tmp_path):
    import base64
    import re
    import socket
    import zlib

    import rbd

    _, ioctx = ceph_admin
    vmid = next(_ids)
    record_vm(world, vmid, "localhost")
    vm_dir = f"{world['root']}/{SYS_DS}/{vmid}"
    prolog = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{world['image']} localhost:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        f"MKSWAP rbd 16 localhost:{vm_dir}/disk.2 {vmid} {SYS_DS}",
    ])
    assert prolog.returncode == 0, prolog.stderr
    with rbd.Image(ioctx, f"one-{world['image']}-{vmid}-0") as disk:
        disk.write(os.urandom(4 * MIB), 8 * MIB)  # one object of its own
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as monitord:
        monitord.bind(("127.0.0.1", 0))
        monitord.settimeout(10)
        doc = ds_doc(lab_env, ds_id=SYS_DS, ds={"MONITORD_PORT": monitord.getsockname()[1]})
        doc = doc.replace("</DS_DRIVER_ACTION_DATA>",
                          "<MONITOR_VM_DISKS>1</MONITOR_VM_DISKS></DS_DRIVER_ACTION_DATA>")
        proc = run_remote(remotes, "tm/rbd/monitor", [str(SYS_DS)], doc)
        assert proc.returncode == 0, proc.stderr
        assert [ln.split("=")[0] for ln in proc.stdout.split()] == ["USED_MB", "TOTAL_MB",
                                                                     "FREE_MB"]
        datagram = monitord.recv(65536).decode()
    kind, result, host_id, ts, payload = datagram.split()
    assert (kind, result, host_id, ts) == ("MONITOR_VM", "SUCCESS", "-1", "0")
    body = zlib.decompress(base64.b64decode(payload)).decode()
    vms = dict(re.findall(r'VM=\[ID=(\d+), MONITOR="([^"]*)"\]', body))
    monitor = base64.b64decode(vms[str(vmid)]).decode()
    sizes = dict(re.findall(r"DISK_SIZE=\[ID=(\d+), SIZE=(\d+)\]", monitor))
    assert sizes["0"] == "4"  # its own object, not the parent's data
    assert 0 < int(sizes["2"]) <= 16
    run_transfer(remotes, tmp_path, [
        f"DELETE rbd localhost:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        f"DELETE rbd localhost:{vm_dir}/disk.2 {vmid} {SYS_DS}"])


def test_live_snapshot_of_a_running_guest(world, remotes, ceph_admin, lab_env, tmp_path):
    """A running guest without an agent: the snapshot is taken crash-consistent and says so."""

    import libvirt
    import rbd

    _, ioctx = ceph_admin
    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    console = tmp_path / "console.log"
    dom = conn.createXML(f"""<domain type='qemu'><name>tm-live-{next(_ids)}</name>
      <memory unit='MiB'>128</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type>
        <kernel>{lab_env['ONE_LAB_GUEST_KERNEL']}</kernel>
        <initrd>{lab_env['ONE_LAB_GUEST_INITRD']}</initrd>
        <cmdline>console=ttyS0 quiet</cmdline></os>
      <devices><serial type='file'><source path='{console}'/><target port='0'/></serial>
      </devices></domain>""", 0)
    try:
        vmid = next(_ids)
        env, image = world["env"], world["image"]
        disk = disk_attrs(env, 0, IMAGE_ID=image, SOURCE=f"one/one-{image}", CLONE="YES",
                          TYPE="RBD", DATASTORE_ID=IMAGE_DS)
        vm = vm_doc(vmid, [disk], host="localhost").replace(
            "<DEPLOY_ID/>", f"<DEPLOY_ID>{dom.UUIDString()}</DEPLOY_ID>")
        world["oned"].record("vm", vmid, vm)
        where = f"localhost:{world['root']}/{SYS_DS}/{vmid}/disk.0"
        steps = run_transfer(remotes, tmp_path, [
            f"CLONE rbd fe:one/one-{image} {where} {vmid} {IMAGE_DS}",
            f"SNAP_CREATE_LIVE rbd {where} 0 {vmid} {IMAGE_DS}"])
        assert steps.returncode == 0, steps.stdout + steps.stderr
        assert "crash-consistent snapshot: could not freeze the guest" in steps.stdout
        with rbd.Image(ioctx, f"one-{image}-{vmid}-0", read_only=True) as d:
            assert [s["name"] for s in d.list_snaps()] == ["0"]
        assert dom.isActive()
        gone = run_transfer(remotes, tmp_path, [f"DELETE rbd {where} {vmid} {IMAGE_DS}"])
        assert gone.returncode == 0, gone.stderr
    finally:
        dom.destroy()
        conn.close()


def test_ssh_system_datastore_disks_are_files_on_the_host(world, remotes, ceph_admin, lab_env,
                                                          tmp_path):
    _, ioctx = ceph_admin
    vmid, image, persistent = next(_ids), world["image"], world["persistent"]
    host = lab_env["ONE_LAB_SSH_HOST"]
    record_vm(world, vmid, host)
    vm_dir = f"/var/lib/one/datastores/{SYS_DS}/{vmid}"
    on_host = Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / str(SYS_DS) / str(vmid)
    saved = next(_ids)
    assert run_remote(remotes, "datastore/rbd/mkfs", [str(saved)],
                      ds_doc(lab_env, saved, image={"SIZE": 1, "FORMAT": "save_as"})
                      ).returncode == 0
    try:
        prolog = run_transfer(remotes, tmp_path, [
            f"CLONE.ssh rbd fe:one/one-{image} {host}:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
            f"LN.ssh rbd fe:one/one-{persistent} {host}:{vm_dir}/disk.3 {vmid} {IMAGE_DS}",
        ])
        assert prolog.returncode == 0, prolog.stdout + prolog.stderr
        disk0 = (on_host / "disk.0").read_bytes()
        assert len(disk0) == 16 * MIB and disk0[:8 * MIB] == world["data"]
        assert (on_host / "disk.0").stat().st_blocks * 512 < 8 * MIB  # holes stayed holes
        # a local system datastore: marked for the host's monitoring, as the ssh TM does
        assert (on_host.parent / ".monitor").read_text().strip() == "ssh"
        with open(on_host / "disk.3", "r+b") as fh:  # the guest writes its persistent disk
            fh.seek(MIB)
            fh.write(b"written by the guest")
        epilog = run_transfer(remotes, tmp_path, [
            f"MVDS.ssh rbd {host}:{vm_dir}/disk.3 one/one-{persistent} {vmid} {IMAGE_DS}",
            f"CPDS.ssh rbd {host}:{vm_dir}/disk.0 one/one-{saved} -1 {vmid} {IMAGE_DS}",
            f"RESIZE.ssh rbd {host}:{vm_dir}/disk.0 32 {vmid} {IMAGE_DS}",
            f"DELETE.ssh rbd {host}:{vm_dir}/disk.0 {vmid} {IMAGE_DS}",
        ])
        assert epilog.returncode == 0, epilog.stdout + epilog.stderr
        assert read_image(ioctx, f"one-{persistent}") == (on_host / "disk.3").read_bytes()
        assert read_image(ioctx, f"one-{persistent}")[MIB:MIB + 20] == b"written by the guest"
        assert read_image(ioctx, f"one-{saved}") == disk0
        assert (on_host / "disk.0").stat().st_size == 32 * MIB
        bad = run_transfer(remotes, tmp_path, [
            f"CPDS.ssh rbd {host}:{vm_dir}/disk.0 one/one-{saved} 3 {vmid} {IMAGE_DS}"])
        assert bad.returncode == 3
    finally:
        subprocess.run(["rm", "-rf", str(on_host)], check=True)
        run_remote(remotes, "datastore/rbd/rm", [str(saved)],
                   ds_doc(lab_env, saved, image={"SOURCE": f"one/one-{saved}"}))


def test_deferred_delete_and_the_purge(world, remotes, ceph_admin, lab_env, tmp_path):
    import datetime

    import rbd

    from one_drivers.ceph.trash import purge

    cluster, ioctx = ceph_admin
    vmid, image = next(_ids), world["image"]
    record_vm(world, vmid, "localhost")
    where = f"localhost:{world['root']}/{SYS_DS}/{vmid}/disk.0"
    steps = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{image} {where} {vmid} {IMAGE_DS}",
        f"SNAP_CREATE rbd {where} 0 {vmid} {IMAGE_DS}",
        f"SNAP_CREATE rbd {where} 1 {vmid} {IMAGE_DS}"])
    assert steps.returncode == 0, steps.stdout + steps.stderr
    conf = remotes / "etc" / "tm" / "rbd" / "rbd.conf"
    original = conf.read_text()
    conf.write_text(original + "DELETE_MODE=deferred\n")
    try:
        gone = run_transfer(remotes, tmp_path, [f"DELETE rbd {where} {vmid} {IMAGE_DS}"])
    finally:
        conf.write_text(original)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "DELETE_MODE=deferred" in gone.stdout
    name = f"one-{image}-{vmid}-0"
    assert name not in rbd_names(ioctx) and name in trash_names(ioctx)
    counts = purge(ioctx, cluster=cluster,
                   now=datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
                   + datetime.timedelta(seconds=1))
    assert counts["removed"] >= 1
    assert name not in trash_names(ioctx)
    with rbd.Image(ioctx, f"one-{image}", read_only=True) as img:  # its clone snapshot went
        assert [s["name"] for s in img.list_snaps()] == []


def test_saveas_from_a_snapshot_and_the_checkpoint_goes_with_the_vm(world, remotes, ceph_admin,
                                                                     lab_env, tmp_path):
    import rbd

    _, ioctx = ceph_admin
    vmid, image = next(_ids), world["image"]
    record_vm(world, vmid, "localhost")
    vm_dir = f"{world['root']}/{SYS_DS}/{vmid}"
    disk0 = f"localhost:{vm_dir}/disk.0"
    assert run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{image} {disk0} {vmid} {IMAGE_DS}",
        f"SNAP_CREATE rbd {disk0} 0 {vmid} {IMAGE_DS}"]).returncode == 0
    with rbd.Image(ioctx, f"one-{image}-{vmid}-0") as disk:
        disk.write(b"after the snapshot", 0)
    saved = next(_ids)
    run_remote(remotes, "datastore/rbd/mkfs", [str(saved)],
               ds_doc(lab_env, saved, image={"SIZE": 1, "FORMAT": "save_as"}))
    proc = run_transfer(remotes, tmp_path, [
        f"CPDS rbd {disk0} one/one-{saved} 0 {vmid} {IMAGE_DS}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_image(ioctx, f"one-{saved}")[:8 * MIB] == world["data"]  # the snapshot's state
    # a stopped VM's checkpoint in Ceph goes with its directory
    rbd.RBD().create(ioctx, f"one-sys-{vmid}-checkpoint", MIB)
    Path(vm_dir).mkdir(parents=True, exist_ok=True)
    proc = run_transfer(remotes, tmp_path, [
        f"DELETE rbd {disk0} {vmid} {IMAGE_DS}",
        f"DELETE rbd localhost:{vm_dir} {vmid} {SYS_DS}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"one-sys-{vmid}-checkpoint" not in rbd_names(ioctx)
    assert not Path(vm_dir).exists()
    run_remote(remotes, "datastore/rbd/rm", [str(saved)],
               ds_doc(lab_env, saved, image={"SOURCE": f"one/one-{saved}"}))


def test_delete_removes_only_this_vms_disk(world, remotes, ceph_admin, lab_env, tmp_path):
    """A disk whose SOURCE names an image one-drivers did not make: the clone name it implies
    is neither stamped for this VM and disk nor upstream's name for one: delete refuses."""
    import rbd

    _, ioctx = ceph_admin
    vmid = next(_ids)
    foreign = f"operator-db-{vmid}"
    world["oned"].record("vm", vmid, vm_doc(vmid, [disk_attrs(
        lab_env, 0, SOURCE=f"one/{foreign}", CLONE="YES", TYPE="RBD",
        DATASTORE_ID=IMAGE_DS)], host="localhost"))
    victim = f"{foreign}-{vmid}-0"  # what the disk's clone would be called
    rbd.RBD().create(ioctx, victim, MIB)
    where = f"localhost:{world['root']}/{SYS_DS}/{vmid}/disk.0"
    try:
        gone = run_transfer(remotes, tmp_path, [f"DELETE rbd {where} {vmid} {IMAGE_DS}"])
        assert gone.returncode != 0
        assert "not removed" in gone.stdout + gone.stderr
        assert victim in rbd_names(ioctx), "an image we did not make is never removed"
    finally:
        rbd.RBD().remove(ioctx, victim)
    # positive control: this VM's own clone (stamped) of a real image is removed
    record_vm(world, vmid, "localhost")
    steps = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{world['image']} {where} {vmid} {IMAGE_DS}",
        f"DELETE rbd {where} {vmid} {IMAGE_DS}"])
    assert steps.returncode == 0, steps.stdout + steps.stderr
    assert f"one-{world['image']}-{vmid}-0" not in rbd_names(ioctx)


def _dead_host_config(lab_env, tmp_path: Path) -> dict[str, str]:
    """An ssh configuration in which ``dead-host`` is a powered-off machine: nothing answers on
    its port (a port the test just held and released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "ssh_config_dead"
    cfg.write_text(f"Include {lab_env['ONE_DRIVERS_SSH_CONFIG']}\n"
                   f"Host dead-host\n  HostName 127.0.0.1\n  Port {port}\n  BatchMode yes\n"
                   "  ConnectTimeout 5\n")
    return {**os.environ, "ONE_DRIVERS_SSH_CONFIG": str(cfg)}


@pytest.mark.parametrize("lcm_state", [16, 60, 61])
def test_recovery_from_a_failed_host_moves_nothing_from_it(lab_env, remotes, tmp_path,
                                                           lcm_state):
    """onevm recover / the HA hook (OpenNebula/one#5653): oned moves the VM directory from a
    host that is down. The source side is skipped in UNKNOWN and PROLOG_MIGRATE_UNKNOWN(_FAILURE);
    the destination gets its directory. Positive control: the same move in a normal state does
    go to the dead host, and fails naming it."""
    vmid = next(_ids)
    vm_dir = f"/var/lib/one/datastores/{SYS_DS}/{vmid}"
    env = _dead_host_config(lab_env, tmp_path)

    def mv():
        return subprocess.run([str(remotes / "tm" / "rbd" / "mv"), f"dead-host:{vm_dir}",
                               f"localhost:{vm_dir}", str(vmid), str(SYS_DS)],
                              capture_output=True, text=True, timeout=120, check=False, env=env)

    oned = Lab().oned
    oned.record("vm", vmid, vm_doc(vmid, [], host="dead-host", sys_ds=SYS_DS, lcm_state=3))
    normal = mv()
    assert normal.returncode != 0, normal.stderr
    assert "cannot reach dead-host over ssh" in normal.stderr.splitlines()[-1], normal.stderr
    assert not Path(vm_dir).exists()
    oned.record("vm", vmid, vm_doc(vmid, [], host="dead-host", sys_ds=SYS_DS,
                                   lcm_state=lcm_state))
    try:
        recovered = mv()
        assert recovered.returncode == 0, recovered.stderr
        assert "nothing moved from it" in recovered.stderr
        assert Path(vm_dir).is_dir()
        assert mv().returncode == 0  # a re-run converges
    finally:
        subprocess.run(["rm", "-rf", vm_dir], check=True)


def test_a_failed_move_leaves_no_staging_directory(lab_env, remotes, tmp_path):
    """The copy is staged next to the destination; when the move fails after staging (here the
    destination is a mount point that cannot be replaced) the staging directory goes too, and
    the source is untouched."""
    host = lab_env["ONE_LAB_SSH_HOST"]
    vmid = next(_ids)
    vm_dir = f"/var/lib/one/datastores/{SYS_DS}/{vmid}"
    here = Path(vm_dir)
    on_host = Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / str(SYS_DS) / str(vmid)
    on_host.mkdir(parents=True)
    (on_host / "disk.1").write_bytes(b"iso" * 1000)
    here.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(here)], check=True, timeout=20)
    trace = tmp_path / "points"
    env = {**os.environ, "ONE_DRIVERS_FAULT_TRACE": str(trace)}
    try:
        res = subprocess.run([str(remotes / "tm" / "rbd" / "mv"), f"{host}:{vm_dir}",
                              f"localhost:{vm_dir}", str(vmid), str(SYS_DS)],
                             capture_output=True, text=True, timeout=120, check=False, env=env)
        assert res.returncode != 0, res.stderr
        # positive control: the copy was staged before the failure
        assert "copy-dir:copied" in trace.read_text().split()
        debris = [p.name for p in here.parent.iterdir()
                  if p.name.startswith(f".one-drivers-tmp-{vmid}-")]
        assert debris == []
        assert (on_host / "disk.1").read_bytes() == b"iso" * 1000
    finally:
        subprocess.run(["umount", str(here)], check=False, timeout=20)
        subprocess.run(["rm", "-rf", str(here), str(on_host)], check=True)


def test_a_volatile_disk_oned_would_look_for_as_a_file_is_refused(world, remotes, ceph_admin,
                                                                  lab_env, tmp_path):
    """oned gives volatile disks the system datastore's DISK_TYPE, FILE unless the template sets
    RBD, and then writes them into the deployment file as files in the VM directory (a real oned's
    deploy failed: 'Cannot access storage file .../disk.2'). MKIMAGE says so at once and makes
    nothing; with DISK_TYPE RBD (positive control) the same line makes the image."""
    _, ioctx = ceph_admin
    host = lab_env["ONE_LAB_SSH_HOST"]
    for disk_type, expect_ok in (("FILE", False), ("RBD", True)):
        vmid = next(_ids)
        disk = disk_attrs(lab_env, 1, TYPE="FS", FS="", SIZE=8, DATASTORE_ID=SYS_DS,
                          DISK_TYPE=disk_type)
        world["oned"].record("vm", vmid, vm_doc(vmid, [disk], host=host, sys_ds=SYS_DS))
        res = run_transfer(remotes, tmp_path, [
            f"MKIMAGE rbd 8 raw {host}:/var/lib/one/datastores/{SYS_DS}/{vmid}/disk.1 {vmid} "
            f"{SYS_DS}"])
        made = f"one-sys-{vmid}-1" in rbd_names(ioctx)
        if expect_ok:
            assert res.returncode == 0 and made, res.stderr
            assert run_transfer(remotes, tmp_path, [
                f"DELETE rbd {host}:/var/lib/one/datastores/{SYS_DS}/{vmid}/disk.1 {vmid} "
                f"{SYS_DS}"]).returncode == 0
        else:
            assert res.returncode != 0 and not made
            assert 'set DISK_TYPE="RBD" in system datastore' in res.stderr, res.stderr


def test_disks_upstreams_ceph_drivers_made_keep_working(world, remotes, ceph_admin, lab_env,
                                                        tmp_path):
    """Switching DS_MAD/TM_MAD from upstream's `ceph` to `rbd`: the state upstream's scripts
    leave, built with their exact rbd sequences (contract section 3.3): `rbd_make_snap`
    (one-<IMG>@snap, protected), `rbd clone one-<IMG>@snap one-<IMG>-<VM>-<DISK>`, a disk
    snapshot taken by upstream's snap_create (`snap create` + `snap protect`), the protected
    `one_backup_<n>` its incremental backups keep, and a persistent image that kept an `@snap`
    from when it was not persistent (OpenNebula/one#6207). Our clone, snapshot delete, delete
    and ln then work over it, and nothing is left."""
    import rbd

    _, ioctx = ceph_admin
    env, image, persistent = world["env"], world["image"], world["persistent"]
    host = lab_env["ONE_LAB_SSH_HOST"]
    old_vm, new_vm = next(_ids), next(_ids)
    theirs = f"one-{image}-{old_vm}-0"
    # upstream's state
    for name in (f"one-{image}", f"one-{persistent}"):
        with rbd.Image(ioctx, name) as img:
            img.create_snap("snap")
            img.protect_snap("snap")
    rbd.RBD().clone(ioctx, f"one-{image}", "snap", ioctx, theirs)
    with rbd.Image(ioctx, theirs) as disk:
        disk.write(b"upstream-vm-data", 0)
        for snap in ("0", "one_backup_2"):
            disk.create_snap(snap)
            disk.protect_snap(snap)
    for vm in (old_vm, new_vm):
        world["oned"].record("vm", vm, vm_doc(vm, [
            disk_attrs(env, 0, IMAGE_ID=image, SOURCE=f"one/one-{image}", CLONE="YES",
                       TYPE="RBD", DATASTORE_ID=IMAGE_DS),
            disk_attrs(env, 1, IMAGE_ID=persistent, SOURCE=f"one/one-{persistent}",
                       CLONE="NO", PERSISTENT="YES", TYPE="RBD", DATASTORE_ID=IMAGE_DS)],
            host=host, sys_ds=SYS_DS))

    def transfer(*lines: str) -> None:
        res = run_transfer(remotes, tmp_path, list(lines))
        assert res.returncode == 0, res.stdout + res.stderr

    old_dir, new_dir = (f"/var/lib/one/datastores/{SYS_DS}/{vm}" for vm in (old_vm, new_vm))
    try:
        # a new VM from the same image, a persistent image used in place
        transfer(f"CLONE rbd fe:one/one-{image} {host}:{new_dir}/disk.0 {new_vm} {IMAGE_DS}",
                 f"LN rbd fe:one/one-{persistent} {host}:{new_dir}/disk.1 {new_vm} {IMAGE_DS}")
        assert read_image(ioctx, f"one-{image}-{new_vm}-0")[:8 * MIB] == world["data"]
        # the old VM's upstream snapshot goes; its disk goes with the backup snapshot on it
        transfer(f"SNAP_DELETE rbd {host}:{old_dir}/disk.0 0 {old_vm} {IMAGE_DS}")
        with rbd.Image(ioctx, theirs, read_only=True) as disk:
            assert "0" not in {s["name"] for s in disk.list_snaps()}
            assert bytes(disk.read(0, 16)) == b"upstream-vm-data"
        transfer(f"DELETE rbd {host}:{old_dir}/disk.0 {old_vm} {IMAGE_DS}")
        assert theirs not in rbd_names(ioctx) | trash_names(ioctx)
        transfer(f"DELETE rbd {host}:{new_dir}/disk.0 {new_vm} {IMAGE_DS}")
        left = {n for n in rbd_names(ioctx) | trash_names(ioctx)
                if n.startswith((f"one-{image}-", f"one-{persistent}-"))}
        assert left == set()
        for name in (f"one-{image}", f"one-{persistent}"):  # the images themselves live on
            assert read_image(ioctx, name)[:8 * MIB] == world["data"]
    finally:
        for name in (f"one-{image}", f"one-{persistent}"):
            with rbd.Image(ioctx, name) as img:
                if "snap" in {s["name"] for s in img.list_snaps()} and not list(
                        img.list_children2()):
                    img.unprotect_snap("snap")
                    img.remove_snap("snap")


def test_volatile_disk_with_rbd_format_1_is_refused(world, remotes, ceph_admin, lab_env,
                                                    tmp_path):
    _, ioctx = ceph_admin
    vmid, fmt1_ds = next(_ids), 121
    world["oned"].record("datastore", fmt1_ds, datastore_doc(lab_env, fmt1_ds, system=True,
                                                             RBD_FORMAT="1"))
    record_vm(world, vmid, "localhost")
    vm_dir = tmp_path / "datastores" / str(fmt1_ds) / str(vmid)
    refused = run_transfer(remotes, tmp_path, [
        f"MKIMAGE rbd 32 raw localhost:{vm_dir}/disk.1 {vmid} {fmt1_ds}"])
    assert refused.returncode != 0 and "RBD_FORMAT=1" in refused.stdout + refused.stderr, (
        refused.stdout + refused.stderr)
    assert f"one-sys-{vmid}-1" not in rbd_names(ioctx)
    made = run_transfer(remotes, tmp_path, [  # positive control: the system datastore as usual
        f"MKIMAGE rbd 32 raw localhost:{vm_dir}/disk.1 {vmid} {SYS_DS}",
        f"DELETE rbd localhost:{vm_dir}/disk.1 {vmid} {SYS_DS}"])
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"INFO: removed one/one-sys-{vmid}-1" in made.stdout + made.stderr
