"""Upstream's ``ldap_auth.conf``, read as it is (an operator switches drivers by changing the
name): YAML whose keys are Ruby symbols (``:host:``), servers by name, ``:order:`` (a list of
server names and of availability groups, lists of names) or ``:match_user_regex:``.

Keys read per server: ``host``, ``port``, ``user``/``password`` (the search bind; anonymous
without), ``base``, ``group`` (members only), ``user_field`` (default ``cn``), ``group_field``
(``member``), ``user_group_field`` (``dn``), ``encryption`` (``simple_tls`` or ``start_tls``),
``timeout`` (15 s), ``mapping_generate``/``mapping_timeout``/``mapping_filename``/
``mapping_key``/``mapping_default``, ``rfc2307bis`` (true), ``group_admin_group_dn``; and ours:
``ca_cert`` (a CA file for TLS; the system's otherwise), ``verify_cert`` (true; false only by
choice), ``nested_groups`` (``recursive``, the default; ``in_chain`` for Active Directory's
matching rule; ``none``), ``nested_depth`` (8).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from one_drivers.core.errors import BadInput


class Server(NamedTuple):
    name: str
    host: str
    port: int
    bind_dn: str | None
    bind_password: str | None
    base: str
    group: str | None
    user_field: str
    group_field: str
    user_group_field: str
    encryption: str | None  # simple_tls | start_tls
    ca_cert: str | None
    verify_cert: bool
    timeout: float
    rfc2307bis: bool
    nested: str  # recursive | in_chain | none
    nested_depth: int
    admin_group: str | None
    mapping_generate: bool
    mapping_timeout: float
    mapping_file: str
    mapping_key: str
    mapping_default: str | None


class Config(NamedTuple):
    servers: dict[str, Server]
    order: list[list[str]]  # entries; each an availability group (one name alone: a group of 1)
    match: list[tuple[re.Pattern[str], list[str]]]

    def chain(self, username: str) -> list[list[str]]:
        """The servers to ask for ``username``: ``match_user_regex`` first match, else order."""
        for pattern, names in self.match:
            if pattern.search(username):
                return [[n] for n in names]
        return self.order


def _plain(value: Any) -> Any:
    """Ruby symbols (``:simple``) as plain words; nested lists and dicts as they come."""
    if isinstance(value, str) and value.startswith(":"):
        return value[1:]
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "yes", "1")


def _server(name: str, raw: dict[str, Any]) -> Server:
    if not raw.get("host"):
        raise BadInput(f"LDAP server {name!r} has no :host:")
    encryption = raw.get("encryption")
    if encryption not in (None, "simple_tls", "start_tls"):
        raise BadInput(f"LDAP server {name!r}: :encryption: {encryption!r} is not "
                       "simple_tls or start_tls")
    nested = str(raw.get("nested_groups", "recursive"))
    if nested not in ("recursive", "in_chain", "none"):
        raise BadInput(f"LDAP server {name!r}: :nested_groups: {nested!r} is not recursive, "
                       "in_chain or none")
    default = raw.get("mapping_default")
    return Server(
        name=name, host=str(raw["host"]),
        port=int(raw.get("port") or (636 if encryption == "simple_tls" else 389)),
        bind_dn=raw.get("user"), bind_password=raw.get("password"),
        base=str(raw.get("base") or ""), group=raw.get("group"),
        user_field=str(raw.get("user_field") or "cn"),
        group_field=str(raw.get("group_field") or "member"),
        user_group_field=str(raw.get("user_group_field") or "dn"),
        encryption=encryption, ca_cert=raw.get("ca_cert"),
        verify_cert=_bool(raw.get("verify_cert"), True),
        timeout=float(raw.get("timeout") or 15),
        rfc2307bis=_bool(raw.get("rfc2307bis"), True), nested=nested,
        nested_depth=int(raw.get("nested_depth") or 8),
        admin_group=raw.get("group_admin_group_dn"),
        mapping_generate=_bool(raw.get("mapping_generate"), True),
        mapping_timeout=float(raw.get("mapping_timeout") or 300),
        mapping_file=str(raw.get("mapping_filename") or f"{name}.yaml"),
        mapping_key=str(raw.get("mapping_key") or "GROUP_DN"),
        mapping_default=None if default is None else str(default))


def load_yaml(text: str, path: str = "ldap_auth.conf") -> dict[str, Any]:
    """The file as plain data (symbols as words)."""
    import yaml

    try:
        raw = _plain(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise BadInput(f"{path} is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path} holds no servers")
    return raw


def parse(text: str, path: str = "ldap_auth.conf") -> Config:
    return build(load_yaml(text, path), path)


def build(raw: dict[str, Any], path: str = "ldap_auth.conf") -> Config:
    if not isinstance(raw, dict):
        raise BadInput(f"{path} holds no servers")
    servers = {name: _server(name, body) for name, body in raw.items()
               if name not in ("order", "match_user_regex") and isinstance(body, dict)}
    order: list[list[str]] = []
    for entry in raw.get("order") or list(servers)[:1]:
        group = [str(n) for n in entry] if isinstance(entry, list) else [str(entry)]
        order.append(group)
    match = [(re.compile(str(rx)), [str(n) for n in (names if isinstance(names, list)
                                                     else [names])])
             for rx, names in (raw.get("match_user_regex") or {}).items()]
    for names in [*order, *(n for _, n in match)]:
        for n in names:
            if n not in servers:
                raise BadInput(f"{path}: :order: names {n!r}, which is not a server there")
    if not order and not match:
        raise BadInput(f"{path} lists no server to ask")
    return Config(servers, order, match)
