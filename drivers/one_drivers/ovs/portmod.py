"""OpenFlow port configuration (``no-flood``) over the bridge's management socket, in-process.

``ovs-ofctl mod-port`` changes one port per process; a host with 200 protected NICs would start 200
of them after every Open vSwitch restart. OVSDB has no column for it and a bundle cannot carry it,
so this speaks the few OpenFlow 1.0 messages it takes on one connection: HELLO, FEATURES (the
ports with their hardware address and current configuration), a PORT_MOD for each port whose
flooding must change, and a BARRIER whose reply means every change before it is applied (an
ERROR before it fails the call). The whole exchange has one deadline.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable

from one_drivers.core.errors import ActionFailed, BackendTimeout, BackendUnavailable

OFP10 = 1
HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY = 0, 1, 2, 3
FEATURES_REQUEST, FEATURES_REPLY, PORT_MOD, BARRIER_REQUEST, BARRIER_REPLY = 5, 6, 15, 18, 19
NO_FLOOD = 1 << 4  # OFPPC_NO_FLOOD
_HEADER = struct.Struct("!BBHI")
_PHY_PORT = struct.Struct("!H6s16sIIIIII")


class _Conn:
    def __init__(self, path: str, deadline: float) -> None:
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.xid = 0
        self.sock.settimeout(self._left())
        self.sock.connect(path)

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def send(self, msg_type: int, body: bytes = b"") -> int:
        self.xid += 1
        self.sock.sendall(_HEADER.pack(OFP10, msg_type, _HEADER.size + len(body), self.xid)
                          + body)
        return self.xid

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the switch closed the connection")
            data += chunk
        return data

    def receive(self) -> tuple[int, int, bytes]:
        _, msg_type, length, xid = _HEADER.unpack(self._read(_HEADER.size))
        body = self._read(length - _HEADER.size)
        if msg_type == ECHO_REQUEST:
            self.sock.sendall(_HEADER.pack(OFP10, ECHO_REPLY, length, xid) + body)
        return msg_type, xid, body

    def expect(self, want: int, xid: int | None = None) -> bytes:
        while True:
            msg_type, got_xid, body = self.receive()
            if msg_type == ERROR:
                kind, code = struct.unpack_from("!HH", body)
                raise ActionFailed(f"the switch refused a port change (OpenFlow error "
                                   f"type {kind} code {code})")
            if msg_type == want and (xid is None or got_xid == xid):
                return body


def set_flooding(mgmt_socket: str, bridge: str, ports: Iterable[int], *, flood: bool,
                 timeout: float) -> list[int]:
    """Turn NORMAL's flooding to ``ports`` on or off; ports the switch does not have (yet) are
    skipped. Returns the ports changed."""
    wanted = set(ports)
    if not wanted:
        return []
    try:
        conn = _Conn(mgmt_socket, time.monotonic() + timeout)
    except FileNotFoundError:
        raise BackendUnavailable(f"cannot reach bridge {bridge}'s OpenFlow socket "
                                 f"({mgmt_socket} does not exist)",
                                 hint="is ovs-vswitchd running?") from None
    except (OSError, TimeoutError) as exc:
        raise BackendUnavailable(f"cannot reach bridge {bridge}'s OpenFlow socket ({exc})",
                                 hint="is ovs-vswitchd running?") from None
    try:
        conn.send(HELLO)
        conn.expect(HELLO)
        body = conn.expect(FEATURES_REPLY, conn.send(FEATURES_REQUEST))
        changed = []
        for offset in range(24, len(body) - _PHY_PORT.size + 1, _PHY_PORT.size):
            port_no, hw_addr, _, config, *_ = _PHY_PORT.unpack_from(body, offset)
            if port_no not in wanted or bool(config & NO_FLOOD) == (not flood):
                continue
            conn.send(PORT_MOD, struct.pack("!H6sIII4x", port_no, hw_addr,
                                            0 if flood else NO_FLOOD, NO_FLOOD, 0))
            changed.append(port_no)
        conn.expect(BARRIER_REPLY, conn.send(BARRIER_REQUEST))
        return changed
    except TimeoutError:
        raise BackendTimeout(f"bridge {bridge}'s OpenFlow socket did not answer within "
                             f"{timeout:g} s") from None
    except (OSError, ConnectionError, struct.error) as exc:
        raise BackendUnavailable(f"OpenFlow exchange with bridge {bridge} failed ({exc})")\
            from None
    finally:
        conn.sock.close()
