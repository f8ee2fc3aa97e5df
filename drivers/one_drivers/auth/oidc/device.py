"""``one-drivers auth oidc-login``: a token from the identity provider by the OAuth 2.0 device
authorization flow (RFC 8628), written to ONE_AUTH as ``<user>:<token>`` (mode 0600), so the
CLI and the API sign on with the same identity as Sunstone.

The user opens the verification URL the IdP gives, enters the code, and this command polls the
token endpoint at the interval the IdP asks (slowing down when told) until the token comes or
the code expires. The ID token is written when the IdP issues one (its audience is the client,
OpenNebula's AUDIENCE), else the access token.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from one_drivers.core.errors import ActionFailed, BackendUnavailable, PermissionDenied

GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _request(url: str, context: ssl.SSLContext, timeout: float,
             form: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    if urllib.parse.urlsplit(url).scheme != "https":
        raise ActionFailed(f"{url} is not https")
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})  # noqa: S310 - https only
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:  # noqa: S310 - https only
            return answer.status, json.loads(answer.read(1 << 20) or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read(1 << 16) or b"{}")
        except ValueError:
            body = {}
        return exc.code, body if isinstance(body, dict) else {}
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise BackendUnavailable(f"cannot reach the identity provider at {url} "
                                 f"({getattr(exc, 'reason', exc)})") from None


def login(issuer: str, client_id: str, *, scope: str = "openid profile groups",
          ca_file: str | None = None, username_claim: str = "preferred_username",
          timeout: float = 10, show: Callable[[str], None] = print,
          max_wait: float = 600) -> tuple[str, str]:
    """The user name and token, once the user approved the login at the IdP."""
    context = ssl.create_default_context(cafile=ca_file or None)
    _, discovery = _request(f"{issuer.rstrip('/')}/.well-known/openid-configuration",
                            context, timeout)
    device_url = discovery.get("device_authorization_endpoint")
    token_url = discovery.get("token_endpoint")
    if not device_url or not token_url:
        raise ActionFailed("the identity provider offers no device authorization flow",
                           hint="enable it for this client at the IdP")
    status, grant = _request(device_url, context, timeout,
                             {"client_id": client_id, "scope": scope})
    if status != 200 or "device_code" not in grant:
        raise PermissionDenied(f"the identity provider refused the login ({status}: "
                               f"{grant.get('error', '?')})")
    show(f"open {grant.get('verification_uri_complete') or grant.get('verification_uri')} "
         f"and enter the code {grant.get('user_code')}")
    interval = float(grant.get("interval", 5))
    end = time.monotonic() + min(float(grant.get("expires_in", 600)), max_wait)
    while time.monotonic() < end:
        time.sleep(interval)
        status, answer = _request(token_url, context, timeout,
                                  {"grant_type": GRANT, "device_code": grant["device_code"],
                                   "client_id": client_id})
        if status == 200:
            token = answer.get("id_token") or answer.get("access_token")
            if not token:
                raise PermissionDenied("the identity provider answered no token")
            name = _claims(token).get(username_claim)
            if not isinstance(name, str) or not name:
                raise PermissionDenied(f"the token carries no {username_claim}")
            return name, token
        error = answer.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        raise PermissionDenied(f"the login was not approved ({error or status})")
    raise PermissionDenied("the code expired before the login was approved")


def _claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified: only to name the user in ONE_AUTH (oned's driver
    verifies the token at every login)."""
    try:
        payload = token.split(".")[1]
        loaded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise PermissionDenied("the identity provider's token is not a JWT") from None
    return loaded if isinstance(loaded, dict) else {}


def write_one_auth(path: str, name: str, token: str) -> None:
    from one_drivers.core.atomic import write_atomic

    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    write_atomic(path, f"{name}:{token}\n", mode=0o600)
