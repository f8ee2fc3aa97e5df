"""DS rbd actions through the installed remotes, as oned runs them, checked in the lab's Ceph."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import itertools
import json
import lzma
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import (
    allocated,
    ds_doc,
    last_line,
    purge_image,
    rbd_names,
    read_image,
    run_remote,
    trash_names,
)

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
_ids = itertools.count(random.randint(100_000, 900_000) * 10)


@pytest.fixture
def image_ids(ceph_admin):
    """Fresh OpenNebula image ids; whatever the test leaves in Ceph under them is removed."""
    used: list[int] = []

    def new() -> int:
        used.append(next(_ids))
        return used[-1]

    yield new
    import rbd

    _, ioctx = ceph_admin
    for entry in list(rbd.RBD().trash_list(ioctx)):
        if any(entry["name"].startswith(f"one-{i}") for i in used):
            try:
                rbd.RBD().trash_restore(ioctx, entry["id"], entry["name"])
            except rbd.Error:
                continue
    for name in sorted(rbd_names(ioctx), key=len, reverse=True):
        if any(name == f"one-{i}" or name.startswith(f"one-{i}-") or
               name.startswith(f"one-{i}.") for i in used):
            purge_image(ioctx, name)


@pytest.fixture
def staging(tmp_path):
    d = tmp_path / "staging"
    d.mkdir()
    return d


@pytest.fixture
def sample(tmp_path) -> tuple[Path, bytes]:
    """A 32 MiB raw disk with 8 MiB of data in two places (sparse)."""
    data = bytearray(32 * MIB)
    data[0:4 * MIB] = os.urandom(4 * MIB)
    data[20 * MIB:24 * MIB] = os.urandom(4 * MIB)
    path = tmp_path / "disk.raw"
    with open(path, "wb") as fh:
        fh.write(data[:4 * MIB])
        fh.seek(20 * MIB)
        fh.write(data[20 * MIB:24 * MIB])
        fh.truncate(32 * MIB)
    return path, bytes(data)


def cp(env, remotes, image_id, path, *, template=None, ds=None):
    """cp as oned runs it; a cp that hangs fails the test at the subprocess timeout."""
    doc = ds_doc(env, image_id, image={"PATH": path, "SIZE": 32},
                 image_template=template, ds={"SAFE_DIRS": "/tmp /var/tmp", **(ds or {})})
    return run_remote(remotes, "datastore/rbd/cp", [str(image_id)], doc, timeout=120)


# -- cp ----------------------------------------------------------------


def test_cp_raw_streams_sparse_and_answers_source_format(lab_env, remotes, ceph_admin,
                                                         image_ids, sample):
    path, data = sample
    iid = image_ids()
    proc = cp(lab_env, remotes, iid, str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"one/one-{iid} raw\n"
    _, ioctx = ceph_admin
    assert read_image(ioctx, f"one-{iid}") == data
    assert allocated(ioctx, f"one-{iid}") == 8 * MIB  # sparse input stays sparse
    import rbd

    with rbd.Image(ioctx, f"one-{iid}", read_only=True) as image:
        meta = json.loads(image.metadata_get("one_drivers"))
    assert meta["owner"] == "one-drivers" and meta["kind"] == "image"
    assert meta["image"] == str(iid) and meta["datastore"] == "100"
    assert meta["creator"] and int(meta["created"]) > 0
    # idempotent: a re-run answers the same and changes nothing
    again = cp(lab_env, remotes, iid, str(path))
    assert again.returncode == 0 and again.stdout == proc.stdout
    assert "already there" in again.stderr


def test_rbd_format_1_is_refused_before_anything_is_made(lab_env, remotes, ceph_admin,
                                                        image_ids, sample):
    """librbd makes format 2 whatever it is asked: RBD_FORMAT=1 is said, not ignored."""
    path, data = sample
    _, ioctx = ceph_admin
    for fmt in ("1", "qcow2"):
        iid = image_ids()
        proc = cp(lab_env, remotes, iid, str(path), ds={"RBD_FORMAT": fmt})
        assert proc.returncode == 3, proc.stderr
        assert f"RBD_FORMAT={fmt!r}" in proc.stderr or f"RBD_FORMAT={fmt}:" in proc.stderr
        assert not {n for n in rbd_names(ioctx) | trash_names(ioctx)
                    if n.startswith(f"one-{iid}")}
        mkfs = run_remote(remotes, "datastore/rbd/mkfs", [str(iid)],
                          ds_doc(lab_env, iid, image={"SIZE": 8}, ds={"RBD_FORMAT": fmt}))
        assert mkfs.returncode == 3 and "RBD_FORMAT" in mkfs.stderr, mkfs.stderr
    iid = image_ids()  # positive control: format 2 said explicitly
    proc = cp(lab_env, remotes, iid, str(path), ds={"RBD_FORMAT": "2"})
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, f"one-{iid}") == data


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_cp_decompresses(lab_env, remotes, ceph_admin, image_ids, sample, kind):
    path, data = sample
    packed = path.with_suffix("." + kind)
    opener = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[kind]
    with opener(packed, "wb") as fh:
        fh.write(data)
    iid = image_ids()
    proc = cp(lab_env, remotes, iid, str(packed))
    assert proc.returncode == 0, proc.stderr
    _, ioctx = ceph_admin
    assert read_image(ioctx, f"one-{iid}") == data
    assert allocated(ioctx, f"one-{iid}") == 8 * MIB


def test_cp_no_decompress_keeps_the_bytes(lab_env, remotes, ceph_admin, image_ids, sample):
    path, data = sample
    packed = path.with_suffix(".gz")
    packed.write_bytes(gzip.compress(data))
    iid = image_ids()
    proc = cp(lab_env, remotes, iid, str(packed), ds={"NO_DECOMPRESS": "YES"})
    assert proc.returncode == 0, proc.stderr
    _, ioctx = ceph_admin
    assert read_image(ioctx, f"one-{iid}") == packed.read_bytes()


def test_cp_converts_qcow2_local_and_compressed_staged(lab_env, remotes, ceph_admin,
                                                       image_ids, sample, staging):
    path, data = sample
    qcow = path.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(path), str(qcow)], check=True)
    _, ioctx = ceph_admin
    iid = image_ids()
    proc = cp(lab_env, remotes, iid, str(qcow), ds={"STAGING_DIR": str(staging)})
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, f"one-{iid}") == data
    assert allocated(ioctx, f"one-{iid}") <= 8 * MIB
    assert list(staging.iterdir()) == []  # a local file is converted in place, no staging
    packed = qcow.with_suffix(".qcow2.gz")
    packed.write_bytes(gzip.compress(qcow.read_bytes()))
    iid2 = image_ids()
    proc = cp(lab_env, remotes, iid2, str(packed), ds={"STAGING_DIR": str(staging)})
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, f"one-{iid2}") == data
    assert list(staging.iterdir()) == []  # staged once, removed


def test_cp_checksums(lab_env, remotes, ceph_admin, image_ids, sample):
    path, data = sample
    _, ioctx = ceph_admin
    iid = image_ids()
    good = {"MD5": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest()}
    assert cp(lab_env, remotes, iid, str(path), template=good).returncode == 0
    iid2 = image_ids()
    bad = cp(lab_env, remotes, iid2, str(path), template={"MD5": "0" * 32})
    assert bad.returncode == 3
    assert "MD5 of" in last_line(bad.stderr) and "the template says 000" in bad.stderr
    assert not {f"one-{iid2}", f"one-{iid2}.one-drivers-tmp"} & rbd_names(ioctx)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_cp_and_stat_from_http(lab_env, remotes, ceph_admin, image_ids, sample, http_root):
    _, data = sample
    root, base = http_root
    (root / "disk.raw").write_bytes(data)
    (root / "disk.raw.xz").write_bytes(lzma.compress(data))
    _, ioctx = ceph_admin
    iid = image_ids()
    proc = cp(lab_env, remotes, iid, f"{base}/disk.raw.xz")
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, f"one-{iid}") == data
    for name in ("disk.raw", "disk.raw.xz"):
        doc = ds_doc(lab_env, 1, image={"PATH": f"{base}/{name}"})
        stat = run_remote(remotes, "datastore/rbd/stat", ["1"], doc)
        assert (stat.returncode, stat.stdout) == (0, "32\n"), stat.stderr
    missing = cp(lab_env, remotes, image_ids(), f"{base}/nope.raw")
    assert missing.returncode == 6 and "HTTP 404" in missing.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = cp(lab_env, remotes, image_ids(), f"http://127.0.0.1:{port}/x.raw")
    assert unreachable.returncode == 4 and "cannot download" in unreachable.stderr


def test_stat_local_formats(lab_env, remotes, sample):
    path, data = sample
    qcow = path.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(path), str(qcow)], check=True)
    gz = path.with_suffix(".gz")
    gz.write_bytes(gzip.compress(data))
    for p in (path, qcow, gz):
        doc = ds_doc(lab_env, 1, image={"PATH": str(p)}, ds={"SAFE_DIRS": "/tmp"})
        proc = run_remote(remotes, "datastore/rbd/stat", ["1"], doc)
        assert (proc.returncode, proc.stdout) == (0, "32\n"), (p, proc.stderr)


def test_cp_killed_halfway_leaves_no_image_and_a_rerun_succeeds(lab_env, remotes, ceph_admin,
                                                                image_ids, sample):
    import base64

    path, data = sample
    _, ioctx = ceph_admin
    iid = image_ids()
    doc = ds_doc(lab_env, iid, image={"PATH": str(path)},
                 ds={"SAFE_DIRS": "/tmp", "LIMIT_TRANSFER_BW": "4M"})  # ~8 s for 32 MiB
    proc = subprocess.Popen([str(remotes / "datastore/rbd/cp"), str(iid)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(base64.b64encode(doc.encode()))
    proc.stdin.close()
    deadline = time.monotonic() + 30
    staging = f"one-{iid}.one-drivers-tmp"
    while staging not in rbd_names(ioctx) or allocated(ioctx, staging) == 0:
        assert time.monotonic() < deadline, "the copy never started"  # the event: data landed
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"one-{iid}" not in rbd_names(ioctx)  # nothing under the final name
    rerun = cp(lab_env, remotes, iid, str(path))
    assert rerun.returncode == 0, rerun.stderr
    assert "left by an interrupted run" in rerun.stderr
    assert read_image(ioctx, f"one-{iid}") == data
    assert f"one-{iid}.one-drivers-tmp" not in rbd_names(ioctx)


def test_cp_never_overwrites_an_image_that_is_not_ours(lab_env, remotes, ceph_admin, image_ids,
                                                       sample):
    import rbd

    path, _ = sample
    _, ioctx = ceph_admin
    iid = image_ids()
    rbd.RBD().create(ioctx, f"one-{iid}", MIB)
    with rbd.Image(ioctx, f"one-{iid}") as image:
        image.write(b"precious", 0)
    proc = cp(lab_env, remotes, iid, str(path))
    assert proc.returncode == 1
    assert "already exists and is not ours" in proc.stderr
    assert read_image(ioctx, f"one-{iid}")[:8] == b"precious"


def test_cp_refuses_restricted_paths_and_missing_sources(lab_env, remotes, image_ids):
    doc = ds_doc(lab_env, image_ids(), image={"PATH": "/etc/shadow"},
                 ds={"RESTRICTED_DIRS": "/", "SAFE_DIRS": "/var/tmp"})
    proc = run_remote(remotes, "datastore/rbd/cp", ["1"], doc)
    assert proc.returncode == 3 and "restricted directory" in proc.stderr
    proc = cp(lab_env, remotes, image_ids(), "/tmp/does/not/exist.img")
    assert proc.returncode == 6 and "does not exist" in proc.stderr
    nopath = ds_doc(lab_env, 5, image={})
    proc = run_remote(remotes, "datastore/rbd/cp", ["5"], nopath)
    assert proc.returncode == 3
    assert last_line(proc.stderr).startswith(
        "image 5: missing required attribute DS_DRIVER_ACTION_DATA/IMAGE/PATH")


def test_shell_metacharacters_are_inert(lab_env, remotes, ceph_admin, image_ids, tmp_path):
    canary = tmp_path / "pwned"
    evil = f"/tmp/x;touch {canary};$(touch {canary})`touch {canary}`"
    proc = cp(lab_env, remotes, image_ids(), evil)
    assert proc.returncode == 6
    proc = cp(lab_env, remotes, image_ids(), "/tmp/x", ds={"POOL_NAME": f"one;touch {canary}"})
    assert proc.returncode != 0
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(qcow), "1M"], check=True,
                   capture_output=True)
    proc = cp(lab_env, remotes, image_ids(), str(qcow),
              ds={"CEPH_CONF": f"{lab_env['CEPH_CONF']}:id=admin;touch {canary}"})
    assert proc.returncode != 0
    assert not canary.exists()


# -- mkfs ----------------------------------------------------------------


def test_mkfs_formats_reserves_and_validates(lab_env, remotes, ceph_admin, image_ids):
    _, ioctx = ceph_admin
    iid = image_ids()
    doc = ds_doc(lab_env, iid, image={"SIZE": 64, "FS": "ext4"})
    proc = run_remote(remotes, "datastore/rbd/mkfs", [str(iid)], doc)
    # oned's ImageManager::_mkfs stores the whole answer as SOURCE: the source alone
    assert (proc.returncode, proc.stdout) == (0, f"one/one-{iid}\n"), proc.stderr
    content = read_image(ioctx, f"one-{iid}")
    assert len(content) == 64 * MIB and content[1080:1082] == b"\x53\xef"  # ext4 magic
    assert allocated(ioctx, f"one-{iid}") < 16 * MIB
    plain = image_ids()
    proc = run_remote(remotes, "datastore/rbd/mkfs", [str(plain)],
                      ds_doc(lab_env, plain, image={"SIZE": 10}))
    assert proc.returncode == 0 and allocated(ioctx, f"one-{plain}") == 0
    save_as = image_ids()
    proc = run_remote(remotes, "datastore/rbd/mkfs", [str(save_as)],
                      ds_doc(lab_env, save_as, image={"SIZE": 10, "FORMAT": "save_as"}))
    assert proc.stdout == f"one/one-{save_as}\n"
    assert f"one-{save_as}" not in rbd_names(ioctx)  # only the name is reserved
    proc = run_remote(remotes, "datastore/rbd/mkfs", ["9"],
                      ds_doc(lab_env, 9, image={"SIZE": 10, "FS": "ntfs"}))
    assert proc.returncode == 3 and "file system 'ntfs' is not supported" in proc.stderr


def test_ec_data_pool_is_used(lab_env, remotes, ceph_admin, image_ids, sample):
    import rbd

    path, data = sample
    cluster, ioctx = ceph_admin
    data_pool_id = cluster.pool_lookup(lab_env["ONE_LAB_CEPH_DATA_POOL"])
    iid = image_ids()
    proc = cp(lab_env, remotes, iid, str(path),
              ds={"EC_POOL_NAME": lab_env["ONE_LAB_CEPH_DATA_POOL"]})
    assert proc.returncode == 0, proc.stderr
    clone_id = image_ids()
    doc = ds_doc(lab_env, clone_id, image={"PATH": f"one/one-{iid}"},
                 ds={"EC_POOL_NAME": lab_env["ONE_LAB_CEPH_DATA_POOL"]})
    assert run_remote(remotes, "datastore/rbd/clone", [str(clone_id)], doc).returncode == 0
    for name in (f"one-{iid}", f"one-{clone_id}"):
        with rbd.Image(ioctx, name, read_only=True) as image:
            assert image.data_pool_id() == data_pool_id
    assert read_image(ioctx, f"one-{clone_id}") == data


# -- clone and rm ----------------------------------------------------------------


def clone(env, remotes, new_id, source, **ds):
    doc = ds_doc(env, new_id, image={"PATH": source, "CLONING_ID": 1}, ds=ds or None)
    return run_remote(remotes, "datastore/rbd/clone", [str(new_id)], doc)


def rm(env, remotes, image_id, source=None, **ds):
    doc = ds_doc(env, image_id, image={"SOURCE": source or f"one/one-{image_id}"}, ds=ds or None)
    return run_remote(remotes, "datastore/rbd/rm", [str(image_id)], doc)


def test_clone_is_copy_on_write_and_the_source_stays_deletable(lab_env, remotes, ceph_admin,
                                                               image_ids, sample):
    import rbd

    path, data = sample
    _, ioctx = ceph_admin
    src, dst = image_ids(), image_ids()
    assert cp(lab_env, remotes, src, str(path)).returncode == 0
    proc = clone(lab_env, remotes, dst, f"one/one-{src}")
    assert (proc.returncode, proc.stdout) == (0, f"one/one-{dst} raw\n"), proc.stderr
    with rbd.Image(ioctx, f"one-{dst}", read_only=True) as image:
        assert image.get_parent_image_spec()["image_name"] == f"one-{src}"
    assert allocated(ioctx, f"one-{dst}") < MIB  # nothing copied
    assert read_image(ioctx, f"one-{dst}") == data
    assert clone(lab_env, remotes, dst, f"one/one-{src}").returncode == 0  # idempotent

    gone = rm(lab_env, remotes, src)  # the source goes while its clone lives
    assert gone.returncode == 0, gone.stderr
    assert f"one-{src}" not in rbd_names(ioctx) and f"one-{src}" in trash_names(ioctx)
    assert read_image(ioctx, f"one-{dst}") == data
    assert rm(lab_env, remotes, src).returncode == 0  # idempotent
    last = rm(lab_env, remotes, dst)  # the last clone: the hidden source is collected
    assert last.returncode == 0, last.stderr
    assert not {f"one-{src}", f"one-{dst}"} & (rbd_names(ioctx) | trash_names(ioctx))


def test_clone_depth_cap_flattens(lab_env, remotes, ceph_admin, image_ids, sample):
    import rbd

    path, data = sample
    _, ioctx = ceph_admin
    chain = [image_ids()]
    assert cp(lab_env, remotes, chain[0], str(path)).returncode == 0
    for _ in range(3):
        chain.append(image_ids())
        proc = clone(lab_env, remotes, chain[-1], f"one/one-{chain[-2]}", CLONE_MAX_DEPTH="2")
        assert proc.returncode == 0, proc.stderr
    with rbd.Image(ioctx, f"one-{chain[2]}", read_only=True) as image:
        assert image.get_parent_image_spec()["image_name"] == f"one-{chain[1]}"
    with rbd.Image(ioctx, f"one-{chain[3]}", read_only=True) as image, \
            pytest.raises(rbd.ImageNotFound):
        image.get_parent_image_spec()  # level 3 > 2: flattened
    assert read_image(ioctx, f"one-{chain[3]}") == data
    for iid in reversed(chain):
        assert rm(lab_env, remotes, iid).returncode == 0
    assert not {f"one-{i}" for i in chain} & (rbd_names(ioctx) | trash_names(ioctx))


def test_rm_with_ceph_trash_and_purge(lab_env, remotes, ceph_admin, image_ids, sample):
    import datetime

    from one_drivers.ceph.trash import purge

    path, _ = sample
    _, ioctx = ceph_admin
    kept, expired = image_ids(), image_ids()
    for iid in (kept, expired):
        assert cp(lab_env, remotes, iid, str(path)).returncode == 0
    assert rm(lab_env, remotes, kept, CEPH_TRASH="YES", TRASH_DEFERMENT="3600").returncode == 0
    assert rm(lab_env, remotes, expired, CEPH_TRASH="YES", TRASH_DEFERMENT="0").returncode == 0
    assert {f"one-{kept}", f"one-{expired}"} <= trash_names(ioctx)
    counts = purge(ioctx, now=datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
                   + datetime.timedelta(seconds=1))
    assert counts["removed"] >= 1 and counts["not_expired"] >= 1
    assert f"one-{expired}" not in trash_names(ioctx)
    assert f"one-{kept}" in trash_names(ioctx)
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "one-drivers"), "rbd", "trash-purge", "--pool", "one",
         "--conf", lab_env["CEPH_CONF"], "--user", lab_env["ONE_LAB_CEPH_USER"],
         "--keyring", lab_env["ONE_LAB_CEPH_KEYRING"]], capture_output=True, text=True,
        check=False, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "not expired yet" in cli.stdout and f"one-{kept}" in trash_names(ioctx)
    denied = subprocess.run(
        [str(Path(sys.executable).parent / "one-drivers"), "rbd", "trash-purge", "--pool", "one",
         "--conf", lab_env["CEPH_CONF"], "--user", "nobody"], capture_output=True, text=True,
        check=False, timeout=60)
    assert denied.returncode == 5 and denied.stderr.count("\n") == 1


def test_rm_removes_only_what_belongs_to_the_image(lab_env, remotes, ceph_admin, image_ids,
                                                   sample):
    import rbd

    path, _ = sample
    _, ioctx = ceph_admin
    iid, neighbour = image_ids(), image_ids()
    for i in (iid, neighbour):
        assert cp(lab_env, remotes, i, str(path)).returncode == 0
    with rbd.Image(ioctx, f"one-{iid}") as image:
        image.create_snap("0")
        image.create_snap("1")
        image.protect_snap("1")  # as upstream's driver leaves them
    rbd.RBD().create(ioctx, f"one-{iid}-7-0", MIB)  # a VM disk of image iid: not the image's
    try:
        proc = rm(lab_env, remotes, iid)
        assert proc.returncode == 0, proc.stderr
        names = rbd_names(ioctx)
        assert f"one-{iid}" not in names
        assert {f"one-{neighbour}", f"one-{iid}-7-0"} <= names
    finally:
        rbd.RBD().remove(ioctx, f"one-{iid}-7-0")


# -- failures of the backend ----------------------------------------------------------------


def test_denied_and_missing_pool(lab_env, remotes, image_ids, sample):
    path, _ = sample
    denied = cp(lab_env, remotes, image_ids(), str(path), ds={"CEPH_USER": "admin"})
    assert denied.returncode == 5 and "Ceph refused" in last_line(denied.stderr)
    other = cp(lab_env, remotes, image_ids(), str(path),
               ds={"POOL_NAME": "device_health_metrics"})
    assert other.returncode == 5
    missing = cp(lab_env, remotes, image_ids(), str(path), ds={"POOL_NAME": "nosuchpool"})
    assert missing.returncode == 6 and "opening pool nosuchpool" in missing.stderr


def test_a_frozen_osd_ends_the_action_within_its_deadline(lab_env, remotes, ceph_admin,
                                                          image_ids, sample):
    from one_drivers.lab.lab import Lab
    from one_drivers.lab.proc import read_pid

    path, _ = sample
    _, ioctx = ceph_admin
    osd = read_pid(Lab().ceph.pids["osd.0"])
    iid = image_ids()
    os.kill(osd, signal.SIGSTOP)
    try:  # a hang would end at cp's subprocess timeout and fail; the deadline ends it at once
        proc = cp(lab_env, remotes, iid, str(path), ds={"CEPH_CALL_TIMEOUT": "3"})
    finally:
        os.kill(osd, signal.SIGCONT)
    assert proc.returncode == 4, proc.stderr
    assert "did not answer" in last_line(proc.stderr)
    assert f"one-{iid}" not in rbd_names(ioctx)


def test_pool_quota_reached(lab_env, remotes, ceph_admin, image_ids, sample):
    import json

    path, _ = sample
    cluster, ioctx = ceph_admin
    pool = lab_env["ONE_LAB_CEPH_DATA_POOL"]

    def mon(**cmd):
        ret, out, status = cluster.mon_command(json.dumps({**cmd, "format": "json"}), b"")
        assert ret == 0, status
        return json.loads(out) if out else None

    def full() -> bool:
        pools = mon(prefix="osd dump")["pools"]
        return "full_quota" in next(p for p in pools if p["pool_name"] == pool)["flags_names"]

    filler = cluster.open_ioctx(pool)
    filler.write_full("quota-filler", os.urandom(4 * MIB))
    mon(prefix="osd pool set-quota", pool=pool, field="max_bytes", val=str(MIB))
    try:
        deadline = time.monotonic() + 60
        while not full():  # Ceph enforces quotas from the stats it gathers: wait for them
            assert time.monotonic() < deadline, "the quota never took effect"
            time.sleep(0.5)
        iid = image_ids()
        proc = cp(lab_env, remotes, iid, str(path),
                  ds={"EC_POOL_NAME": pool, "CEPH_CALL_TIMEOUT": "5"})
        assert proc.returncode in (1, 4), proc.stderr
        line = last_line(proc.stderr)
        assert line.startswith(f"image {iid}: ") and "Traceback" not in proc.stderr
        assert f"one-{iid}" not in rbd_names(ioctx)
    finally:
        mon(prefix="osd pool set-quota", pool=pool, field="max_bytes", val="0")
        filler.remove_object("quota-filler")
        filler.close()


def test_clones_share_a_snapshot_only_while_the_source_is_unchanged(lab_env, remotes, ceph_admin,
                                                                    image_ids, sample):
    import rbd

    path, data = sample
    _, ioctx = ceph_admin
    src, a, b, c = image_ids(), image_ids(), image_ids(), image_ids()
    assert cp(lab_env, remotes, src, str(path)).returncode == 0
    for new in (a, b):
        assert clone(lab_env, remotes, new, f"one/one-{src}").returncode == 0

    def parent_snap(iid):
        with rbd.Image(ioctx, f"one-{iid}", read_only=True) as image:
            return image.get_parent_image_spec()["snap_name"]

    assert parent_snap(a) == parent_snap(b)  # unchanged source: one snapshot serves both
    with rbd.Image(ioctx, f"one-{src}") as image:
        image.write(b"changed", 0)
    assert clone(lab_env, remotes, c, f"one/one-{src}").returncode == 0
    assert parent_snap(c) != parent_snap(a)
    assert read_image(ioctx, f"one-{a}") == data
    assert read_image(ioctx, f"one-{c}")[:7] == b"changed"
    for iid in (a, b, c, src):
        assert rm(lab_env, remotes, iid).returncode == 0
    assert not {f"one-{i}" for i in (src, a, b, c)} & (rbd_names(ioctx) | trash_names(ioctx))


def test_export_gives_a_url_cp_imports(lab_env, remotes, ceph_admin, image_ids, sample):
    import xml.etree.ElementTree as ET

    path, data = sample
    _, ioctx = ceph_admin
    src, copy = image_ids(), image_ids()
    assert cp(lab_env, remotes, src, str(path)).returncode == 0
    proc = run_remote(remotes, "datastore/rbd/export", [str(src)],
                      ds_doc(lab_env, src, image={"SOURCE": f"one/one-{src}"}))
    assert proc.returncode == 0, proc.stderr
    info = ET.fromstring(proc.stdout)
    assert info.tag == "IMPORT_INFO"
    assert info.findtext("MD5") == hashlib.md5(data).hexdigest()
    assert (info.findtext("SIZE"), info.findtext("FORMAT"), info.findtext("DISPOSE")) == (
        "32", "raw", "NO")
    url = info.findtext("IMPORT_SOURCE")
    assert url.startswith("rbd://") and url.endswith(f"/one/one-{src}")
    assert "?" not in url and "@" not in url.split("/")[2], "no credentials of any kind"
    proc = cp(lab_env, remotes, copy, url, template={"MD5": info.findtext("MD5")})
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, f"one-{copy}") == data
    assert allocated(ioctx, f"one-{copy}") == 8 * MIB


def test_reruns_converge(lab_env, remotes, ceph_admin, image_ids):
    import rbd

    _, ioctx = ceph_admin
    iid = image_ids()
    doc = ds_doc(lab_env, iid, image={"SIZE": 16, "FS": "ext4", "PERSISTENT": 1,
                                      "SOURCE": f"one/one-{iid}", "TARGET_SNAPSHOT": 0})
    for _ in range(2):
        proc = run_remote(remotes, "datastore/rbd/mkfs", [str(iid)], doc)
        assert (proc.returncode, proc.stdout) == (0, f"one/one-{iid}\n"), proc.stderr
    before = read_image(ioctx, f"one-{iid}")
    with rbd.Image(ioctx, f"one-{iid}") as image:
        image.create_snap("0")
        image.write(b"x" * 4096, 0)
    for _ in range(2):
        assert run_remote(remotes, "datastore/rbd/snap_revert", [str(iid)], doc).returncode == 0
        assert read_image(ioctx, f"one-{iid}") == before
    for _ in range(2):
        assert run_remote(remotes, "datastore/rbd/snap_delete", [str(iid)], doc).returncode == 0
    for _ in range(2):
        assert run_remote(remotes, "datastore/rbd/rm", [str(iid)], doc).returncode == 0
    assert f"one-{iid}" not in rbd_names(ioctx) | trash_names(ioctx)


def test_an_image_whose_source_an_earlier_mkfs_answer_broke_can_be_removed(
        lab_env, remotes, ceph_admin, image_ids):
    """Earlier versions' mkfs answered `one/one-N raw`, all of which oned stored as SOURCE."""
    _, ioctx = ceph_admin
    iid = image_ids()
    made = run_remote(remotes, "datastore/rbd/mkfs", [str(iid)],
                      ds_doc(lab_env, iid, image={"SIZE": 4}))
    assert made.returncode == 0 and f"one-{iid}" in rbd_names(ioctx)
    broken = ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid} raw"})
    proc = run_remote(remotes, "datastore/rbd/rm", [str(iid)], broken)
    assert proc.returncode == 0, proc.stderr
    assert f"one-{iid}" not in rbd_names(ioctx) | trash_names(ioctx)


def test_a_cephx_user_that_does_not_exist(lab_env, remotes, image_ids, sample):
    path, _ = sample
    proc = cp(lab_env, remotes, image_ids(), str(path), ds={"CEPH_USER": "nobody"})
    assert proc.returncode == 5
    assert "Ceph refused the connection" in last_line(proc.stderr)
    proc = cp(lab_env, remotes, image_ids(), str(path),
              ds={"CEPH_USER": "nobody", "CEPH_KEY": ""})
    assert proc.returncode == 5


def test_mkfs_xfs(lab_env, remotes, ceph_admin, image_ids):
    _, ioctx = ceph_admin
    iid = image_ids()
    doc = ds_doc(lab_env, iid, image={"SIZE": 320, "FS": "xfs"})  # xfs wants 300 MB at least
    proc = run_remote(remotes, "datastore/rbd/mkfs", [str(iid)], doc)
    assert proc.returncode == 0, proc.stderr
    import rbd

    with rbd.Image(ioctx, f"one-{iid}", read_only=True) as image:
        assert image.read(0, 4) == b"XFSB"
    assert allocated(ioctx, f"one-{iid}") < 64 * MIB  # only the file system's metadata
