"""ovsdb-server + ovs-vswitchd (userspace datapath) with a private run directory: one for this
machine, and one inside the second host's network namespace (its taps live there)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from one_drivers.lab.proc import LabError, alive, read_pid, run, stop

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


class OvsLab:
    def __init__(self, root: Path, name: str = "ovs", prefix: list[str] | None = None,
                 env_key: str = "") -> None:
        """``prefix`` runs the daemons elsewhere (``ip netns exec <ns>``); ``env_key`` names a
        second host's switch in the lab's env (``ONE_LAB_<KEY>_OVSDB`` ...) instead of making
        it the default one of the drivers."""
        self.prefix, self.env_key = prefix or [], env_key
        self.dir = root / name
        self.run_dir = self.dir / "run"
        self.db = self.dir / "conf.db"
        self.sock = self.run_dir / "db.sock"
        self.pids = {name: self.run_dir / f"{name}.pid"
                     for name in ("ovs-vswitchd", "ovsdb-server")}

    def driver_env(self) -> dict[str, str]:
        """What the VNM driver needs to program this switch (its OVSDB, its per-VM state)."""
        return {"ONE_DRIVERS_OVSDB": f"unix:{self.sock}",
                "ONE_DRIVERS_VNM_STATE_DIR": str(self.dir / "vnm-state")}

    def session_env(self) -> dict[str, str]:
        """What an ssh session on this switch's host has as its defaults (the switch itself is
        bound at /run/openvswitch there): its own VNM state, the userspace datapath."""
        return {"ONE_DRIVERS_VNM_STATE_DIR": str(self.dir / "vnm-state"),
                "ONE_DRIVERS_OVS_DATAPATH_TYPE": "netdev"}

    def env(self) -> dict[str, str]:
        if self.env_key:  # ONE_LAB_HOST_OVSDB, ONE_LAB_HOST_VNM_STATE_DIR
            return {f"ONE_LAB_{self.env_key}_{key.removeprefix('ONE_DRIVERS_')}": value
                    for key, value in self.driver_env().items()}
        # no kernel datapath here
        return {**self._dirs(), **self.driver_env(), "ONE_DRIVERS_OVS_DATAPATH_TYPE": "netdev"}

    def _dirs(self) -> dict[str, str]:
        return {"OVS_RUNDIR": str(self.run_dir), "OVS_DBDIR": str(self.dir),
                "OVS_LOGDIR": str(self.dir / "log")}

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self._dirs()}

    def running(self) -> bool:
        return all(alive(read_pid(p)) for p in self.pids.values())

    def vsctl(self, *args: str, wait: bool = True, timeout: int = 10) -> str:
        argv = ["ovs-vsctl", f"--db=unix:{self.sock}", f"--timeout={timeout}"]
        if not wait:
            argv.append("--no-wait")
        return run([*argv, *args], env=self._env(), timeout=timeout + 5).stdout.decode()

    def up(self) -> None:
        self.down()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "log").mkdir(parents=True)
        self.run_dir.mkdir()
        env = self._env()
        run(["ovsdb-tool", "create", str(self.db), str(SCHEMA)], env=env)
        self._start_db(env)
        # TCP through the userspace datapath needs TSO/checksum handling (lab-facts.md)
        self.vsctl("init", "--", "set", "Open_vSwitch", ".",
                   "other_config:userspace-tso-enable=true", wait=False)
        self._start_switch(env)
        # a write without --no-wait returns once vswitchd has applied it: vswitchd is serving
        self.vsctl("set", "Open_vSwitch", ".", "external_ids:one-drivers-lab=up")
        if not self.running():
            raise LabError(f"Open vSwitch did not stay up; see {self.dir}/log")

    def restart(self) -> None:
        """Stop and start both daemons on the same database (flows are lost, ports kept)."""
        self.down()
        env = self._env()
        self._start_db(env)
        self._start_switch(env)
        self.vsctl("set", "Open_vSwitch", ".", "external_ids:one-drivers-lab=up")

    def _start_db(self, env: dict[str, str]) -> None:
        run([*self.prefix, "ovsdb-server", str(self.db), f"--remote=punix:{self.sock}",
             "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
             f"--pidfile={self.pids['ovsdb-server']}", "--detach", "--no-chdir",
             f"--log-file={self.dir}/log/ovsdb-server.log"], env=env)

    def _start_switch(self, env: dict[str, str]) -> None:
        run([*self.prefix, "ovs-vswitchd", f"unix:{self.sock}",
             f"--pidfile={self.pids['ovs-vswitchd']}", "--detach", "--no-chdir",
             f"--log-file={self.dir}/log/ovs-vswitchd.log"], env=env)

    def down(self) -> list[str]:
        where = f" ({self.dir.name})" if self.env_key else ""
        return [name + where for name, pidfile in self.pids.items() if stop(pidfile)]

    def healthy(self) -> bool:
        if not self.running():
            return False
        try:
            return "up" in self.vsctl("get", "Open_vSwitch", ".", "external_ids:one-drivers-lab",
                                      timeout=5)
        except (LabError, OSError):
            return False
