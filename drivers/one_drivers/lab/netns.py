"""VM NICs without VMs: a network namespace per NIC, joined to the host by a veth pair whose host
end carries the NIC's TARGET name, as a QEMU tap would. The lab's OVS sees it exactly like a
VM's tap, and traffic between namespaces is real traffic through the userspace datapath."""

from __future__ import annotations

import subprocess
from typing import NamedTuple


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


class FakeNic(NamedTuple):
    netns: str
    target: str
    mac: str
    host_netns: str | None = None  # where the host end lives: the second lab host's namespace

    def exec(self, *argv: str, timeout: float = 30, check: bool = False
             ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=check)

    def ping(self, address: str, *, count: int = 1, size: int | None = None,
             dont_fragment: bool = False, wait: float = 1) -> bool:
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", f"{wait:g}", "-i", "0.2"]
        if size is not None:
            argv += ["-s", str(size)]
        if dont_fragment:
            argv += ["-M", "do"]
        return self.exec(*argv, address, timeout=count * wait + 10).returncode == 0


def plug(target: str, mac: str, addresses: list[str], *, mtu: int | None = None,
         netns: str | None = None, host_netns: str | None = None) -> FakeNic:
    """A namespace ``netns`` (default: the target's name) with ``eth0`` = ``mac``/``addresses``,
    and the host end ``target`` up, in ``host_netns`` when the NIC is on the second lab host.
    Replaces a leftover of the same name."""
    ns = netns or f"ns-{target}"
    unplug(target, ns, host_netns)
    host = ["-n", host_netns] if host_netns else []
    _ip("netns", "add", ns)
    _ip("link", "add", target, "type", "veth", "peer", "name", "eth0", "netns", ns)
    if host_netns:
        _ip("link", "set", target, "netns", host_netns)
    _ip("-n", ns, "link", "set", "eth0", "address", mac)
    for address in addresses:
        _ip("-n", ns, "addr", "add", address, "dev", "eth0", "nodad")
    if mtu:
        _ip(*host, "link", "set", target, "mtu", str(mtu))
        _ip("-n", ns, "link", "set", "eth0", "mtu", str(mtu))
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip(*host, "link", "set", target, "up")
    return FakeNic(ns, target, mac, host_netns)


def unplug(target: str, netns: str | None = None, host_netns: str | None = None) -> None:
    """The VM is gone: its tap disappears (and its namespace with it)."""
    _ip(*(["-n", host_netns] if host_netns else []), "link", "del", target, check=False)
    _ip("netns", "del", netns or f"ns-{target}", check=False)


_SERVE = ("import socket,sys;s=socket.socket();"
          "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
          "s.bind(('0.0.0.0',int(sys.argv[1])));s.listen();s.settimeout(4);"
          "print('listening',flush=True);c,_=s.accept();c.sendall(b'ok')")
_CONNECT = ("import socket,sys;"
            "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1.5);"
            "print(s.recv(2).decode())")


def tcp_connects(client: FakeNic, server: FakeNic, address: str, port: int) -> bool:
    """Does a TCP connection from ``client`` to ``server``'s ``address:port`` get through (and
    its answer back)?"""
    srv = subprocess.Popen(["ip", "netns", "exec", server.netns, "python3", "-c", _SERVE,
                            str(port)], stdout=subprocess.PIPE, text=True)
    try:
        if srv.stdout is None or srv.stdout.readline().strip() != "listening":  # ready: no sleep
            return False
        res = client.exec("python3", "-c", _CONNECT, address, str(port), timeout=10)
        return res.stdout.strip() == "ok"
    finally:
        srv.kill()
        srv.wait()
