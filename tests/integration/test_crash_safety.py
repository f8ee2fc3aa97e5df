"""Crash safety: every multi-step action is killed at each of its step boundaries (the fault
hook, as SIGKILL would: no cleanup runs), then re-run; it must converge with nothing leaked."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
from pathlib import Path

import pytest

from one_drivers.ceph import ownership
from one_drivers.core.faults import CRASH_AT, KILLED, TRACE
from one_drivers.lab.documents import datastore_doc, disk_attrs, ds_doc, vm_doc
from one_drivers.lab.lab import Lab
from tests.helpers import rbd_names, read_image, run_remote, trash_names

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
IMAGE_DS, SYS_DS = 100, 101
_ids = itertools.count(random.randint(10_000, 90_000) * 10 + 7)


def points_of(run) -> list[str]:
    """The step boundaries an action passes, in order, each once."""
    trace = Path(f"/tmp/one-drivers-trace-{os.getpid()}-{next(_ids)}")
    try:
        assert run({TRACE: str(trace)}).returncode == 0
        seen = trace.read_text().split() if trace.exists() else []
    finally:
        trace.unlink(missing_ok=True)
    return list(dict.fromkeys(seen))


def crash_then_rerun(run, point: str) -> None:
    crashed = run({CRASH_AT: point})
    assert crashed.returncode == KILLED, (point, crashed.stderr)
    again = run({})
    assert again.returncode == 0, (point, again.stderr)


def leftovers(ioctx, *prefixes: str) -> set[str]:
    """Images under those names, in the pool or in the trash, except staging debris in the
    trash: a killed writer's watch keeps it busy, so a re-run hides it there for the purge."""
    return {n for n in rbd_names(ioctx) | {t for t in trash_names(ioctx)
                                           if not t.endswith(".one-drivers-tmp")}
            if any(n.startswith(p) for p in prefixes)}


def purge_debris(ioctx, prefix: str) -> None:
    """Once the killed writers' watches expire, trash-purge removes the staging debris."""
    import datetime
    import time

    from one_drivers.ceph.trash import purge

    deadline = time.monotonic() + 60
    while {t for t in trash_names(ioctx) if t.startswith(prefix)}:
        assert time.monotonic() < deadline, trash_names(ioctx)
        purge(ioctx, now=datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
              + datetime.timedelta(days=1))
        time.sleep(1)


def snapshots(ioctx, name: str) -> list[str]:
    import rbd

    with rbd.Image(ioctx, name, read_only=True) as image:
        return [s["name"] for s in image.list_snaps()]


def owner_of(ioctx, name: str) -> tuple[str | None, ...]:
    """Kind, VM and disk from the image's ownership record (image-meta)."""
    import rbd

    with rbd.Image(ioctx, name, read_only=True) as image:
        meta = ownership.read(image)
    return meta.get("kind"), meta.get("vm"), meta.get("disk")


@pytest.fixture
def image(lab_env, remotes, ceph_admin, tmp_path):
    Lab().oned.record("datastore", IMAGE_DS, datastore_doc(lab_env, IMAGE_DS))
    Lab().oned.record("datastore", SYS_DS, datastore_doc(lab_env, SYS_DS, system=True))
    iid = next(_ids)
    src = tmp_path / "disk.raw"
    src.write_bytes(os.urandom(3 * MIB) + bytes(5 * MIB))
    doc = ds_doc(lab_env, iid, image={"PATH": str(src)}, ds={"SAFE_DIRS": "/tmp"})
    assert run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc).returncode == 0
    yield iid, src.read_bytes()
    run_remote(remotes, "datastore/rbd/rm", [str(iid)],
               ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"}))


def tm(remotes: Path, action: str, *args: object):
    def run(extra_env: dict[str, str]):
        return subprocess.run([str(remotes / "tm" / "rbd" / action), *map(str, args)],
                              capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, **extra_env})
    return run


def test_tm_clone_and_delete_converge_from_every_crash(lab_env, remotes, ceph_admin, image):
    _, ioctx = ceph_admin
    iid, data = image
    vmid = next(_ids)
    disk = disk_attrs(lab_env, 0, IMAGE_ID=iid, SOURCE=f"one/one-{iid}", CLONE="YES",
                      TYPE="RBD", DATASTORE_ID=IMAGE_DS)
    Lab().oned.record("vm", vmid, vm_doc(vmid, [disk], host="localhost"))
    where = f"localhost:/var/tmp/ds/{SYS_DS}/{vmid}/disk.0"
    clone = tm(remotes, "clone", f"fe:one/one-{iid}", where, vmid, IMAGE_DS)
    delete = tm(remotes, "delete", where, vmid, IMAGE_DS)
    settle = {"ONE_DRIVERS_REMOTES": str(remotes)}
    conf = remotes / "etc" / "tm" / "rbd" / "rbd.conf"
    original = conf.read_text()
    conf.write_text(original + "SWEEP_MIN_AGE=0\n")  # no concurrent clones here
    try:
        clone_points = points_of(clone)
        assert {"clone:snapshot-taken", "clone:cloned"} <= set(clone_points), clone_points
        assert delete({}).returncode == 0
        delete_points = None
        for point in clone_points:
            crash_then_rerun(clone, point)
            assert read_image(ioctx, f"one-{iid}-{vmid}-0")[:8 * MIB] == data
            assert owner_of(ioctx, f"one-{iid}-{vmid}-0") == ("clone", str(vmid), "0"), point
            if delete_points is None:
                with_snaps = tm(remotes, "snap_create", where, 0, vmid, IMAGE_DS)
                assert with_snaps({}).returncode == 0
                delete_points = points_of(delete)
                assert {"remove:snap-ids-released", "delete:removed"} <= set(delete_points), \
                    delete_points
                assert clone({}).returncode == 0
            assert tm(remotes, "snap_create", where, 0, vmid, IMAGE_DS)({}).returncode == 0
            assert tm(remotes, "snap_create", where, 1, vmid, IMAGE_DS)({}).returncode == 0
            for dpoint in delete_points:
                crash_then_rerun(delete, dpoint)
                assert leftovers(ioctx, f"one-{iid}-{vmid}") == set()
                assert snapshots(ioctx, f"one-{iid}") == [], (point, dpoint)
                assert clone({}).returncode == 0
                for snap in (0, 1):
                    assert tm(remotes, "snap_create", where, snap, vmid,
                              IMAGE_DS)({}).returncode == 0
            assert delete({}).returncode == 0
        assert snapshots(ioctx, f"one-{iid}") == []
        del settle
    finally:
        conf.write_text(original)


def test_ds_cp_and_tm_mkimage_converge_from_every_crash(lab_env, remotes, ceph_admin,
                                                        tmp_path):
    _, ioctx = ceph_admin
    src = tmp_path / "disk.raw"
    data = os.urandom(8 * MIB) + bytes(8 * MIB)
    src.write_bytes(data)
    iid = next(_ids)
    doc = ds_doc(lab_env, iid, image={"PATH": str(src)}, ds={"SAFE_DIRS": "/tmp"})

    def cp(extra_env):
        import base64

        return subprocess.run([str(remotes / "datastore/rbd/cp"), str(iid)],
                              input=base64.b64encode(doc.encode()), capture_output=True,
                              timeout=300, check=False, env={**os.environ, **extra_env})

    rm_doc = ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"})
    points = points_of(cp)
    assert {"create:created", "copy:progress", "build:made"} <= set(points), points
    assert run_remote(remotes, "datastore/rbd/rm", [str(iid)], rm_doc).returncode == 0
    for point in points:
        crash_then_rerun(cp, point)
        assert read_image(ioctx, f"one-{iid}") == data
        assert leftovers(ioctx, f"one-{iid}") == {f"one-{iid}"}, point
        assert run_remote(remotes, "datastore/rbd/rm", [str(iid)], rm_doc).returncode == 0
    purge_debris(ioctx, f"one-{iid}")

    Lab().oned.record("datastore", SYS_DS, datastore_doc(lab_env, SYS_DS, system=True))
    vmid = next(_ids)
    Lab().oned.record("vm", vmid, vm_doc(vmid, [disk_attrs(lab_env, 1, TYPE="FS", FS="ext4",
                                                           SIZE=16)], host="localhost"))
    where = f"localhost:/var/tmp/ds/{SYS_DS}/{vmid}/disk.1"
    mkimage = tm(remotes, "mkimage", 16, "raw", where, vmid, SYS_DS)
    delete = tm(remotes, "delete", where, vmid, SYS_DS)
    points = points_of(mkimage)
    assert {"create:created", "build:made"} <= set(points), points
    assert delete({}).returncode == 0
    for point in points:
        crash_then_rerun(mkimage, point)
        assert read_image(ioctx, f"one-sys-{vmid}-1")[1080:1082] == b"\x53\xef"
        assert leftovers(ioctx, f"one-sys-{vmid}-") == {f"one-sys-{vmid}-1"}
        assert delete({}).returncode == 0
    assert leftovers(ioctx, f"one-sys-{vmid}-") == set()
    purge_debris(ioctx, f"one-sys-{vmid}-")


def test_vm_directory_moves_converge_from_every_crash(lab_env, remotes, tmp_path):
    host = lab_env["ONE_LAB_SSH_HOST"]
    vmid = next(_ids)
    vm_dir = f"/var/lib/one/datastores/{SYS_DS}/{vmid}"
    on_host = Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / str(SYS_DS) / str(vmid)
    here = Path(vm_dir)

    def fresh():
        subprocess.run(["rm", "-rf", str(here), str(on_host)], check=True)
        on_host.mkdir(parents=True)
        (on_host / "disk.3").write_bytes(b"context iso" * 1000)
        (on_host / "deployment.0").write_text("<domain/>")

    mv = tm(remotes, "mv", f"{host}:{vm_dir}", f"localhost:{vm_dir}", vmid, SYS_DS)
    fresh()
    points = points_of(mv)
    assert {"copy-dir:copied", "mv:copied"} <= set(points), points
    for point in points:
        fresh()
        crash_then_rerun(mv, point)
        assert (here / "disk.3").read_bytes() == b"context iso" * 1000
        assert (here / "deployment.0").read_text() == "<domain/>"
        assert not on_host.exists()
        debris = [p.name for p in here.parent.iterdir()
                  if p.name.startswith(f".one-drivers-tmp-{vmid}-")]
        assert debris == [], (point, debris)
        assert not (here / ".one-drivers-copy").exists()
    subprocess.run(["rm", "-rf", str(here), str(on_host)], check=True)
