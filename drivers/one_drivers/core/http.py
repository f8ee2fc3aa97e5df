"""One HTTP exchange on a socket, with one overall deadline: oned's XML-RPC, Kea's control agent
and PowerDNS's API all go through here.

``http.client``/``urllib`` cost start-up time (email, ssl imports) that a driver process pays on
every call, and their timeouts are per read: a server that trickles a byte at a time keeps them
waiting without end. This speaks exactly what those services need: one HTTP/1.0 request with a
body, one answer read until the server closes, within ``timeout`` seconds in total.
"""

from __future__ import annotations

import socket
import time

from one_drivers.core.errors import BackendTimeout, BackendUnavailable, BadInput

MAX_ANSWER = 64 << 20


def split_endpoint(endpoint: str, what: str = "ONE_XMLRPC") -> tuple[str, str, int, str]:
    """``http[s]://host[:port]/path`` -> (scheme, host, port, path); IPv6 hosts in brackets.
    (urllib.parse would cost start-up time for this one split.)"""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise BadInput(f"{what} {endpoint!r} is not an http(s) URL")
    netloc, slash, path = rest.partition("/")
    host, port = netloc, 443 if scheme == "https" else 80
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif ":" in netloc:
        host, _, p = netloc.rpartition(":")
        if not p.isdigit():
            raise BadInput(f"{what} {endpoint!r} has an invalid port")
        port = int(p)
    return scheme, host or "localhost", port, slash + path if slash else "/"


def exchange(method: str, endpoint: str, path: str | None, body: bytes | None, *,
             headers: dict[str, str], timeout: float, name: str, hint: str = "",
             max_answer: int = MAX_ANSWER) -> tuple[int, bytes]:
    """(status, payload) of ``method`` on ``endpoint`` (``path`` replaces the endpoint's own).
    ``name`` says which service failed in the error; ``hint`` what to check."""
    scheme, host, port, base = split_endpoint(endpoint, name)
    lines = [f"{method} {path or base} HTTP/1.0", f"Host: {host}:{port}",
             "User-Agent: one-drivers", *(f"{k}: {v}" for k, v in headers.items())]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    ends = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            conn: socket.socket = sock
            if scheme == "https":
                import ssl  # only for TLS endpoints

                conn = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            conn.sendall(request)
            chunks = []
            received = 0
            while True:
                left = ends - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                conn.settimeout(left)
                data = conn.recv(65536)
                if not data:
                    break
                received += len(data)
                if received > max_answer:
                    raise BadInput(f"{name}'s answer is larger than {max_answer >> 20} MiB")
                chunks.append(data)
    except TimeoutError:
        raise BackendTimeout(f"{name} at {endpoint} did not answer within {timeout:g} s",
                             hint=hint) from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise BackendUnavailable(f"cannot reach {name} at {endpoint} ({reason})",
                                 hint=hint) from None
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise BackendUnavailable(f"{name} at {endpoint} sent no HTTP answer", hint=hint) from None
    return status, payload
