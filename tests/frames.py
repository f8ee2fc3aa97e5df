"""Hand-made Ethernet frames for security-group tests: sent from one lab namespace with a raw
socket, watched for on the receiving namespace's interface. Every frame carries a marker in its
payload, so the receiver can say exactly which ones arrived."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from collections.abc import Sequence

from one_drivers.lab.netns import FakeNic

BROADCAST = "ff:ff:ff:ff:ff:ff"


def _tag(marker: str) -> bytes:
    """The marker as it travels: delimited, so no marker is found inside another."""
    return f"<{marker}>".encode()


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _eth(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload


def _ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", _csum(header)) + header[12:]
    return header + payload


def _ipv6(src: str, dst: str, proto: int, payload: bytes, hops: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, hops,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def _l4_sum6(src: str, dst: str, proto: int, segment: bytes) -> int:
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!IxxxB", len(segment), proto))
    return _csum(pseudo + segment)


def udp4(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
         marker: str) -> bytes:
    body = _tag(marker)
    seg = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    pseudo = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
              + struct.pack("!xBH", 17, len(seg)))
    seg = seg[:6] + struct.pack("!H", _csum(pseudo + seg) or 0xFFFF) + seg[8:]
    return _eth(dst_mac, src_mac, 0x0800, _ipv4(src, dst, 17, seg))


def udp6(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int,
         marker: str) -> bytes:
    body = _tag(marker)
    seg = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    seg = seg[:6] + struct.pack("!H", _l4_sum6(src, dst, 17, seg) or 0xFFFF) + seg[8:]
    return _eth(dst_mac, src_mac, 0x86DD, _ipv6(src, dst, 17, seg))


def icmp4(src_mac: str, dst_mac: str, src: str, dst: str, icmp_type: int, marker: str) -> bytes:
    msg = struct.pack("!BBHHH", icmp_type, 0, 0, 0x4242, 1) + _tag(marker)
    msg = msg[:2] + struct.pack("!H", _csum(msg)) + msg[4:]
    return _eth(dst_mac, src_mac, 0x0800, _ipv4(src, dst, 1, msg))


def icmp6(src_mac: str, dst_mac: str, src: str, dst: str, icmp_type: int, marker: str,
          body: bytes = b"") -> bytes:
    msg = struct.pack("!BBH", icmp_type, 0, 0) + body + _tag(marker)
    msg = msg[:2] + struct.pack("!H", _l4_sum6(src, dst, 58, msg)) + msg[4:]
    return _eth(dst_mac, src_mac, 0x86DD, _ipv6(src, dst, 58, msg, hops=255))


_SEND = ("import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
         "s.bind(('eth0',0));[s.send(bytes.fromhex(h)) for h in sys.argv[1:]]")

_WATCH = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
markers = sys.argv[2:]
stop = sys.argv[1]
print("READY", flush=True)
seen = []
end = time.monotonic() + 20
while time.monotonic() < end:
    s.settimeout(max(0.05, end - time.monotonic()))
    try:
        frame, info = s.recvfrom(65535)
    except TimeoutError:
        break
    if info[2] == socket.PACKET_OUTGOING:
        continue
    for m in markers:
        if f"<{m}>".encode() in frame and m not in seen:
            seen.append(m)
            print(m, flush=True)
    if stop in seen:
        break
print("END", flush=True)
"""


Send = tuple[FakeNic, str, bytes]  # who sends it, its marker, the frame


def exchange(receiver: FakeNic, sends: Sequence[Send], control: str) -> set[str]:
    """Send the frames in order (each sender's run from one process, one after the other), the
    one marked ``control`` last; return the markers ``receiver`` saw. The receiver stops when
    the control arrives: what was sent before it would have arrived by then."""
    markers = [m for _, m, _ in sends]
    assert markers[-1] == control, "the control frame goes last"
    watch = subprocess.Popen(["ip", "netns", "exec", receiver.netns, "python3", "-c", _WATCH,
                              control, *markers], stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() == "READY"
        i = 0
        while i < len(sends):
            sender = sends[i][0]
            run = []
            while i < len(sends) and sends[i][0] is sender:
                run.append(sends[i][2].hex())
                i += 1
            sender.exec("python3", "-c", _SEND, *run, check=True)
        lines = [ln.strip() for ln in watch.stdout]
    finally:
        watch.kill()
        watch.wait()
    return set(lines) - {"END"}
