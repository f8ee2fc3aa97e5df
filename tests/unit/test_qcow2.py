"""The one-pass qcow2 writer, checked by QEMU's own tools: ``qemu-img check`` finds no error or
leak, ``qemu-img compare`` finds the content of a model disk, and an increment rebased onto its
base (as upstream's restore rebuilds a chain) reads as the disk at that point."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from one_drivers.core import qcow2
from one_drivers.core.qcow2 import CLUSTER, DATA, ZEROED

GIB = 1 << 30


class Disk:
    """A sparse raw file as the model of a disk."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        with open(path, "wb") as fh:
            fh.truncate(size)

    def write(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as fh:
            fh.seek(offset)
            fh.write(data)

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)


def write_qcow2(path: Path, disk: Disk, kinds: dict[int, str]) -> qcow2.Layout:
    lay = qcow2.plan(disk.size, kinds)
    end = 0
    with open(path, "wb") as fh:
        for offset, data in qcow2.chunks(lay, disk.read):
            assert offset == end, "the file is written front to back"
            fh.write(data)
            end = offset + len(data)
    assert end == lay.file_size
    return lay


def qemu_img(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *argv], capture_output=True, text=True, timeout=120,
                          check=False)


def assert_clean(path: Path) -> None:
    proc = qemu_img("check", "-f", "qcow2", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No errors were found" in proc.stdout


def assert_same(qcow: Path, disk: Disk) -> None:
    proc = qemu_img("compare", "-f", "qcow2", "-F", "raw", str(qcow), str(disk.path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def scatter(rng: random.Random, disk: Disk, count: int,
            low: int = 0) -> list[tuple[int, int, bool]]:
    """Random writes (any alignment) from ``low`` on, as librbd's diff would list them."""
    extents = []
    for _ in range(count):
        length = rng.randint(1, 3 * CLUSTER)
        offset = rng.randrange(low, disk.size - length)
        disk.write(offset, rng.randbytes(length))
        extents.append((offset, length, True))
    return extents


@pytest.mark.parametrize("size", [5 * CLUSTER + 24 * 512, GIB + 7 * CLUSTER, 10 << 40])
def test_a_full_backup_file_holds_the_disk(tmp_path, size):
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    disk = Disk(tmp_path / "disk.raw", size)
    extents = scatter(rng, disk, 40)
    extents.append((size - 100, 100, True))  # the last, partial cluster
    disk.write(size - 100, rng.randbytes(100))
    out = tmp_path / "disk.0.0"
    write_qcow2(out, disk, qcow2.kinds_from_extents(size, extents))
    assert_clean(out)
    assert_same(out, disk), f"seed {seed}"
    info = qemu_img("info", "--output=json", str(out))
    assert f'"virtual-size": {size}' in info.stdout


def test_an_increment_rebased_on_its_base_reads_as_the_disk_then(tmp_path):
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    size = 40 * CLUSTER + 333
    disk = Disk(tmp_path / "disk.raw", size)
    disk.write(10 * CLUSTER, rng.randbytes(CLUSTER))
    disk.write(20 * CLUSTER, rng.randbytes(CLUSTER))
    base_extents = [(10 * CLUSTER, CLUSTER, True), (20 * CLUSTER, CLUSTER, True)]
    base_extents += scatter(rng, disk, 30, low=22 * CLUSTER)
    base = tmp_path / "disk.0.0"
    write_qcow2(base, disk, qcow2.kinds_from_extents(size, base_extents))
    # since then: writes, cluster 10 discarded whole, cluster 20 half
    extents = scatter(rng, disk, 5, low=22 * CLUSTER)
    disk.write(10 * CLUSTER, bytes(CLUSTER))
    disk.write(20 * CLUSTER, bytes(CLUSTER // 2))
    extents += [(10 * CLUSTER, CLUSTER, False), (20 * CLUSTER, CLUSTER // 2, False)]
    kinds = qcow2.kinds_from_extents(size, extents)
    assert kinds[10] == ZEROED and kinds[20] == DATA
    inc = tmp_path / "disk.0.1"
    write_qcow2(inc, disk, kinds)
    assert_clean(inc)
    proc = qemu_img("rebase", "-u", "-F", "qcow2", "-b", str(base), str(inc))
    assert proc.returncode == 0, proc.stderr
    assert_same(inc, disk), f"seed {seed}"
    # positive control: without the zero flag the discarded cluster shows the base's data
    del kinds[10]
    stale = tmp_path / "disk.0.1-stale"
    write_qcow2(stale, disk, kinds)
    qemu_img("rebase", "-u", "-F", "qcow2", "-b", str(base), str(stale))
    assert qemu_img("compare", "-f", "qcow2", "-F", "raw", str(stale),
                    str(disk.path)).returncode == 1


def test_an_empty_increment_is_a_valid_file_of_the_disks_size(tmp_path):
    disk = Disk(tmp_path / "disk.raw", 3 * CLUSTER)
    out = tmp_path / "disk.0.1"
    lay = write_qcow2(out, disk, {})
    assert_clean(out)
    assert lay.data == {} and os.path.getsize(out) == lay.file_size


def test_a_size_off_the_sector_is_rounded_up_as_qemu_img_does(tmp_path):
    disk = Disk(tmp_path / "disk.raw", 3 * CLUSTER + 57)
    disk.write(3 * CLUSTER, b"x" * 57)
    out = tmp_path / "disk.0.0"
    write_qcow2(out, disk, {3: DATA})
    assert_clean(out)
    info = qemu_img("info", "--output=json", str(out))
    assert f'"virtual-size": {3 * CLUSTER + 512}' in info.stdout
    raw = tmp_path / "back.raw"
    assert qemu_img("convert", "-O", "raw", str(out), str(raw)).returncode == 0
    assert raw.read_bytes()[3 * CLUSTER:] == b"x" * 57 + bytes(512 - 57)


def test_refcounts_cover_files_beyond_one_refcount_block():
    lay = qcow2.plan(100 << 40, {c: DATA for c in range(0, 40_000)})
    assert lay.refcount_block_count == 2
    assert lay.refcount_block_count * qcow2.RC_ENTRIES >= lay.total
    l1_clusters = -(-lay.l1_entries * 8 // CLUSTER)
    assert lay.total == (1 + lay.refcount_table_clusters + 2 + l1_clusters + len(lay.l2_tables)
                         + 40_000)


def test_a_cluster_beyond_the_disk_is_refused():
    with pytest.raises(ValueError, match="beyond"):
        qcow2.plan(CLUSTER, {1: DATA})
