"""One LDAP server, asked with ldap3: find the user (as the search user), check the password
(a bind as the user, on a connection of its own), and list the user's groups, nested ones
included. Every value put into a filter is escaped; every operation has the server's timeout,
capped by what is left of the login's deadline.

Outcomes: :class:`Accepted`; :class:`Refused` (no such user, a wrong password, not in the
required group: the next server in the main order may still know the user); :class:`Unreachable`
(it did not answer, or TLS failed: the next server of its availability group is asked).
"""

from __future__ import annotations

import math
import socket
import ssl
from typing import Any, NamedTuple

from one_drivers.auth.ldap.config import Server
from one_drivers.core.retry import Deadline

IN_CHAIN = "1.2.840.113556.1.4.1941"  # Active Directory's LDAP_MATCHING_RULE_IN_CHAIN


class Accepted(NamedTuple):
    dn: str
    groups: list[str]  # DNs, the directory's order, nested ones after their members


class Refused(Exception):
    pass


class Unreachable(Exception):
    pass


def normal_dn(dn: str) -> str:
    """A DN as compared here: lower case, no spaces around separators."""
    return ",".join(part.strip() for part in dn.lower().split(","))


def _connection(server: Server, user: str | None, password: str | None,
                timeout: float) -> Any:
    import ldap3

    seconds = max(1, math.ceil(timeout))  # ldap3 packs them into socket options: whole seconds
    tls = None
    if server.encryption:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if server.verify_cert else ssl.CERT_NONE,
                        ca_certs_file=server.ca_cert, version=ssl.PROTOCOL_TLS_CLIENT)
    srv = ldap3.Server(server.host, port=server.port,
                       use_ssl=server.encryption == "simple_tls", tls=tls,
                       connect_timeout=seconds, get_info=ldap3.NONE)
    conn = ldap3.Connection(srv, user=user, password=password, receive_timeout=seconds,
                            read_only=True, raise_exceptions=False, auto_referrals=False)
    return conn


def _open(conn: Any, server: Server) -> None:
    from ldap3.core.exceptions import LDAPException

    try:
        conn.open()
        # ldap3 writes a request in pieces: with Nagle's algorithm each answer waits for the
        # peer's delayed ACK (40 ms a bind here)
        conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server.encryption == "start_tls" and not conn.start_tls():
            raise Unreachable(f"StartTLS failed ({conn.result.get('description')})")
    except LDAPException as exc:
        raise Unreachable(_why(exc)) from None


def _why(exc: Exception) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    if "timed out" in text.lower() or "timeout" in exc.__class__.__name__.lower():
        return "did not answer in time"
    return text.splitlines()[0][:200]


def _bind(conn: Any, what: str) -> bool:
    from ldap3.core.exceptions import LDAPException

    try:
        return bool(conn.bind())
    except LDAPException as exc:
        raise Unreachable(f"{what}: {_why(exc)}") from None


def _search(conn: Any, base: str, query: str, attributes: list[str], limit: int = 0
            ) -> list[Any]:
    from ldap3.core.exceptions import LDAPException

    try:
        conn.search(base, query, attributes=attributes, size_limit=limit)
    except LDAPException as exc:
        raise Unreachable(_why(exc)) from None
    code = conn.result.get("result", 0)
    if code not in (0, 4):  # success, size limit exceeded (we asked for few)
        raise Unreachable(f"search failed: {conn.result.get('description')}")
    return list(conn.entries)


def login(server: Server, username: str, secret: str, deadline: Deadline) -> Accepted:
    from ldap3.utils.conv import escape_filter_chars

    timeout = deadline.cap(server.timeout, f"LDAP server {server.name}")
    search = _connection(server, server.bind_dn, server.bind_password, timeout)
    _open(search, server)
    try:
        if (server.bind_dn or server.bind_password) and not _bind(search, "search bind"):
            raise Unreachable(f"the search user was refused "
                              f"({search.result.get('description')})")
        wanted = [] if server.user_group_field == "dn" else [server.user_group_field]
        found = _search(search, server.base,
                        f"({server.user_field}={escape_filter_chars(username)})", wanted, 2)
        if len(found) != 1:
            raise Refused("no such user" if not found else "the user name is ambiguous")
        dn = found[0].entry_dn
        value = dn if server.user_group_field == "dn" else \
            str(found[0][server.user_group_field].value or "")
        groups = _groups(search, server, dn, value, deadline)
        # the password last, on the same connection (one TLS handshake): a bind as the user
        search.user, search.password = dn, secret
        deadline.cap(1, "the bind as the user")
        if not _bind(search, "bind as the user"):
            raise Refused("wrong password")
    finally:
        search.unbind()
    if server.group and normal_dn(server.group) not in {normal_dn(g) for g in groups}:
        raise Refused(f"not a member of {server.group}")
    return Accepted(dn, groups)


def _groups(conn: Any, server: Server, dn: str, value: str, deadline: Deadline) -> list[str]:
    from ldap3.utils.conv import escape_filter_chars

    if server.rfc2307bis and server.nested == "in_chain":
        found = _search(conn, server.base,
                        f"({server.group_field}:{IN_CHAIN}:={escape_filter_chars(dn)})", [])
        return [e.entry_dn for e in found]
    found = _search(conn, server.base, f"({server.group_field}={escape_filter_chars(value)})",
                    [])
    groups = [e.entry_dn for e in found]
    if not server.rfc2307bis or server.nested != "recursive":
        return groups
    seen = {normal_dn(g) for g in groups}
    frontier = groups
    for _ in range(server.nested_depth):  # groups whose members are groups found so far
        if not frontier:
            break
        deadline.cap(1, "listing nested groups")
        query = "(|" + "".join(f"({server.group_field}={escape_filter_chars(g)})"
                               for g in frontier) + ")"
        frontier = [e.entry_dn for e in _search(conn, server.base, query, [])
                    if normal_dn(e.entry_dn) not in seen]
        seen.update(normal_dn(g) for g in frontier)
        groups += frontier
    return groups
