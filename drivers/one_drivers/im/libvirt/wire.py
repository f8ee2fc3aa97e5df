"""monitord's wire format and transport.

A message is one line ``<TYPE> <SUCCESS|FAILURE> <host id> <epoch> <payload>``, the payload being
base64(zlib(text)), or, when monitord publishes a public key, base64(zlib(RSA blocks)): the text
cut in blocks of key size - 11 bytes, each encrypted with PKCS#1 v1.5, concatenated. UDP for every
type but STATE_VM, which goes over TCP so a state change is never silently lost.
"""

from __future__ import annotations

import base64
import socket
import time
import zlib
from typing import Any, NamedTuple

TCP_TYPES = ("STATE_VM", "EXEC_VM")  # EXEC_VM: a result is sent once, never to a lost datagram
BACKOFF = (1, 1, 1, 2, 4, 8, 8, 16, 32, 64)  # seconds after consecutive send failures


def load_public_key(pem: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(pem.encode())


def pack(text: str, pubkey: Any = None) -> str:
    data = text.encode()
    if pubkey is not None:
        from cryptography.hazmat.primitives.asymmetric import padding

        block = pubkey.key_size // 8 - 11
        data = b"".join(pubkey.encrypt(data[i:i + block], padding.PKCS1v15())
                        for i in range(0, len(data), block))
    return base64.b64encode(zlib.compress(data, 9)).decode()


def start_message_part(text: str) -> str:
    """A message inside the START_MONITOR answer (``<MONITOR_MESSAGES>``): monitord only
    base64-decodes these (MonitorDriverProtocol::_start_monitor), unlike the UDP/TCP messages,
    which are compressed and may be encrypted; compressed here, a real monitord failed to parse
    them and put the host in ERROR."""
    return base64.b64encode(text.encode()).decode()


def unpack(payload: str, private_key: Any = None) -> str:
    """The inverse (monitord's side): for tests and for operators debugging a capture."""
    data = zlib.decompress(base64.b64decode(payload))
    if private_key is not None:
        from cryptography.hazmat.primitives.asymmetric import padding

        size = private_key.key_size // 8
        data = b"".join(private_key.decrypt(data[i:i + size], padding.PKCS1v15())
                        for i in range(0, len(data), size))
    return data.decode()


class Message(NamedTuple):
    kind: str
    ok: bool
    host_id: int
    text: str
    timestamp: int = 0

    def line(self, pubkey: Any = None) -> str:
        ts = self.timestamp or int(time.time())
        return (f"{self.kind} {'SUCCESS' if self.ok else 'FAILURE'} {self.host_id} {ts} "
                f"{pack(self.text, pubkey)}")


class Sender:
    """Sends to monitord; after a failure it waits BACKOFF steps before trying again."""

    def __init__(self, address: str, port: int, pubkey: Any = None, timeout: float = 5) -> None:
        self.address, self.port, self.pubkey, self.timeout = address, port, pubkey, timeout
        self.failures = 0
        self.next_try = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.next_try

    def send(self, message: Message) -> bool:
        """True when sent; False (and back-off armed) when monitord could not be reached."""
        line = message.line(self.pubkey).encode()
        try:
            family, stype, proto, _, addr = socket.getaddrinfo(
                self.address, self.port, type=socket.SOCK_STREAM if message.kind in TCP_TYPES
                else socket.SOCK_DGRAM)[0]
            with socket.socket(family, stype, proto) as sock:
                sock.settimeout(self.timeout)
                if message.kind in TCP_TYPES:
                    sock.connect(addr)
                    sock.sendall(line)
                else:
                    sock.sendto(line, addr)
        except OSError:
            self.next_try = time.monotonic() + BACKOFF[min(self.failures, len(BACKOFF) - 1)]
            self.failures += 1
            return False
        self.failures = 0
        self.next_try = 0.0
        return True
