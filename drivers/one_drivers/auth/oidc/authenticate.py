"""``auth/oidc/authenticate``: stdin ``<AUTHN><USERNAME/><PASSWORD/><SECRET/></AUTHN>``, SECRET the
identity provider's JWT; answer ``oidc <user> - [gid|*gid ...]`` (the first gid primary)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from one_drivers.auth.oidc import jose
from one_drivers.auth.oidc.jwks import KeySource
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BadInput, PermissionDenied


def authenticate(call: Call) -> str:
    settings = call.settings
    username: str = call.doc.username
    token = call.doc.secret.strip()
    if not token:
        raise PermissionDenied("no token: log in with the identity provider's token")
    claims = verify(token, settings, call)
    name = claims.get(settings.get("USERNAME_CLAIM") or "preferred_username")
    if not isinstance(name, str) or not name or len(name) > 128 or \
            any(c.isspace() or ord(c) < 32 for c in name):
        raise PermissionDenied("the token carries no usable user name "
                               f"({settings.get('USERNAME_CLAIM')})")
    if username and username != name:
        raise PermissionDenied(f"the token names the user {name!r}, not {username!r}")
    gids = groups(claims, settings)
    return " ".join(["oidc", urllib.parse.quote(name, safe=""), "-", *gids])


def verify(token: str, settings: Settings, call: Call) -> dict[str, Any]:
    issuer = settings.get("ISSUER") or ""
    audience = settings.get("AUDIENCE") or ""
    if not issuer or not audience:
        raise ActionFailed("the oidc driver needs ISSUER and AUDIENCE",
                           hint="set them in the driver's configuration (oidc.conf)")
    allowed = [a for a in (settings.get("ALGORITHMS") or "RS256").split()
               if a in jose.ALGORITHMS]  # never none or HS*: not in the table
    header, claims, signed, signature = jose.split(token)
    alg = header.get("alg")
    if alg not in allowed:
        raise PermissionDenied(f"the token's algorithm {alg!r} is not accepted "
                               f"(ALGORITHMS: {' '.join(allowed)})")
    keys = KeySource(issuer, settings.get("JWKS_DIR") or "~/.one-drivers/auth",
                     ca_file=settings.get("CA_FILE"),
                     timeout=settings.float("IDP_TIMEOUT", 5),
                     min_refresh=settings.float("JWKS_MIN_REFRESH", 60), deadline=call.deadline)
    kid = header.get("kid")
    jwk = keys.key(kid if isinstance(kid, str) else None)
    if jwk.get("alg") not in (None, alg):
        raise PermissionDenied(f"the key {kid!r} is for {jwk.get('alg')}, the token says {alg}")
    if not jose.signature_ok(alg, jose.public_key(jwk, alg), signed, signature):
        raise PermissionDenied("the token's signature is wrong")
    jose.check_claims(claims, issuer=issuer, audience=audience,
                      leeway=settings.float("LEEWAY", 60))
    return claims


def groups(claims: dict[str, Any], settings: Settings) -> list[str]:
    """The user's OpenNebula groups: each IdP group in GROUP_MAPPING, in the token's order;
    DEFAULT_GROUP when none is mapped."""
    listed = claims.get(settings.get("GROUPS_CLAIM") or "groups") or []
    if isinstance(listed, str):
        listed = [listed]
    mapping = _mapping(settings.get("GROUP_MAPPING"))
    out: list[str] = []
    for group in listed if isinstance(listed, list) else []:
        gid = mapping.get(str(group))
        if gid and gid not in out and gid.lstrip("*") not in {g.lstrip("*") for g in out}:
            out.append(gid)
    if not out and settings.get("DEFAULT_GROUP"):
        out = [str(settings.get("DEFAULT_GROUP"))]
    return out


def _mapping(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1 << 20)
    except OSError as exc:
        raise ActionFailed(f"cannot read GROUP_MAPPING {path} ({exc.strerror})") from None
    try:
        loaded = json.loads(text) if path.endswith(".json") else _yaml(text)
    except ValueError as exc:  # _yaml turns YAML errors into ValueError
        raise BadInput(f"GROUP_MAPPING {path} cannot be read ({exc})") from None
    if not isinstance(loaded, dict):
        raise BadInput(f"GROUP_MAPPING {path} is not a mapping of groups to ids")
    out = {}
    for group, gid in loaded.items():
        text_gid = str(gid)
        if not text_gid.lstrip("*").isdigit():
            raise BadInput(f"GROUP_MAPPING {path}: {group!r} maps to {gid!r}, not a group id")
        out[str(group)] = text_gid
    return out


def _yaml(text: str) -> Any:
    import yaml  # only for a YAML mapping file: its import costs more than the login

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(exc.__class__.__name__) from None
