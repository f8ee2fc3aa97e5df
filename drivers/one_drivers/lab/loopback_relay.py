"""Loopback services of the host in another network namespace:
``python -m one_drivers.lab.loopback_relay NETNS PORT|LO-HI...``.

The lab's Ceph listens on 127.0.0.1 only, and a network namespace has its own loopback. The second
lab host (its own network namespace, like a separate machine) still needs the cluster: this relay
listens on 127.0.0.1:PORT *inside* NETNS (a socket stays in the namespace it was created in, so
the listening sockets are made after ``setns`` and the process then returns to its own namespace)
and forwards each connection to 127.0.0.1:PORT of the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_inside(netns: str, ports: list[int]) -> list[socket.socket]:
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        listeners = []
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.setblocking(False)
            listeners.append(sock)
        return listeners
    finally:
        _setns(own)
        os.close(own)
        os.close(target)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _relay(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    client.setblocking(True)
    threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
    _pump(upstream, client)
    client.close()
    upstream.close()


def parse_ports(specs: list[str]) -> list[int]:
    ports: list[int] = []
    for spec in specs:
        lo, _, hi = spec.partition("-")
        ports.extend(range(int(lo), int(hi or lo) + 1))
    return ports


def main(argv: list[str]) -> None:
    netns, *specs = argv
    selector = selectors.DefaultSelector()
    for sock in listen_inside(netns, parse_ports(specs)):
        selector.register(sock, selectors.EVENT_READ, sock.getsockname()[1])
    print("relaying", flush=True)
    while True:
        for key, _ in selector.select():
            try:
                client, _addr = key.fileobj.accept()  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            threading.Thread(target=_relay, args=(client, key.data), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
