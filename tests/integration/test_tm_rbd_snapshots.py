"""TM disk snapshots: random create / revert / delete / resize sequences on a VM's clone disk,
through the TM actions, against the model of the ALLOW_ORPHANS=YES rules (as registered)."""

from __future__ import annotations

import itertools
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, rule

from one_drivers.lab.documents import datastore_doc, disk_attrs, vm_doc
from one_drivers.lab.lab import Lab
from tests.helpers import rbd_names, replayable, trash_names
from tests.integration.test_ds_rbd_snapshots import SIZE, SnapshotMachine

pytestmark = pytest.mark.lab

IMAGE_DS, SYS_DS = 100, 101
_ids = itertools.count(random.randint(10_000, 90_000) * 10 + 3)


REMOTES: list[Path] = []  # set by the test: the installed remotes


def tm(action: str, *args: object) -> None:
    """A TM action as oned runs it, in its own process (not the test's)."""
    proc = subprocess.run([str(REMOTES[0] / "tm" / "rbd" / action), *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"tm {action} {args} failed: {proc.stderr}"


class TmSnapshotMachine(SnapshotMachine):
    has_flatten = False

    @initialize()
    def setup(self):
        import rbd

        self.vmid = next(_ids)
        self.base = f"one-{next(_ids)}"
        rbd.RBD().create(self.ioctx, self.base, SIZE)
        disk = disk_attrs(self.env, 0, SOURCE=f"one/{self.base}", CLONE="YES", TYPE="RBD",
                          DATASTORE_ID=IMAGE_DS)
        Lab().oned.record("vm", self.vmid, vm_doc(self.vmid, [disk], host="localhost"))
        self.where = f"localhost:/var/tmp/ds/{SYS_DS}/{self.vmid}/disk.0"
        tm("clone", f"fe:one/{self.base}", self.where, self.vmid, IMAGE_DS)
        self.image_id = self.vmid
        self.name = f"{self.base}-{self.vmid}-0"
        self.content = bytearray(SIZE)
        self.snaps = {}
        self.active = None
        self.next_id = 0

    def act(self, action: str, snap: int) -> None:
        tm(action, self.where, snap, self.vmid, IMAGE_DS)

    def take_snapshot(self, snap: int) -> None:
        self.act("snap_create", snap)

    @rule(grow=st.integers(1, 3))
    def resize(self, grow):
        size = len(self.content) + grow * 1024 * 1024
        tm("resize", self.where, size // (1024 * 1024), self.vmid, IMAGE_DS)
        self.content.extend(bytes(size - len(self.content)))

    def remove(self):
        import rbd

        tm("delete", self.where, self.vmid, IMAGE_DS)
        rbd.RBD().remove(self.ioctx, self.base)  # its clone snapshot went with the disk
        leftovers = {n for n in rbd_names(self.ioctx) | trash_names(self.ioctx)
                     if n.startswith(self.base)}
        assert leftovers == set()


def test_random_disk_snapshot_sequences(lab_env, ceph_admin, remotes):
    REMOTES[:] = [remotes]
    Lab().oned.record("datastore", IMAGE_DS, datastore_doc(lab_env, IMAGE_DS))
    TmSnapshotMachine.env = lab_env
    TmSnapshotMachine.ioctx = ceph_admin[1]
    replayable(TmSnapshotMachine, "TM snapshot sequences")
    case = TmSnapshotMachine.TestCase
    case.settings = settings(max_examples=10, stateful_step_count=14, deadline=None,
                             suppress_health_check=list(HealthCheck), database=None)
    case().runTest()
