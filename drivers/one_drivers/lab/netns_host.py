"""The second lab host's network namespace: a veth link to this machine, and the lab's loopback
services (Ceph) relayed into it, so its libvirtd and QEMUs live on their own network like a
separate machine's, and a live migration's memory stream really crosses a link."""

from __future__ import annotations

import subprocess
from pathlib import Path

from one_drivers.lab.proc import LabError, alive, read_pid, spawn, stop, wait_for


class HostNetns:
    def __init__(self, root: Path, port_offset: int, relayed: list[str]) -> None:
        self.name = f"one-lab-h2-{port_offset}"
        self.host_if, self.ns_if = f"olh2a{port_offset}", f"olh2b{port_offset}"
        self.host_ip, self.ns_ip = "10.254.0.1", "10.254.0.2"
        self.relayed = relayed
        self.dir = root / "host2-net"
        self.relay_pid = self.dir / "relay.pid"

    def env(self) -> dict[str, str]:
        return {"ONE_LAB_HOST_NETNS": self.name, "ONE_LAB_HOST_MIGRATE_URI": f"tcp://{self.ns_ip}"}

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def healthy(self) -> bool:
        return Path(f"/var/run/netns/{self.name}").exists() and alive(read_pid(self.relay_pid))

    def up(self) -> None:
        self.down()
        self.dir.mkdir(parents=True, exist_ok=True)
        for argv in (["ip", "netns", "add", self.name],
                     ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                      self.ns_if, "netns", self.name],
                     ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
                     ["ip", "link", "set", self.host_if, "up"],
                     [*self.exec_prefix(), "ip", "addr", "add", f"{self.ns_ip}/30", "dev",
                      self.ns_if],
                     [*self.exec_prefix(), "ip", "link", "set", self.ns_if, "up"],
                     [*self.exec_prefix(), "ip", "link", "set", "lo", "up"]):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if proc.returncode != 0:
                raise LabError(f"{' '.join(argv)}: {proc.stderr.strip()}")
        import sys

        log = self.dir / "relay.log"
        log.unlink(missing_ok=True)
        spawn([sys.executable, "-m", "one_drivers.lab.loopback_relay", self.name, *self.relayed],
              log=log, pidfile=self.relay_pid)
        wait_for(lambda: log.exists() and "relaying" in log.read_text(), timeout=15,
                 what="the loopback relay into the second host's namespace")

    def down(self) -> list[str]:
        stopped = ["loopback relay"] if stop(self.relay_pid) else []
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        if subprocess.run(["ip", "netns", "del", self.name], capture_output=True,
                          check=False).returncode == 0:
            stopped.append(f"netns {self.name}")
        return stopped
