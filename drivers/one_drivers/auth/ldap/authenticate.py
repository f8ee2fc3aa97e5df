"""``auth/ldap/authenticate``: stdin ``<AUTHN><USERNAME/><PASSWORD/><SECRET/></AUTHN>`` (SECRET is
what the user typed), answer ``ldap <user> <user DN> [gid|*gid ...]`` (URL-escaped; the first gid
is the primary group, ``*`` group admin).

The servers are asked as ``:order:`` (or ``:match_user_regex:``) says: within an availability
group the next server is asked only when one does not answer; a server that refuses the login
sends us on to the next entry of the main order; all within the action's deadline. An empty or
blank password is refused before anything is sent (an unauthenticated bind must never count as
a login). The user's directory groups become OpenNebula groups through the mapping (GROUP_DN of
OpenNebula's groups, read from oned and kept in a mapping file); admin rights: every mapped
group for members of ``group_admin_group_dn``, and any group the user already administers in
OpenNebula stays administered (a right granted by hand is not taken away at the next login).
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from typing import TYPE_CHECKING

from one_drivers.auth.ldap.config import Config, Server, build, load_yaml
from one_drivers.core import log
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.errors import (
    ActionFailed,
    BackendUnavailable,
    BadInput,
    DriverError,
    PermissionDenied,
)
from one_drivers.core.xmlview import XmlView, parse_xml

if TYPE_CHECKING:
    from one_drivers.auth.ldap import directory


def load_config(settings: Settings) -> Config:
    """ldap_auth.conf, parsed; kept as JSON in the driver user's private directory while the
    file is unchanged (parsing YAML costs more than the rest of a login's start-up). The copy
    holds the bind password: read only from a file and directory nobody else can change."""
    import json

    from one_drivers.core.atomic import write_atomic
    from one_drivers.core.safefs import Untrusted, open_trusted_dir, read_trusted_file

    path = settings.get("CONFIG") or "/etc/one/auth/ldap_auth.conf"
    folder = os.path.expanduser(settings.get("MAPPING_DIR") or "~/.one-drivers/auth")
    cache = os.path.join(folder, "ldap_auth.json")
    try:
        with open(path, encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            stamp = f"{path}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, Untrusted):
                kept = json.loads(read_trusted_file(cache, uid=os.geteuid()) or b"{}")
                if kept.get("stamp") == stamp:
                    return build(kept["config"], path)
            raw = load_yaml(fh.read(1 << 20), path)
    except OSError as exc:
        raise ActionFailed(f"cannot read the LDAP configuration {path} ({exc.strerror})",
                           hint="the driver's user must be able to read it (root:oneadmin 0640)"
                           ) from None
    config = build(raw, path)  # checked before it is kept
    with contextlib.suppress(OSError, Untrusted):
        os.makedirs(os.path.dirname(folder), mode=0o700, exist_ok=True)
        os.close(open_trusted_dir(folder, create_mode=0o700, private=True))
        write_atomic(cache, json.dumps({"stamp": stamp, "config": raw}), mode=0o600,
                     private=True)
    return config


def authenticate(call: Call) -> str:
    authn = call.doc
    username: str = authn.username
    secret: str = authn.secret
    if not username.strip() or any(ord(c) < 32 for c in username):
        raise BadInput("the user name is empty or holds control characters")
    if not secret.strip():
        raise PermissionDenied("an empty or blank password is not a login")
    from one_drivers.auth.ldap import agent

    answered = agent.ask(call)  # the resident agent, which has ldap3 loaded already
    return answered if answered is not None else login(call)


def login(call: Call) -> str:
    """The login itself, in this process (the agent runs this too)."""
    from one_drivers.auth.ldap import directory

    username: str = call.doc.username
    secret: str = call.doc.secret
    config = load_config(call.settings)
    refused: list[str] = []
    unreachable: list[str] = []
    for group in config.chain(username):
        for name in group:
            server = config.servers[name]
            try:
                accepted = directory.login(server, username, secret, call.deadline)
            except directory.Unreachable as exc:
                unreachable.append(f"{name}: {exc}")
                log.info(f"LDAP server {name} ({server.host}:{server.port}): {exc}")
                continue
            except directory.Refused as exc:
                refused.append(f"{name}: {exc}")
                break  # this group has spoken; the next entry of the order may know the user
            return answer(username, accepted, server, call)
    if refused:
        raise PermissionDenied(f"LDAP login of {username} refused ({'; '.join(refused)})")
    raise BackendUnavailable(f"no LDAP server answered ({'; '.join(unreachable)})",
                             hint="check the servers in ldap_auth.conf and the network")


def answer(username: str, accepted: directory.Accepted, server: Server, call: Call) -> str:
    from one_drivers.auth.ldap import directory

    oned = _oned_groups(call)
    mapping = group_mapping(server, call.settings, oned)
    gids: list[str] = []
    for dn in accepted.groups:
        gid = mapping.get(directory.normal_dn(dn))
        if gid is not None and gid not in gids:
            gids.append(gid)
    if not gids and server.mapping_default is not None:
        gids = [server.mapping_default]
    member_of = {directory.normal_dn(g) for g in accepted.groups}
    admin_everywhere = bool(server.admin_group) and \
        directory.normal_dn(server.admin_group or "") in member_of
    kept = _administered(username, oned, call) if gids and not admin_everywhere else set()
    marked = [f"*{g}" if admin_everywhere or g in kept else g for g in gids]
    quote = urllib.parse.quote
    return " ".join(["ldap", quote(username, safe=""), quote(accepted.dn, safe=""), *marked])


def _oned_groups(call: Call) -> XmlView | None:
    """oned's groups (their GROUP_DN and ADMINS), or None when oned cannot be asked."""
    from one_drivers.core.oned import Oned

    try:
        oned = Oned(timeout=call.deadline.cap(call.settings.float("ONED_TIMEOUT", 10),
                                              "asking oned"))
        text = oned.call("one.grouppool.info", oned.session)
        return XmlView(parse_xml(text, what="oned's group pool", root="GROUP_POOL"))
    except DriverError as exc:
        log.info(f"cannot list OpenNebula's groups ({exc}); the mapping file is used as it is")
        return None


def group_mapping(server: Server, settings: Settings, groups: XmlView | None) -> dict[str, str]:
    """Directory group DN (normalised) -> OpenNebula group id. Made from the GROUP_DN
    (mapping_key) of OpenNebula's groups and written to the mapping file when that is older
    than mapping_timeout; read from the file when oned cannot be asked or generation is off."""
    from one_drivers.auth.ldap import directory
    from one_drivers.core.atomic import write_atomic

    folder = os.path.expanduser(settings.get("MAPPING_DIR") or "~/.one-drivers/auth")
    path = os.path.join(folder, os.path.basename(server.mapping_file))
    if server.mapping_generate and groups is not None:
        mapping = {}
        for group in groups.elem.iterfind("GROUP"):
            dn = (group.findtext(f"TEMPLATE/{server.mapping_key}") or "").strip()
            if dn and group.findtext("ID"):
                mapping[dn] = str(group.findtext("ID"))
        try:
            stale = time.time() - os.stat(path).st_mtime > server.mapping_timeout
        except FileNotFoundError:
            stale = True
        if stale:  # upstream's format (YAML), for operators and upstream's tools
            import yaml

            os.makedirs(folder, mode=0o700, exist_ok=True)
            write_atomic(path, yaml.safe_dump(mapping, default_flow_style=False))
    else:
        import yaml

        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh.read(1 << 20)) or {}
        except (OSError, yaml.YAMLError):
            loaded = {}
        mapping = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) \
            else {}
    return {directory.normal_dn(dn): gid for dn, gid in mapping.items()}


def _administered(username: str, groups: XmlView | None, call: Call) -> set[str]:
    """The groups the user already administers in OpenNebula."""
    from one_drivers.core.oned import Oned

    if groups is None:
        return set()
    admins = {g.findtext("ID") or "": {a.text for a in g.iterfind("ADMINS/ID")}
              for g in groups.elem.iterfind("GROUP")}
    if not any(admins.values()):
        return set()
    try:
        oned = Oned(timeout=call.deadline.cap(call.settings.float("ONED_TIMEOUT", 10),
                                              "asking oned"))
        users = parse_xml(oned.call("one.userpool.info", oned.session), what="oned's users",
                          root="USER_POOL")
    except DriverError as exc:
        log.info(f"cannot list OpenNebula's users ({exc}): group admin rights as mapped")
        return set()
    uid = next((u.findtext("ID") for u in users.iterfind("USER")
                if u.findtext("NAME") == username), None)
    return {gid for gid, ids in admins.items() if uid is not None and uid in ids}
