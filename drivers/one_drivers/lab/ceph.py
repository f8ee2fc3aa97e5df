"""A one-node Ceph cluster (1 mon, 1 mgr, 1 bluestore OSD on a sparse file) on loopback.

The settings that make it come up in seconds rather than ~16 s are the ones in lab-facts.md:
fast paxos, bluestore aio polling, short mgr periods, pools created before the OSD boots. All keys
are generated up front and seeded into the monitor at mkfs, so no ``ceph auth`` round-trips follow.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from one_drivers.lab.proc import LabError, alive, read_pid, run, spawn, stop, wait_for

MON_V2_PORT = 13300
MON_V1_PORT = 16789
OSD_PORTS = (16800, 16899)
POOL = "one"
DATA_POOL = "one-data"  # a separate data pool (EC_POOL_NAME); replicated, one OSD has no EC
MARKET_POOL = "one-market"  # the rbd marketplace's apps
RBD_USER = "one"
PG_NUM = 16
DATA_PG_NUM = 8

CAPS = {
    "mon.": {"mon": "allow *"},
    "client.admin": {"mon": "allow *", "osd": "allow *", "mgr": "allow *", "mds": "allow *"},
    "osd.0": {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"},
    "mgr.x": {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"},
    # what production gives OpenNebula: RBD on its pool, nothing else
    f"client.{RBD_USER}": {"mon": "profile rbd",
                           "osd": f"profile rbd pool={POOL}, profile rbd pool={DATA_POOL}, "
                                  f"profile rbd pool={MARKET_POOL}",
                           "mgr": f"profile rbd pool={POOL}"},
}


def new_key() -> str:
    """A cephx secret as ``ceph-authtool --gen-print-key`` prints it (AES, 16 bytes)."""
    now = time.time()
    header = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), 16)
    return base64.b64encode(header + os.urandom(16)).decode()


def keyring_text(entities: dict[str, str]) -> str:
    out = []
    for name, key in entities.items():
        out.append(f"[{name}]\n\tkey = {key}")
        out.extend(f'\tcaps {svc} = "{cap}"' for svc, cap in CAPS[name].items())
    return "\n".join(out) + "\n"


class CephLab:
    """``address``: where the daemons listen (loopback for the lab; a container's own address
    for the Molecule scenarios' containerized cluster)."""

    def __init__(self, root: Path, port_offset: int = 0, address: str = "127.0.0.1") -> None:
        self.address = address
        self.mon_v2 = MON_V2_PORT + port_offset
        self.mon_v1 = MON_V1_PORT + port_offset
        self.osd_ports = (OSD_PORTS[0] + port_offset, OSD_PORTS[1] + port_offset)
        self.dir = root / "ceph"
        self.conf = self.dir / "ceph.conf"
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "log"
        self.pids = {name: self.run_dir / f"{name}.pid" for name in ("osd.0", "mgr.x", "mon.a")}

    # -- paths the drivers and tests need -------------------------------------------------
    def keyring(self, entity: str) -> Path:
        return self.dir / f"ceph.{entity}.keyring"

    @property
    def user_keyring(self) -> Path:
        return self.keyring(f"client.{RBD_USER}")

    def env(self) -> dict[str, str]:
        return {
            "CEPH_CONF": str(self.conf),
            "ONE_LAB_CEPH_POOL": POOL,
            "ONE_LAB_CEPH_DATA_POOL": DATA_POOL,
            "ONE_LAB_CEPH_MARKET_POOL": MARKET_POOL,
            "ONE_LAB_CEPH_USER": RBD_USER,
            "ONE_LAB_CEPH_KEYRING": str(self.user_keyring),
            "ONE_LAB_CEPH_MON": f"{self.address}:{self.mon_v1}",
        }

    # -- lifecycle ------------------------------------------------------------------------
    def running(self) -> bool:
        return all(alive(read_pid(p)) for p in self.pids.values())

    def up(self) -> None:
        self.down()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for sub in ("run", "log", "mon/a", "mgr/x", "osd/0"):
            (self.dir / sub).mkdir(parents=True)
        fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        self.conf.write_text(self._conf_text(fsid))
        keys = {name: new_key() for name in CAPS}
        for name, key in keys.items():
            path = self.dir / "mon.keyring" if name == "mon." else self.keyring(name)
            path.write_text(keyring_text({name: key}))
            path.chmod(0o600)
        (self.dir / "mon.keyring").write_text(keyring_text(keys))  # seeds the auth database
        self._write_monmap(fsid)
        with ThreadPoolExecutor(2) as pool:  # the OSD's mkfs needs no monitor: overlap them
            osd_mkfs = pool.submit(self._osd_mkfs, osd_uuid)
            run(["ceph-mon", "--mkfs", "-i", "a", "-c", str(self.conf),
                 "--monmap", str(self.dir / "monmap"), "--keyring", str(self.dir / "mon.keyring")])
            self._start("mon.a", ["ceph-mon", "-f", "-i", "a", "-c", str(self.conf)])
            self._bootstrap_pools(osd_uuid)
            osd_mkfs.result()
        self._start("mgr.x", ["ceph-mgr", "-f", "-i", "x", "-c", str(self.conf)])
        self._start("osd.0", ["ceph-osd", "-f", "-i", "0", "-c", str(self.conf)])
        self.wait_healthy(timeout=60)
        self._init_rbd_pool()

    def down(self) -> list[str]:
        """Stop OSD, then mgr, then mon (that order avoids a ~5 s stall per teardown)."""
        return [name for name, pidfile in self.pids.items() if stop(pidfile)]

    # -- steps ----------------------------------------------------------------------------
    def _conf_text(self, fsid: str) -> str:
        d = self.dir
        return f"""[global]
fsid = {fsid}
mon_host = [v2:{self.address}:{self.mon_v2},v1:{self.address}:{self.mon_v1}]
public_network = {"127.0.0.0/8" if self.address.startswith("127.") else self.address + "/32"}
ms_bind_port_min = {self.osd_ports[0]}
ms_bind_port_max = {self.osd_ports[1]}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
run_dir = {d}/run
admin_socket = {d}/run/$cluster-$name.$pid.asok
log_file = {d}/log/$cluster-$name.log
mon_cluster_log_file = {d}/log/$cluster.log
keyring = {d}/$cluster.$name.keyring
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
auth_allow_insecure_global_id_reclaim = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
mgr_stats_period = 1
mgr_tick_period = 1
mon_mgr_digest_period = 1
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = 21474836480
bdev_aio_poll_ms = 10
# a killed client's watch holds an image busy this long (30 s by default): crash tests wait it
osd_client_watch_timeout = 5
osd_memory_target = 1073741824
mgr_initial_modules = iostat
rbd_default_clone_format = auto

[mon.a]
mon_data = {d}/mon/a
keyring = {d}/mon/a/keyring

[mgr.x]
mgr_data = {d}/mgr/x

[osd.0]
osd_data = {d}/osd/0
"""

    def _write_monmap(self, fsid: str) -> None:
        run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
             f"[v2:{self.address}:{self.mon_v2},v1:{self.address}:{self.mon_v1}]",
             str(self.dir / "monmap")])

    def _osd_mkfs(self, osd_uuid: str) -> None:
        run(["ceph-osd", "--mkfs", "-i", "0", "-c", str(self.conf), "--osd-uuid", osd_uuid],
            timeout=120)
        # ceph-osd --mkfs does not write the OSD's keyring: it reads it from the conf path

    def _start(self, name: str, argv: list[str]) -> None:
        spawn(argv, log=self.log_dir / f"{name}.out", pidfile=self.pids[name])

    def admin(self, timeout: int = 10) -> Any:
        import rados

        cluster = rados.Rados(conffile=str(self.conf), rados_id="admin",
                              conf={"client_mount_timeout": str(timeout),
                                    "rados_mon_op_timeout": str(timeout)})
        cluster.connect(timeout=timeout)
        return cluster

    def mon_command(self, cluster: Any, cmd: dict[str, Any], inbuf: bytes = b"") -> Any:
        ret, out, status = cluster.mon_command(json.dumps({**cmd, "format": "json"}), inbuf,
                                               timeout=10)
        if ret != 0:
            raise LabError(f"ceph {cmd['prefix']} failed: {status} ({ret})")
        return json.loads(out) if out else None

    def _bootstrap_pools(self, osd_uuid: str) -> None:
        wait_for(lambda: self._mon_answers(), timeout=20, what="the Ceph monitor")
        cluster = self.admin()
        try:
            self.mon_command(cluster, {"prefix": "osd new", "uuid": osd_uuid, "id": 0})
            self.mon_command(cluster, {"prefix": "osd set-require-min-compat-client",
                                       "version": "mimic", "yes_i_really_mean_it": True})
            for pool, pgs, app in (("device_health_metrics", 1, "mgr_devicehealth"),
                                   (POOL, PG_NUM, "rbd"), (DATA_POOL, DATA_PG_NUM, "rbd"),
                                   (MARKET_POOL, DATA_PG_NUM, "rbd")):
                self.mon_command(cluster, {"prefix": "osd pool create", "pool": pool,
                                           "pg_num": pgs, "pgp_num": pgs})
                self.mon_command(cluster, {"prefix": "osd pool application enable",
                                           "pool": pool, "app": app})
        finally:
            cluster.shutdown()

    def _mon_answers(self) -> bool:
        if not alive(read_pid(self.pids["mon.a"])):
            raise LabError(f"ceph-mon exited; see {self.log_dir}/ceph-mon.a.log")
        try:
            self.admin(timeout=2).shutdown()
            return True
        except Exception:
            return False

    def _init_rbd_pool(self) -> None:
        import rbd

        cluster = self.admin()
        try:
            for pool in (POOL, DATA_POOL, MARKET_POOL):
                with cluster.open_ioctx(pool) as ioctx:
                    rbd.RBD().pool_init(ioctx, True)
        finally:
            cluster.shutdown()

    def health(self) -> dict[str, Any]:
        cluster = self.admin(timeout=5)
        try:
            status = self.mon_command(cluster, {"prefix": "status"})
        finally:
            cluster.shutdown()
        pgmap = status.get("pgmap", {})
        clean = sum(s["count"] for s in pgmap.get("pgs_by_state", [])
                    if s["state_name"] == "active+clean")
        return {
            "health": status.get("health", {}).get("status"),
            "checks": sorted(status.get("health", {}).get("checks", {})),
            "pgs": pgmap.get("num_pgs", 0),
            "active_clean": clean,
            "osds_up": status.get("osdmap", {}).get("num_up_osds", 0),
        }

    def healthy(self) -> bool:
        try:
            h = self.health()
        except Exception:
            return False
        return bool(h["health"] == "HEALTH_OK" and h["osds_up"] == 1
                    # a cluster from before the market pool has fewer: rebuilt
                    and h["pgs"] >= PG_NUM + 2 * DATA_PG_NUM + 1
                    and h["active_clean"] == h["pgs"])

    def wait_healthy(self, timeout: float) -> None:
        def check() -> bool:
            for name, pidfile in self.pids.items():
                if not alive(read_pid(pidfile)):
                    raise LabError(f"ceph {name} exited; see {self.log_dir}")
            return self.healthy()

        wait_for(check, timeout=timeout, what="Ceph HEALTH_OK with all PGs active+clean",
                 interval=0.1)
