import pytest

from one_drivers.core.errors import NotFound
from one_drivers.datastore.rbd.monitor import Capacity, capacity

MIB = 1024 * 1024


def df(*pools):
    return {"pools": [{"name": n, "stats": s} for n, s in pools]}


def test_capacity_without_quota_uses_stored_and_max_avail():
    d = df(("one", {"stored": 100 * MIB, "bytes_used": 300 * MIB, "max_avail": 900 * MIB,
                    "quota_bytes": 0}))
    assert capacity(d, "one") == Capacity(100, 1000, 900)


def test_capacity_with_quota_is_bounded_by_the_quota():
    d = df(("one", {"stored": 100 * MIB, "max_avail": 900 * MIB, "quota_bytes": 300 * MIB}))
    assert capacity(d, "one") == Capacity(100, 300, 200)
    full = df(("one", {"stored": 400 * MIB, "max_avail": 900 * MIB, "quota_bytes": 300 * MIB}))
    assert capacity(full, "one") == Capacity(400, 400, 0)


def test_capacity_counts_the_ec_data_pool():
    d = df(("one", {"stored": 1 * MIB, "max_avail": 900 * MIB}),
           ("one-ec", {"stored": 99 * MIB, "max_avail": 500 * MIB, "quota_bytes": 0}))
    assert capacity(d, "one", "one-ec") == Capacity(100, 600, 500)


def test_pre_nautilus_bytes_used_and_missing_pool():
    assert capacity(df(("one", {"bytes_used": 5 * MIB, "max_avail": 5 * MIB})), "one") == (
        Capacity(5, 10, 5))
    with pytest.raises(NotFound, match="pool 'two' does not exist"):
        capacity(df(("one", {})), "two")


def test_render_is_opennebula_template_syntax():
    assert Capacity(1, 3, 2).render() == "USED_MB=1\nTOTAL_MB=3\nFREE_MB=2\n"
