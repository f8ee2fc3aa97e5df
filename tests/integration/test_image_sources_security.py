"""A source may only ever read itself (SECURITY.md): crafted images whose headers point at a
restricted file or another tenant's RBD image, from a local path and from http on loopback, a
symlink swapped during the check, rbd:// sources outside the datastore's pools, credentials in
URLs, and servers that trickle. Every refusal is checked against Ceph: nothing of the secret
arrived (``read_image``), and every test has a positive control."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import ds_doc, lab_ds_template, last_line, rbd_names, read_image, run_remote
from tests.integration.test_ds_rbd_actions import _Handler, image_ids  # noqa: F401

pytestmark = pytest.mark.lab

MIB = 1 << 20
SECRET = b"TENANT-B-SECRET!" * (MIB // 16)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    d = tmp_path / "restricted"
    d.mkdir()
    path = d / "secret.raw"
    path.write_bytes(SECRET)
    return path


def _qemu_img(*argv: str) -> None:
    subprocess.run(["qemu-img", *argv], check=True, capture_output=True, timeout=60)


def _crafted(tmp_path: Path, secret: Path, lab_env: dict[str, str]) -> dict[str, Path]:
    out = tmp_path / "crafted"
    out.mkdir(exist_ok=True)
    backing = out / "backing.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(backing), "1M")
    vmdk = out / "flat.vmdk"
    vmdk.write_text("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                    'createType="monolithicFlat"\n'
                    f'RW 2048 FLAT "{secret}" 0\n')
    keyring = Path(lab_env["CEPH_CONF"]).parent / "ceph.client.admin.keyring"
    rbd_backed = out / "rbd.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b",
              f"rbd:one-data/secret:id=admin:keyring={keyring}:conf={lab_env['CEPH_CONF']}",
              "-F", "raw", str(rbd_backed), "1M")
    return {"backing": backing, "vmdk": vmdk, "rbd": rbd_backed}


@pytest.fixture
def secret_in_another_pool(lab_env: dict[str, str], ceph_admin):
    """Another tenant's image, in a pool the datastore's Ceph user can read but is not its."""
    import rbd

    cluster, _ = ceph_admin
    ioctx = cluster.open_ioctx(lab_env["ONE_LAB_CEPH_DATA_POOL"])
    name = "secret"
    if name in rbd.RBD().list(ioctx):
        rbd.RBD().remove(ioctx, name)
    rbd.RBD().create(ioctx, name, MIB)
    with rbd.Image(ioctx, name) as image:
        image.write(SECRET, 0)
    yield name
    rbd.RBD().remove(ioctx, name)
    ioctx.close()


@pytest.fixture
def www(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _cp(env, remotes, iid, path, secret_dir: Path, *, owner=(0, 0), template=None, **ds):
    doc = ds_doc(env, iid, image={"PATH": path, "SIZE": 1, "UID": owner[0], "GID": owner[1]},
                 image_template=template,
                 ds={"RESTRICTED_DIRS": str(secret_dir), "SAFE_DIRS": "/var/tmp", **ds})
    return run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc, timeout=120)


@pytest.mark.parametrize("via", ["local", "http"])
def test_headers_pointing_elsewhere_are_refused_and_nothing_of_the_secret_arrives(
        lab_env, remotes, ceph_admin, image_ids, tmp_path, secret, secret_in_another_pool,  # noqa: F811
        www, via):
    _, ioctx = ceph_admin
    root, base = www
    crafted = _crafted(tmp_path, secret, lab_env)
    # positive control: upstream's way (qemu-img following the header) does read the secret
    leaked = tmp_path / "leaked.raw"
    _qemu_img("convert", "-O", "raw", str(crafted["backing"]), str(leaked))
    assert leaked.read_bytes()[:16] == SECRET[:16]
    for kind, path in crafted.items():
        if via == "http":
            shutil.copy(path, root / path.name)
            source = f"{base}/{path.name}"
        else:
            source = str(path)
        iid = image_ids()
        proc = _cp(lab_env, remotes, iid, source, secret.parent)
        assert proc.returncode == 3, (kind, proc.stderr)
        assert any(w in last_line(proc.stderr) for w in
                   ("backing file", "other files", "more than one file")), proc.stderr
        assert f"one-{iid}" not in rbd_names(ioctx), "no half-made image"
        stat = run_remote(remotes, "datastore/rbd/stat", [str(iid)],
                          ds_doc(lab_env, iid, image={"PATH": source}))
        assert stat.returncode == 3, (kind, stat.stderr)
    # positive control: a self-contained qcow2 from the same place imports
    good = tmp_path / "good.qcow2"
    _qemu_img("convert", "-O", "qcow2", str(tmp_path / "leaked.raw"), str(good))
    if via == "http":
        shutil.copy(good, root / "good.qcow2")
    iid = image_ids()
    proc = _cp(lab_env, remotes, iid, f"{base}/good.qcow2" if via == "http" else str(good),
               tmp_path / "elsewhere")
    assert proc.returncode == 0, proc.stderr


def test_qemu_img_cannot_open_anything_but_the_source_even_if_inspection_missed_it(
        lab_env, ceph_admin, tmp_path, secret):
    """Inspection bypassed on purpose: qemu-img gets the descriptor with backing=null."""
    import rbd

    from one_drivers.ceph import qemu_img
    from one_drivers.ceph.session import CephAccess
    from one_drivers.core.config import Settings

    _, ioctx = ceph_admin
    crafted = _crafted(tmp_path, secret, lab_env)
    name = f"one-drivers-test-{uuid.uuid4().hex[:8]}"
    rbd.RBD().create(ioctx, name, MIB)
    try:
        fd = os.open(crafted["backing"], os.O_RDONLY)
        access = CephAccess.from_settings(Settings([lab_ds_template(lab_env)]))
        qemu_img.convert_into_rbd(fd, "qcow2", access, lab_env["ONE_LAB_CEPH_POOL"], name, 60)
        os.close(fd)
        data = read_image(ioctx, name)
        assert SECRET[:16] not in data and data == bytes(MIB)
    finally:
        rbd.RBD().remove(ioctx, name)


def test_a_symlink_swapped_during_the_check_never_imports_a_restricted_file(
        lab_env, remotes, ceph_admin, image_ids, secret):  # noqa: F811
    _, ioctx = ceph_admin
    safe = Path(f"/var/tmp/one-drivers-race-{uuid.uuid4().hex[:6]}")
    safe.mkdir()
    allowed = safe / "allowed.raw"
    allowed.write_bytes(b"A" * MIB)
    link = safe / "disk.raw"
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for target in (allowed, secret):
                tmp = safe / f"l.{uuid.uuid4().hex[:6]}"
                tmp.symlink_to(target)
                os.replace(tmp, link)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    outcomes = {"imported": 0, "refused": 0}
    try:
        for _ in range(16):
            iid = image_ids()
            proc = _cp(lab_env, remotes, iid, str(link), secret.parent)
            if proc.returncode == 0:
                assert read_image(ioctx, f"one-{iid}")[:MIB] == b"A" * MIB
                outcomes["imported"] += 1
            else:
                assert "restricted directory" in proc.stderr, proc.stderr
                assert f"one-{iid}" not in rbd_names(ioctx)
                outcomes["refused"] += 1
    finally:
        stop.set()
        flipper.join(5)
        shutil.rmtree(safe)
    assert sum(outcomes.values()) == 16


def test_rbd_sources_read_only_allowed_pools_with_the_datastores_own_credentials(
        lab_env, remotes, ceph_admin, image_ids, secret_in_another_pool, tmp_path):  # noqa: F811
    _, ioctx = ceph_admin
    keyring = Path(lab_env["CEPH_CONF"]).parent / "ceph.client.admin.keyring"
    pool = lab_env["ONE_LAB_CEPH_DATA_POOL"]
    for url in (f"rbd://host/{pool}/{secret_in_another_pool}",
                f"rbd://admin@host/{pool}/{secret_in_another_pool}?CEPH_USER=admin&"
                f"CEPH_KEY={keyring}"):
        iid = image_ids()
        proc = _cp(lab_env, remotes, iid, url, tmp_path / "none")
        assert proc.returncode == 3, proc.stderr
        assert f"one-{iid}" not in rbd_names(ioctx)
    # positive control: the pool is readable by the datastore's user once an admin allows it
    iid = image_ids()
    proc = _cp(lab_env, remotes, iid, f"rbd://host/{pool}/{secret_in_another_pool}",
               tmp_path / "none", RBD_SOURCE_POOLS=f"one {pool}")
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, f"one-{iid}")[:16] == SECRET[:16]


def test_a_tenant_cannot_import_another_tenants_disk_from_rbd(
        lab_env, remotes, ceph_admin, image_ids, tmp_path):  # noqa: F811
    """PATH is a tenant's text: rbd:// of the datastore's own pool would name any image there
    (another tenant's OS disk, a VM's disk, a backup). Only the oneadmin group imports from RBD
    (the positive control), or a source a driver granted for that image; a grant for another
    source, another image name, a forged or an expired one is refused."""
    import time

    from one_drivers.ceph import grants

    _, ioctx = ceph_admin
    victim = image_ids()
    doc = ds_doc(lab_env, victim, image={"PATH": str(tmp_path / "v.raw"), "SIZE": 1},
                 ds={"SAFE_DIRS": str(tmp_path)})
    (tmp_path / "v.raw").write_bytes(SECRET + bytes(MIB - len(SECRET)))
    assert run_remote(remotes, "datastore/rbd/cp", [str(victim)], doc).returncode == 0
    url = f"rbd://host/one/one-{victim}"
    tenant = (7, 100)
    iid = image_ids()
    refused = _cp(lab_env, remotes, iid, url, tmp_path / "none", owner=tenant)
    assert refused.returncode == 5 and "only the oneadmin group" in refused.stderr
    assert f"one-{iid}" not in rbd_names(ioctx)
    stat = run_remote(remotes, "datastore/rbd/stat", [str(iid)],  # oned's: <IMAGE><PATH/>
                      f"<DS_DRIVER_ACTION_DATA><IMAGE><PATH>{url}</PATH></IMAGE>"
                      + ds_doc(lab_env).split("<DS_DRIVER_ACTION_DATA>", 1)[1])
    assert (stat.returncode, stat.stdout) == (0, "1\n"), "a size, nothing of its data"
    name = f"img{iid}"
    past = int(time.time()) - 10
    expired = f"{past}.{grants._mac(grants._key(), url, name, past)}"
    for bad in (grants.grant(url + "@x", name), grants.grant(url, "another"), "1.deadbeef",
                expired):
        proc = _cp(lab_env, remotes, iid, url, tmp_path / "none", owner=tenant,
                   template={"RBD_SOURCE_GRANT": bad})
        assert proc.returncode == 5, (bad, proc.stderr)
    granted = _cp(lab_env, remotes, iid, url, tmp_path / "none", owner=tenant,
                  template={"RBD_SOURCE_GRANT": grants.grant(url, name)})
    assert granted.returncode == 0, granted.stderr
    assert read_image(ioctx, f"one-{iid}")[:16] == SECRET[:16]
    admin = _cp(lab_env, remotes, image_ids(), url, tmp_path / "none")  # oneadmin's group
    assert admin.returncode == 0, admin.stderr


class _Trickle(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(32 * MIB))
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            return


def test_a_trickling_server_ends_at_the_deadline_the_datastore_sets(
        lab_env, remotes, ceph_admin, image_ids, tmp_path):  # noqa: F811
    _, ioctx = ceph_admin
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://user:hunter2@127.0.0.1:{server.server_address[1]}/slow.raw"
    log = tmp_path / "driver.log"
    try:
        iid = image_ids()
        doc = ds_doc(lab_env, iid, image={"PATH": url, "SIZE": 32}, ds={"CP_TIMEOUT": "3"})
        proc = run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc, timeout=60,
                          env={**os.environ, "ONE_DRIVERS_LOG": str(log)})
        assert proc.returncode == 4, proc.stderr
        assert "did not finish within 3 s" in last_line(proc.stderr)
        assert f"one-{iid}" not in rbd_names(ioctx)
        assert "hunter2" not in proc.stderr and "hunter2" not in log.read_text()
        assert "user:***@" in proc.stderr
    finally:
        server.shutdown()


def test_oned_that_trickles_ends_at_the_lookup_deadline():
    from one_drivers.core.errors import BackendTimeout
    from one_drivers.core.oned import Oned

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sent = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for _ in range(40):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return
                sent.set()
                time.sleep(0.25)

    threading.Thread(target=serve, daemon=True).start()
    oned = Oned(f"http://127.0.0.1:{listener.getsockname()[1]}/RPC2", "a:b", timeout=1.5)
    with pytest.raises(BackendTimeout, match=r"did not answer within 1\.5 s"):
        oned.vm(1)
    assert sent.is_set(), "positive control: the server was trickling"
    listener.close()


_HOLDER = """
import sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1], rados_id="admin"); c.connect(timeout=10)
io = c.open_ioctx(sys.argv[2]); img = rbd.Image(io, sys.argv[3])  # read-write: a watch
print(c.get_addrs() if hasattr(c, "get_addrs") else "", flush=True)
sys.stdin.readline(); img.close(); io.close(); c.shutdown()
"""


def test_rm_refuses_an_image_a_client_still_has_open_unless_it_is_fenced(
        lab_env, remotes, ceph_admin, image_ids):  # noqa: F811
    import json
    import sys

    import rbd

    cluster, ioctx = ceph_admin
    iid = image_ids()
    name = f"one-{iid}"
    rbd.RBD().create(ioctx, name, MIB)
    doc = ds_doc(lab_env, iid, image={"SOURCE": f"one/{name}"}, ds={"WATCHER_WAIT": "2"})
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, lab_env["CEPH_CONF"], "one", name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()  # the image is open
        with rbd.Image(ioctx, name, read_only=True) as image:
            addr = next(iter(image.watchers_list()))["addr"]
        proc = run_remote(remotes, "datastore/rbd/rm", [str(iid)], doc)
        assert proc.returncode == 1, proc.stderr
        assert f"in use by Ceph client {addr}" in last_line(proc.stderr)
        assert name in rbd_names(ioctx), "kept, not trashed"
        assert name not in {e["name"] for e in rbd.RBD().trash_list(ioctx)}
        # fenced: provably gone, so removed
        ret, _, err = cluster.mon_command(json.dumps({"prefix": "osd blocklist", "blocklistop":
                                                      "add", "addr": addr}), b"", timeout=10)
        assert ret == 0, err
        try:
            proc = run_remote(remotes, "datastore/rbd/rm", [str(iid)], doc)
            assert proc.returncode == 0, proc.stderr
            assert name not in rbd_names(ioctx)
        finally:
            cluster.mon_command(json.dumps({"prefix": "osd blocklist", "blocklistop": "rm",
                                            "addr": addr}), b"", timeout=10)
    finally:
        holder.kill()
        holder.wait()


def test_rm_removes_only_this_images_own_rbd_image(lab_env, remotes, ceph_admin, image_ids):  # noqa: F811
    import rbd

    _, ioctx = ceph_admin
    iid = image_ids()
    name = f"operator-db-{uuid.uuid4().hex[:6]}"
    rbd.RBD().create(ioctx, name, MIB)
    try:
        doc = ds_doc(lab_env, iid, image={"SOURCE": f"one/{name}"})
        proc = run_remote(remotes, "datastore/rbd/rm", [str(iid)], doc)
        assert proc.returncode == 1 and "not removed" in last_line(proc.stderr), proc.stderr
        assert name in rbd_names(ioctx)
    finally:
        rbd.RBD().remove(ioctx, name)
    own = f"one-{iid}"  # positive control: upstream's name for this image is removed
    rbd.RBD().create(ioctx, own, MIB)
    proc = run_remote(remotes, "datastore/rbd/rm", [str(iid)],
                      ds_doc(lab_env, iid, image={"SOURCE": f"one/{own}"}))
    assert proc.returncode == 0, proc.stderr
    assert own not in rbd_names(ioctx)
