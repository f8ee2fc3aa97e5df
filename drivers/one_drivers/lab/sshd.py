"""Two sshd on loopback with generated keys, so remote-execution paths run over real ssh: one
per lab host, each in its own mount namespace where the host's own libvirtd and switch are at the
system paths (``/run/libvirt``, ``/run/openvswitch``), as on a separate machine.

Clients use the ssh_config this writes (``ONE_DRIVERS_SSH_CONFIG``). The second host (libvirt2,
ovs2, its own /var/lib/one/datastores) is called ``one-lab-host``, or by its address on the veth
link, ``10.254.0.2``; the first (the lab's main libvirtd and switch, this machine's own
/var/lib/one/datastores) ``one-lab-host1`` or ``10.254.0.1``. None of these names is this
machine's, so the drivers take the ssh path to them; a real oned registers the hosts by address,
which is also where a live migration's memory stream goes (MIGRATE_URI ``tcp://{host}``).
"""

from __future__ import annotations

import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from one_drivers.lab.proc import LabError, alive, read_pid, run, spawn, stop, wait_for

PORT = 16022
HOST_ALIAS = "one-lab-host"
HOST1_ALIAS = "one-lab-host1"
PRIVSEP_DIR = "/run/sshd"
DATASTORES = "/var/lib/one/datastores"  # the host's own copy of it, as on a separate machine


@dataclass
class SshHost:
    """One lab host as ssh reaches it: its names in ssh_config, its sshd's port offset from
    :data:`PORT`, what its mount namespace binds (source -> system path) and what its sessions
    get in their environment (what a real host has as its defaults)."""

    names: tuple[str, ...]
    port_step: int
    binds: dict[str, str] = field(default_factory=dict)
    session_env: dict[str, str] = field(default_factory=dict)


class SshLab:
    def __init__(self, root: Path, port_offset: int = 0) -> None:
        self.port = PORT + port_offset
        self.dir = root / "ssh"
        self.pidfile = self.dir / "sshd.pid"
        self.config = self.dir / "ssh_config"
        self.key = self.dir / "id_ed25519"
        self.hosts: list[SshHost] = [SshHost((HOST_ALIAS,), 0)]

    @property
    def host_datastores(self) -> Path:
        """What the ssh host sees at /var/lib/one/datastores (the front-end sees its own)."""
        return self.dir.parent / "ssh-host" / "datastores"

    def env(self) -> dict[str, str]:
        env = {"ONE_DRIVERS_SSH_CONFIG": str(self.config), "ONE_LAB_SSH_HOST": HOST_ALIAS,
               "ONE_LAB_HOST_DATASTORES": str(self.host_datastores)}
        for key, host in zip(("ONE_LAB_SSH_HOST_ADDR", "ONE_LAB_SSH_HOST1_ADDR"),
                             self.hosts, strict=False):
            env[key] = host.names[-1]
        if len(self.hosts) > 1:
            env["ONE_LAB_SSH_HOST1"] = self.hosts[1].names[0]
        return env

    def _pidfile(self, host: SshHost) -> Path:
        return self.pidfile if host.port_step == 0 else \
            self.dir / f"sshd{host.port_step}.pid"

    def running(self) -> bool:
        return all(alive(read_pid(self._pidfile(h))) for h in self.hosts)

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
        (self.dir / "known_hosts").write_text("".join(
            f"[127.0.0.1]:{self.port + h.port_step} {host_pub}\n" for h in self.hosts))
        self.config.write_text("".join(
            f"Host {' '.join(h.names)}\n  HostName 127.0.0.1\n  Port {self.port + h.port_step}\n"
            f"  User root\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.dir}/known_hosts\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  LogLevel ERROR\n"
            # as OpenNebula's default front-end ssh config: one connection, many sessions
            f"  ControlMaster auto\n  ControlPath {self.dir}/c-%p\n  ControlPersist yes\n"
            for h in self.hosts))
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.host_datastores.mkdir(parents=True, exist_ok=True)
        for path in ("/var/lib/one", DATASTORES):  # mount point for the host's private view
            if not Path(path).exists():
                Path(path).mkdir()
                created_dirs.append(path)
        for host in self.hosts:
            self._start(host, hostkey, sshd, created_dirs)

    def _start(self, host: SshHost, hostkey: Path, sshd: str, created_dirs: list[str]) -> None:
        port = self.port + host.port_step
        pidfile = self._pidfile(host)
        sshd_config = self.dir / f"sshd_config{host.port_step or ''}"
        # a home of the host's own, as on a separate machine: the session's login shell reads
        # its dotfiles, not those of this machine's root (a pyenv set up there cost every
        # session some 70 ms, a host's shell nothing like it)
        home = self.dir / f"home{host.port_step}"
        home.mkdir(mode=0o700, exist_ok=True)
        setenv = "".join(f" {k}={v}" for k, v in {"HOME": str(home),
                                                   **host.session_env}.items())
        sshd_config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\n"
            f"PidFile {pidfile}\nAuthorizedKeysFile {self.dir}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
            "MaxStartups 100:30:200\nMaxSessions 100\n"
            "Subsystem sftp internal-sftp\n"  # a backup server's (upstream's restic over sftp)
            + (f"SetEnv{setenv}\n" if setenv else "")
            + "LogLevel VERBOSE\n"  # logs every session, shared connection or not
        )
        for target in host.binds.values():
            if not Path(target).exists():  # a mount point must exist; removed again by down
                Path(target).mkdir(parents=True)
                created_dirs.append(target)
        binds = [f"{src}={dst}" for src, dst in host.binds.items()]
        # -D: stay in the foreground so the PID we record is sshd's own; in its own mount
        # namespace the host has its own /var/lib/one/datastores, libvirtd and switch
        spawn(["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m",
               "one_drivers.lab.mountns", *binds, "--",
               sshd, "-D", "-e", "-f", str(sshd_config)],
              log=self.dir / f"sshd{host.port_step or ''}.log", pidfile=pidfile)

        def listening() -> bool:
            if not alive(read_pid(pidfile)):
                raise LabError(f"sshd exited; see {self.dir}/sshd{host.port_step or ''}.log")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, timeout=10, what=f"sshd {port} to listen")

    def healthy(self) -> bool:
        if not self.running():
            return False
        return all(run(["ssh", "-F", str(self.config), h.names[0], "--", "true"], timeout=15,
                       check=False).returncode == 0 for h in self.hosts)

    def down(self) -> list[str]:
        stopped = []
        for host in self.hosts:
            if self.config.exists():  # the shared connection first: it would outlive sshd
                run(["ssh", "-F", str(self.config), "-O", "exit", host.names[0]], timeout=15,
                    check=False)
            if stop(self._pidfile(host)):
                stopped.append(f"sshd {self.port + host.port_step}")
        return stopped
