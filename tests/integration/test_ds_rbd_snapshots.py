"""DS snapshot actions: clone v2 semantics, upstream-compatible images, and a property test of
random snapshot sequences against a model of OpenNebula's snapshot rules (ALLOW_ORPHANS=YES, as
registered: any snapshot may be deleted)."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.helpers import ds_doc, rbd_names, read_image, replayable, run_remote, trash_names

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
SIZE = 4 * MIB
_ids = itertools.count(random.randint(100_000, 900_000) * 10 + 5)


def snap_action(env, action: str, image_id: int, snap: int, remotes):
    """A DS snapshot action as oned runs it, in its own process."""
    doc = ds_doc(env, image_id, image={"SOURCE": f"one/one-{image_id}", "PERSISTENT": 1,
                                       "TARGET_SNAPSHOT": snap})
    return run_remote(remotes, f"datastore/rbd/{action}", [str(image_id)], doc)


def user_snaps(ioctx, name):
    import rbd

    with rbd.Image(ioctx, name, read_only=True) as image:
        return sorted(s["name"] for s in image.list_snaps()
                      if s.get("namespace", 0) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER)


def write(ioctx, name, offset, data):
    import rbd

    with rbd.Image(ioctx, name) as image:
        image.write(data, offset)


def test_upstream_reverted_image_with_carriers(lab_env, remotes, ceph_admin):
    """An image as upstream's driver leaves it after a revert: its snapshots on a renamed
    carrier, the image a clone of carrier@0. Every snapshot must still be revertable and
    deletable, and the carrier must go with the last one."""
    import rbd

    _, ioctx = ceph_admin
    iid = next(_ids)
    name = f"one-{iid}"
    a, b = os.urandom(MIB), os.urandom(MIB)
    rbd.RBD().create(ioctx, name, SIZE)
    write(ioctx, name, 0, a)
    with rbd.Image(ioctx, name) as image:
        image.create_snap("0")
        image.protect_snap("0")
    write(ioctx, name, 0, b)
    with rbd.Image(ioctx, name) as image:
        image.create_snap("1")
        image.protect_snap("1")
    # upstream's revert to 0: rename the image to carry its snapshots, clone the target back
    rbd.RBD().rename(ioctx, name, f"{name}-0:1")
    rbd.RBD().clone(ioctx, f"{name}-0:1", "0", ioctx, name)
    assert read_image(ioctx, name)[:MIB] == a

    proc = snap_action(lab_env, "snap_revert", iid, 1, remotes)
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, name)[:MIB] == b
    assert snap_action(lab_env, "snap_delete", iid, 1, remotes).returncode == 0
    proc = snap_action(lab_env, "snap_delete", iid, 0, remotes)  # the carrier's last one
    assert proc.returncode == 0, proc.stderr
    assert f"{name}-0:1" not in rbd_names(ioctx) | trash_names(ioctx)
    assert read_image(ioctx, name)[:MIB] == b
    again = snap_action(lab_env, "snap_delete", iid, 0, remotes)  # idempotent
    assert again.returncode == 0 and "already gone" in again.stderr
    missing = snap_action(lab_env, "snap_revert", iid, 7, remotes)
    assert missing.returncode == 6 and "snapshot 7" in missing.stderr

    # rm of an image that still has a carrier removes the carrier too
    with rbd.Image(ioctx, name) as image:
        image.create_snap("2")
    rbd.RBD().rename(ioctx, name, f"{name}-2")
    rbd.RBD().clone(ioctx, f"{name}-2", "2", ioctx, name)
    doc = ds_doc(lab_env, iid, image={"SOURCE": f"one/{name}"})
    proc = run_remote(remotes, "datastore/rbd/rm", [str(iid)], doc)
    assert proc.returncode == 0, proc.stderr
    assert not {n for n in rbd_names(ioctx) | trash_names(ioctx) if n.startswith(name)}


def test_snap_flatten_keeps_the_snapshot_and_drops_the_rest(lab_env, remotes, ceph_admin):
    import rbd

    _, ioctx = ceph_admin
    iid = next(_ids)
    name = f"one-{iid}"
    contents = [os.urandom(MIB) for _ in range(3)]
    rbd.RBD().create(ioctx, name, SIZE)
    for i, data in enumerate(contents):
        write(ioctx, name, 0, data)
        with rbd.Image(ioctx, name) as image:
            image.create_snap(str(i))
    proc = snap_action(lab_env, "snap_flatten", iid, 1, remotes)
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, name)[:MIB] == contents[1]
    assert user_snaps(ioctx, name) == []
    rbd.RBD().remove(ioctx, name)


def test_snapshots_oned_orders_under_allow_orphans_yes_all_delete(lab_env, remotes, ceph_admin):
    """The sequence "mixed" refuses and YES allows, as oned orders it: revert to 0, take 2 (a
    child of 0 in oned's tree), then delete 0 (a snapshot with children), 2 (the active one) and
    1: each works and the image keeps its contents."""
    import rbd

    _, ioctx = ceph_admin
    iid = next(_ids)
    name = f"one-{iid}"
    rbd.RBD().create(ioctx, name, SIZE)
    contents = [os.urandom(4096) for _ in range(3)]
    try:
        for snap in (0, 1):
            write(ioctx, name, 0, contents[snap])
            with rbd.Image(ioctx, name) as image:
                image.create_snap(str(snap))
        assert snap_action(lab_env, "snap_revert", iid, 0, remotes).returncode == 0
        assert read_image(ioctx, name)[:4096] == contents[0]
        write(ioctx, name, 0, contents[2])
        with rbd.Image(ioctx, name) as image:
            image.create_snap("2")
        for snap in (0, 2, 1):
            proc = snap_action(lab_env, "snap_delete", iid, snap, remotes)
            assert proc.returncode == 0, proc.stderr
            assert read_image(ioctx, name)[:4096] == contents[2]
        assert user_snaps(ioctx, name) == []
    finally:
        rbd.RBD().remove(ioctx, name)
    from one_drivers.tm.rbd import DRIVER

    assert DRIVER.oned_conf["ALLOW_ORPHANS"] == "YES", "registered as the storage behaves"


class SnapshotMachine(RuleBasedStateMachine):
    """OpenNebula's rules for image snapshots with ALLOW_ORPHANS=YES, as the driver registers:
    the core lets any snapshot be deleted, the active one (the last reverted to) and one taken
    after a revert to it included (under "mixed" it would be refused: "Cannot delete snapshot
    with children"). Every deletion must work, and contents must always match. "mixed" allows
    a subset of these sequences, so it is covered too."""

    env: dict[str, str]
    ioctx: object
    remotes: object  # the installed remotes: actions run as OpenNebula runs them, in their own
    # process (never in the test's, whose Ceph handle reads the model's contents)
    has_flatten = True  # DS images have snap_flatten; TM disks do not

    @initialize()
    def setup(self):
        import rbd

        self.image_id = next(_ids)
        self.name = f"one-{self.image_id}"
        rbd.RBD().create(self.ioctx, self.name, SIZE)
        self.content = bytearray(SIZE)
        self.snaps: dict[int, tuple[bytes, int | None]] = {}  # id -> (content, parent)
        self.active: int | None = None
        self.next_id = 0

    @rule(offset=st.integers(0, SIZE // 4096 - 1), seed=st.binary(min_size=1, max_size=8))
    def guest_writes(self, offset, seed):
        data = (seed * (4096 // len(seed) + 1))[:4096]
        write(self.ioctx, self.name, offset * 4096, data)
        self.content[offset * 4096:(offset + 1) * 4096] = data

    def act(self, action: str, snap: int) -> None:
        proc = snap_action(self.env, action, self.image_id, snap, self.remotes)
        assert proc.returncode == 0, f"{action} {snap}: {proc.stderr}"

    def take_snapshot(self, snap: int) -> None:  # what TM snap_create does on a persistent disk
        import rbd

        with rbd.Image(self.ioctx, self.name) as image:
            image.create_snap(str(snap))

    @rule()
    def create(self):
        self.take_snapshot(self.next_id)
        self.snaps[self.next_id] = (bytes(self.content), self.active)
        self.active = self.next_id
        self.next_id += 1

    @precondition(lambda self: bool(self.snaps))
    @rule(data=st.data())
    def revert(self, data):
        target = data.draw(st.sampled_from(sorted(self.snaps)))
        self.act("snap_revert", target)
        self.content = bytearray(self.snaps[target][0])
        self.active = target

    def deletable(self) -> list[int]:
        return sorted(self.snaps)

    @precondition(lambda self: bool(self.deletable()))
    @rule(data=st.data())
    def delete(self, data):
        target = data.draw(st.sampled_from(self.deletable()))
        self.act("snap_delete", target)
        del self.snaps[target]
        if target == self.active:
            self.active = None

    @precondition(lambda self: bool(self.snaps) and self.has_flatten)
    @rule(data=st.data())
    def flatten(self, data):
        target = data.draw(st.sampled_from(sorted(self.snaps)))
        self.act("snap_flatten", target)
        self.content = bytearray(self.snaps[target][0])
        self.snaps.clear()
        self.active = None

    @invariant()
    def matches_the_model(self):
        if not hasattr(self, "name"):
            return
        assert read_image(self.ioctx, self.name) == bytes(self.content)
        assert user_snaps(self.ioctx, self.name) == sorted(str(s) for s in self.snaps)
        for snap, (content, _) in self.snaps.items():
            assert read_image(self.ioctx, self.name, str(snap)) == content

    def teardown(self):
        if not hasattr(self, "name"):
            return
        # every snapshot goes, in an order the core allows, then the image: nothing may leak
        while self.snaps:
            self.active = None
            target = self.deletable()[0]
            self.act("snap_delete", target)
            del self.snaps[target]
        self.remove()

    def remove(self):
        doc = ds_doc(self.env, self.image_id, image={"SOURCE": f"one/{self.name}"})
        proc = run_remote(self.remotes, "datastore/rbd/rm", [str(self.image_id)], doc)
        assert proc.returncode == 0, proc.stderr
        leftovers = {n for n in rbd_names(self.ioctx) | trash_names(self.ioctx)
                     if n == self.name or n.startswith(self.name + "-")
                     or n.startswith(self.name + ".")}
        assert leftovers == set()


def test_random_snapshot_sequences(lab_env, ceph_admin, remotes):
    SnapshotMachine.env = lab_env
    SnapshotMachine.ioctx = ceph_admin[1]
    SnapshotMachine.remotes = remotes
    replayable(SnapshotMachine, "DS snapshot sequences")
    machine = SnapshotMachine.TestCase
    machine.settings = settings(max_examples=12, stateful_step_count=14, deadline=None,
                                suppress_health_check=list(HealthCheck), database=None)
    machine().runTest()
