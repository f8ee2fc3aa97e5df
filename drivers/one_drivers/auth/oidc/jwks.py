"""The identity provider's signing keys: its discovery document names ``jwks_uri``; the key set
is cached on disk in a directory only the driver's user may use (a planted key set would let
anyone sign tokens) and fetched again only for a key id it does not hold, at most every
``min_refresh`` seconds. With the keys cached, logins need no IdP at all."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.parse
from typing import Any

from one_drivers.core.errors import ActionFailed, BackendUnavailable, PermissionDenied
from one_drivers.core.retry import Deadline

LIMIT = 1 << 20  # bytes of a discovery document or key set


class KeySource:
    def __init__(self, issuer: str, folder: str, *, ca_file: str | None, timeout: float,
                 min_refresh: float, deadline: Deadline) -> None:
        if urllib.parse.urlsplit(issuer).scheme != "https":
            raise ActionFailed(f"the issuer {issuer!r} is not an https:// URL",
                               hint="set ISSUER to the identity provider's https issuer")
        self.issuer = issuer.rstrip("/")
        self.folder = os.path.expanduser(folder)
        self.cache = os.path.join(
            self.folder, f"jwks-{hashlib.sha256(self.issuer.encode()).hexdigest()[:16]}.json")
        self.ca_file, self.timeout, self.deadline = ca_file, timeout, deadline
        self.min_refresh = min_refresh

    def key(self, kid: str | None) -> dict[str, Any]:
        """The JWK for ``kid`` (the only key when the token names none)."""
        cached = self._load()
        found = _pick(cached.get("keys", []), kid)
        if found is not None:
            return found
        if time.time() - float(cached.get("fetched", 0)) < self.min_refresh:
            raise PermissionDenied(f"the token's signing key {kid!r} is not the issuer's "
                                   "(its keys were fetched moments ago)")
        fresh = self._fetch()
        found = _pick(fresh["keys"], kid)
        if found is None:
            raise PermissionDenied(f"the token's signing key {kid!r} is not the issuer's")
        return found

    def _load(self) -> dict[str, Any]:
        from one_drivers.core.safefs import Untrusted, read_trusted_file

        try:
            data = read_trusted_file(self.cache, uid=os.geteuid())
            loaded = json.loads(data) if data else {}
        except (OSError, ValueError, Untrusted):
            return {}
        return loaded if isinstance(loaded, dict) and loaded.get("issuer") == self.issuer \
            else {}

    def _fetch(self) -> dict[str, Any]:
        from one_drivers.core.atomic import write_atomic
        from one_drivers.core.safefs import open_trusted_dir

        discovery = self._get(f"{self.issuer}/.well-known/openid-configuration")
        if discovery.get("issuer", "").rstrip("/") != self.issuer:
            raise PermissionDenied(f"the discovery document names issuer "
                                   f"{discovery.get('issuer')!r}, not {self.issuer!r}")
        jwks_uri = str(discovery.get("jwks_uri") or "")
        if urllib.parse.urlsplit(jwks_uri).scheme != "https":
            raise PermissionDenied(f"the issuer's jwks_uri {jwks_uri!r} is not https")
        keys = self._get(jwks_uri).get("keys")
        if not isinstance(keys, list):
            raise PermissionDenied(f"{jwks_uri} holds no key set")
        record = {"issuer": self.issuer, "fetched": time.time(), "keys": keys}
        os.makedirs(os.path.dirname(self.folder), mode=0o700, exist_ok=True)
        os.close(open_trusted_dir(self.folder, create_mode=0o700, private=True))
        write_atomic(self.cache, json.dumps(record), mode=0o600, private=True)
        return record

    def _get(self, url: str) -> dict[str, Any]:
        import ssl
        import urllib.error
        import urllib.request

        from one_drivers.datastore.rbd.sources import DeadlineReader

        context = ssl.create_default_context(cafile=self.ca_file or None)
        timeout = self.deadline.cap(self.timeout, "asking the identity provider")
        try:
            answer = urllib.request.urlopen(url, timeout=timeout, context=context)  # noqa: S310 - https only
            # a body that trickles still ends at the login's deadline
            reader = DeadlineReader(answer, self.deadline, url)
            try:
                data = reader.read(LIMIT + 1)
            finally:
                reader.close()
        except urllib.error.HTTPError as exc:
            raise BackendUnavailable(f"the identity provider answered HTTP {exc.code} for "
                                     f"{url}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach the identity provider at {url} "
                                     f"({getattr(exc, 'reason', exc)})",
                                     hint="its keys are fetched once and cached; check the "
                                          "network and CA_FILE") from None
        if len(data) > LIMIT:
            raise PermissionDenied(f"{url} answered more than {LIMIT} bytes")
        try:
            loaded = json.loads(data)
        except ValueError:
            raise PermissionDenied(f"{url} did not answer JSON") from None
        if not isinstance(loaded, dict):
            raise PermissionDenied(f"{url} did not answer a JSON object")
        return loaded


def _pick(keys: list[Any], kid: str | None) -> dict[str, Any] | None:
    signing = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    if kid is None:
        return signing[0] if len(signing) == 1 else None
    return next((k for k in signing if k.get("kid") == kid), None)
