"""DS monitor against the lab's real Ceph, as the restricted cephx user."""

import base64
import io
import json

import pytest

from one_drivers.core.runner import run
from one_drivers.demo import datastore_xml

pytestmark = pytest.mark.lab


def monitor(env, capsys, **extra):
    out = io.StringIO()
    doc = base64.b64encode(datastore_xml(100, env, **extra).encode())
    rc = run("datastore", "rbd", "monitor", ["100"], stdin=io.BytesIO(doc), stdout=out)
    values = dict(line.split("=") for line in out.getvalue().split())
    return rc, {k: int(v) for k, v in values.items()}, capsys.readouterr().err


def admin(env):
    import rados

    cluster = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    return cluster


def mon(cluster, **cmd):
    ret, out, status = cluster.mon_command(json.dumps({**cmd, "format": "json"}), b"")
    assert ret == 0, status
    return json.loads(out) if out else None


def test_monitor_reports_capacity_and_follows_the_pool_quota(lab_env, capsys):
    rc, before, err = monitor(lab_env, capsys)
    assert rc == 0, err
    assert before["TOTAL_MB"] > 1000
    assert before["TOTAL_MB"] == before["USED_MB"] + before["FREE_MB"]
    cluster = admin(lab_env)
    try:
        mon(cluster, prefix="osd pool set-quota", pool="one", field="max_bytes",
            val=str(512 * 1024 * 1024))
        rc, quota, err = monitor(lab_env, capsys)
        assert rc == 0, err
        assert quota["TOTAL_MB"] <= 512
        assert quota["FREE_MB"] >= 512 - quota["USED_MB"] - 1  # what the quota still allows
        assert quota["TOTAL_MB"] == quota["USED_MB"] + quota["FREE_MB"]
    finally:
        mon(cluster, prefix="osd pool set-quota", pool="one", field="max_bytes", val="0")
        cluster.shutdown()


def test_monitor_of_a_missing_pool_is_not_found(lab_env, capsys):
    rc, _, err = monitor(lab_env, capsys, POOL_NAME="nosuchpool")
    assert rc == 6
    assert err.strip() == ("datastore 100: Ceph pool 'nosuchpool' does not exist; "
                           "create it or fix POOL_NAME / EC_POOL_NAME")


def test_denied_credentials_exit_5_with_one_line(lab_env, capsys):
    rc, _, err = monitor(lab_env, capsys, CEPH_USER="admin")  # the 'one' user's key
    assert rc == 5
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("datastore 100: Ceph refused the connection")


def test_unreachable_cluster_times_out_quickly_with_exit_4(lab_env, capsys, tmp_path):
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon_host = 127.0.0.1:9\n")
    rc, _, err = monitor(lab_env, capsys, CEPH_CONF=str(conf), CEPH_CALL_TIMEOUT="3")
    assert rc == 4, err  # the connection's own deadline ended it (the message says which)
    assert "Ceph did not answer the connection in time" in err
