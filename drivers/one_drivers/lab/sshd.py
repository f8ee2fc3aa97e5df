"""An sshd on loopback with generated keys, so remote-execution paths run over real ssh.

Clients use the ssh_config this writes (``ONE_DRIVERS_SSH_CONFIG``), where the lab's host is called
``one-lab-host``: a name that is not this machine's, so the drivers take the ssh path to it.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from one_drivers.lab.proc import LabError, alive, read_pid, run, spawn, stop, wait_for

PORT = 16022
HOST_ALIAS = "one-lab-host"
PRIVSEP_DIR = "/run/sshd"
DATASTORES = "/var/lib/one/datastores"  # the host's own copy of it, as on a separate machine


class SshLab:
    def __init__(self, root: Path, port_offset: int = 0) -> None:
        self.port = PORT + port_offset
        self.dir = root / "ssh"
        self.pidfile = self.dir / "sshd.pid"
        self.config = self.dir / "ssh_config"
        self.key = self.dir / "id_ed25519"

    @property
    def host_datastores(self) -> Path:
        """What the ssh host sees at /var/lib/one/datastores (the front-end sees its own)."""
        return self.dir.parent / "ssh-host" / "datastores"

    def env(self) -> dict[str, str]:
        return {"ONE_DRIVERS_SSH_CONFIG": str(self.config), "ONE_LAB_SSH_HOST": HOST_ALIAS,
                "ONE_LAB_HOST_DATASTORES": str(self.host_datastores)}

    def running(self) -> bool:
        return alive(read_pid(self.pidfile))

    def up(self, created_dirs: list[str]) -> None:
        self.down()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.dir.chmod(0o700)
        if not Path(PRIVSEP_DIR).exists():  # sshd refuses to start without it
            Path(PRIVSEP_DIR).mkdir(mode=0o755)
            created_dirs.append(PRIVSEP_DIR)
        hostkey = self.dir / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "one-lab-host",
             "-f", str(hostkey)])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "one-lab-client",
             "-f", str(self.key)])
        (self.dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        host_pub = " ".join(hostkey.with_suffix(".pub").read_text().split()[:2])
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        sshd_config = self.dir / "sshd_config"
        sshd_config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\n"
            f"PidFile {self.pidfile}\nAuthorizedKeysFile {self.dir}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
            "MaxStartups 100:30:200\nMaxSessions 100\n"
            "LogLevel VERBOSE\n"  # logs every session, shared connection or not
        )
        self.config.write_text(
            f"Host {HOST_ALIAS}\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.dir}/known_hosts\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  LogLevel ERROR\n"
            # as OpenNebula's default front-end ssh config: one connection, many sessions
            f"  ControlMaster auto\n  ControlPath {self.dir}/c-%p\n  ControlPersist yes\n"
        )
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.host_datastores.mkdir(parents=True, exist_ok=True)
        for path in ("/var/lib/one", DATASTORES):  # mount point for the host's private view
            if not Path(path).exists():
                Path(path).mkdir()
                created_dirs.append(path)
        # -D: stay in the foreground so the PID we record is sshd's own; in its own mount
        # namespace the host has its own /var/lib/one/datastores, like a separate machine
        spawn(["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m",
               "one_drivers.lab.mountns", f"{self.host_datastores}={DATASTORES}", "--",
               sshd, "-D", "-e", "-f", str(sshd_config)], log=self.dir / "sshd.log",
              pidfile=self.pidfile)

        def listening() -> bool:
            if not self.running():
                raise LabError(f"sshd exited; see {self.dir}/sshd.log")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, timeout=10, what="sshd to listen")

    def healthy(self) -> bool:
        if not self.running():
            return False
        proc = run(["ssh", "-F", str(self.config), HOST_ALIAS, "--", "true"], timeout=15,
                   check=False)
        return proc.returncode == 0

    def down(self) -> list[str]:
        if self.config.exists():  # the shared connection first: it would outlive sshd
            run(["ssh", "-F", str(self.config), "-O", "exit", HOST_ALIAS], timeout=15,
                check=False)
        return ["sshd"] if stop(self.pidfile) else []
