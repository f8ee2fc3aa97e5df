"""The lab's DHCP and DNS for the ``kea`` IPAM driver: Debian's Kea (``kea-dhcp4`` with the
lease_cmds hook, and ``kea-ctrl-agent`` on loopback with basic authentication) and PowerDNS
(``pdns_server``, sqlite backend, its HTTP API on loopback) serving ``lab.one.`` and the reverse
zone of the DHCP segment.

kea-dhcp4 serves a network namespace of its own, whose ``eth0`` (10.254.20.253/24) is the far
end of a veth pair; the near end (``ONE_LAB_DHCP_PORT``) is left unplugged for a test to add to a
vnet's bridge, as a DHCP server's uplink would be. Its control socket is a file, so the agent in
the host's namespace reaches it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from one_drivers.lab.proc import LabError, alive, read_pid, run, spawn, stop, wait_for

KEA_PORT, PDNS_API_PORT, DNS_PORT = 18000, 18081, 15353
SEGMENT, SERVER_IP = "10.254.20.0/24", "10.254.20.253"
ZONE, REVERSE_ZONE = "lab.one.", "20.254.10.in-addr.arpa."
KEA_USER = "one-drivers"
HOOKS = "/usr/lib/x86_64-linux-gnu/kea/hooks"


class DdiLab:
    def __init__(self, root: Path, port_offset: int = 0) -> None:
        self.dir = root / "ddi"
        self.kea_port = KEA_PORT + port_offset
        self.api_port, self.dns_port = PDNS_API_PORT + port_offset, DNS_PORT + port_offset
        self.netns, self.port = f"one-lab-dhcp-{port_offset}", f"oldhcp{port_offset}"
        self.kea_pid, self.agent_pid = self.dir / "kea-dhcp4.pid", self.dir / "kea-ctrl-agent.pid"
        self.pdns_pid = self.dir / "pdns.pid"
        self.credentials, self.api_key = self.dir / "kea-credentials", self.dir / "pdns-api-key"
        self.kea_conf = self.dir / "kea-dhcp4.json"

    def env(self) -> dict[str, str]:
        return {"ONE_LAB_KEA_URL": f"http://127.0.0.1:{self.kea_port}/",
                "ONE_LAB_KEA_CREDENTIALS": str(self.credentials),
                "ONE_LAB_KEA_CONF": str(self.kea_conf),
                "ONE_LAB_KEA_PID": str(self.kea_pid), "ONE_LAB_KEA_AGENT_PID": str(self.agent_pid),
                "ONE_LAB_PDNS_URL": f"http://127.0.0.1:{self.api_port}",
                "ONE_LAB_PDNS_KEY_FILE": str(self.api_key), "ONE_LAB_PDNS_PID": str(self.pdns_pid),
                "ONE_LAB_DNS_PORT": str(self.dns_port),
                "ONE_LAB_DNS_ZONES": f"{ZONE} {REVERSE_ZONE}",
                "ONE_LAB_DHCP_NETNS": self.netns, "ONE_LAB_DHCP_PORT": self.port,
                "ONE_LAB_DHCP_SEGMENT": SEGMENT, "ONE_LAB_DHCP_SERVER": SERVER_IP}

    def healthy(self) -> bool:
        if not all(alive(read_pid(p)) for p in (self.kea_pid, self.agent_pid, self.pdns_pid)):
            return False
        return self._kea_answers() and self._pdns_answers()

    def up(self) -> None:
        self.down()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.dir.chmod(0o755)
        self._segment()
        secret = os.urandom(12).hex()
        _private(self.credentials, f"{KEA_USER}:{secret}\n")
        _private(self.api_key, os.urandom(12).hex() + "\n")
        self._start_kea(secret)
        self._start_pdns()

    def down(self) -> list[str]:
        stopped = [name for name, pid in (("pdns", self.pdns_pid),
                                          ("kea-ctrl-agent", self.agent_pid),
                                          ("kea-dhcp4", self.kea_pid)) if stop(pid)]
        subprocess.run(["ip", "link", "del", self.port], capture_output=True, timeout=30,
                       check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30,
                       check=False)
        return stopped

    def wait_gone(self, pid: int, timeout: float = 10) -> None:
        """Until process ``pid`` (one of the lab's, killed by a test) has exited."""
        wait_for(lambda: not alive(pid), timeout=timeout, what=f"process {pid} to exit",
                 interval=0.05)

    # -- Kea ----------------------------------------------------------------------------------

    def _segment(self) -> None:
        subprocess.run(["ip", "link", "del", self.port], capture_output=True, timeout=30,
                       check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30,
                       check=False)
        prefix = ["ip", "-n", self.netns]
        for argv in (["ip", "netns", "add", self.netns],
                     ["ip", "link", "add", self.port, "type", "veth", "peer", "name", "eth0",
                      "netns", self.netns],
                     [*prefix, "addr", "add", f"{SERVER_IP}/24", "dev", "eth0"],
                     [*prefix, "link", "set", "lo", "up"],
                     [*prefix, "link", "set", "eth0", "up"],
                     ["ip", "link", "set", self.port, "up"]):
            run(argv, timeout=30)

    def _start_kea(self, secret: str) -> None:
        d = self.dir
        logger = [{"output": str(d / "kea-dhcp4.log")}]
        dhcp4 = {"Dhcp4": {
            "interfaces-config": {"interfaces": ["eth0"], "re-detect": True},
            "control-socket": {"socket-type": "unix", "socket-name": str(d / "kea4.sock")},
            "lease-database": {"type": "memfile", "name": str(d / "leases4.csv"),
                               "lfc-interval": 3600},
            "hooks-libraries": [{"library": f"{HOOKS}/libdhcp_lease_cmds.so"}],
            "authoritative": True,
            "subnet4": [],
            "loggers": [{"name": "kea-dhcp4", "output_options": logger, "severity": "INFO"}]}}
        self.kea_conf.write_text(json.dumps(dhcp4, indent=2))
        agent = {"Control-agent": {
            "http-host": "127.0.0.1", "http-port": self.kea_port,
            "authentication": {"type": "basic", "realm": "one-lab",
                               "clients": [{"user": KEA_USER, "password": secret}]},
            "control-sockets": {"dhcp4": {"socket-type": "unix",
                                          "socket-name": str(d / "kea4.sock")}},
            "loggers": [{"name": "kea-ctrl-agent",
                         "output_options": [{"output": str(d / "kea-ctrl-agent.log")}],
                         "severity": "INFO"}]}}
        (d / "kea-ctrl-agent.json").write_text(json.dumps(agent, indent=2))
        (d / "kea-ctrl-agent.json").chmod(0o600)
        env = {**os.environ, "KEA_PIDFILE_DIR": str(d), "KEA_LOCKFILE_DIR": str(d)}
        proc = spawn(["ip", "netns", "exec", self.netns, "kea-dhcp4", "-c", str(self.kea_conf)],
                     log=d / "kea-dhcp4.out", env=env)
        self.kea_pid.write_text(f"{proc.pid}\n")
        wait_for(lambda: self._alive_or_fail(self.kea_pid, "kea-dhcp4")
                 and (d / "kea4.sock").exists(), timeout=20, what="kea-dhcp4", interval=0.05)
        proc = spawn(["kea-ctrl-agent", "-c", str(d / "kea-ctrl-agent.json")],
                     log=d / "kea-ctrl-agent.out", env=env)
        self.agent_pid.write_text(f"{proc.pid}\n")
        wait_for(lambda: self._alive_or_fail(self.agent_pid, "kea-ctrl-agent")
                 and self._kea_answers(), timeout=20, what="kea-ctrl-agent", interval=0.05)

    def _alive_or_fail(self, pidfile: Path, name: str) -> bool:
        if not alive(read_pid(pidfile)):
            raise LabError(f"{name} exited; see {self.dir}/{name}.out and {name}.log")
        return True

    def kea(self, command: str, arguments: dict[str, object] | None = None) -> dict[str, object]:
        """One command to kea-dhcp4 through the agent (for the lab and tests)."""
        import base64

        from one_drivers.core.http import exchange

        body: dict[str, object] = {"command": command, "service": ["dhcp4"]}
        if arguments is not None:
            body["arguments"] = arguments
        auth = base64.b64encode(self.credentials.read_text().strip().encode()).decode()
        status, payload = exchange(
            "POST", f"http://127.0.0.1:{self.kea_port}/", None, json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
            timeout=10, name="Kea")
        if status != 200:
            raise LabError(f"Kea's agent answered HTTP {status}")
        answer: dict[str, object] = json.loads(payload)[0]
        return answer

    def _kea_answers(self) -> bool:
        try:
            return self.kea("status-get").get("result") == 0
        except Exception:
            return False

    # -- PowerDNS -------------------------------------------------------------------------------

    def _start_pdns(self) -> None:
        d = self.dir
        db = d / "pdns.sqlite3"
        schema = Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql").read_text()
        subprocess.run(["sqlite3", str(db)], input=schema, text=True, capture_output=True,
                       timeout=60, check=True)
        key = self.api_key.read_text().strip()
        conf = (f"launch=gsqlite3\ngsqlite3-database={db}\nlocal-address=127.0.0.1\n"
                f"local-port={self.dns_port}\napi=yes\napi-key={key}\nwebserver=yes\n"
                f"webserver-address=127.0.0.1\nwebserver-port={self.api_port}\n"
                f"webserver-allow-from=127.0.0.1\nsocket-dir={d}\nguardian=no\ndaemon=no\n"
                "disable-syslog=yes\nloglevel=4\n")
        (d / "pdns.conf").write_text(conf)
        (d / "pdns.conf").chmod(0o600)
        proc = spawn(["pdns_server", f"--config-dir={d}"], log=d / "pdns.out")
        self.pdns_pid.write_text(f"{proc.pid}\n")
        wait_for(lambda: self._alive_or_fail(self.pdns_pid, "pdns") and self._pdns_answers(),
                 timeout=20, what="pdns_server", interval=0.05)
        for zone in (ZONE, REVERSE_ZONE):
            status, _ = self.pdns("POST", "/zones", {"name": zone, "kind": "Native",
                                                     "nameservers": [f"ns.{ZONE}"]})
            if status != 201:
                raise LabError(f"PowerDNS did not create zone {zone} (HTTP {status})")

    def pdns(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        from one_drivers.core.http import exchange

        status, payload = exchange(
            method, f"http://127.0.0.1:{self.api_port}", f"/api/v1/servers/localhost{path}",
            None if body is None else json.dumps(body).encode(),
            headers={"X-API-Key": self.api_key.read_text().strip(),
                     "Content-Type": "application/json"}, timeout=10, name="PowerDNS")
        return status, json.loads(payload) if payload.strip() else None

    def _pdns_answers(self) -> bool:
        try:
            return self.pdns("GET", "")[0] == 200
        except Exception:
            return False


def _private(path: Path, text: str) -> None:
    path.write_text("")
    path.chmod(0o600)
    path.write_text(text)
