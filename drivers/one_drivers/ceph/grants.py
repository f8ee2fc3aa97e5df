"""Grants: one image source a driver hands to oned for one image (a backup to restore).

An ``rbd://`` PATH is a tenant's text. Only the oneadmin group may import from any pool the
datastore allows; anyone else needs a grant the driver itself wrote into the image's template
(``RBD_SOURCE_GRANT``): an HMAC, with a key only the driver's user can read, of the exact source,
the image's name and an expiry. A user cannot forge one, and one seen in a restored image's
template is good for that source only, for that image name, for a day.

The key is ``~/.one-drivers/grant.key`` of the driver's user (ONE_DRIVERS_GRANT_KEY overrides):
made on first use, 0600 in a 0700 directory, read without following a symlink and refused
unless it is the user's own and private.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time

from one_drivers.core.errors import PermissionDenied

TTL = 86400
_ENV = "ONE_DRIVERS_GRANT_KEY"


def _key_path() -> str:
    return os.environ.get(_ENV) or os.path.expanduser("~/.one-drivers/grant.key")


def _key() -> bytes:
    path = _key_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PermissionDenied(f"cannot read the grant key {path} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise PermissionDenied(f"the grant key {path} is not this user's private file",
                                   hint="it must be a regular file, mode 0600, of the driver's "
                                        "user")
        key = fh.read(64)
    if len(key) < 32:
        raise PermissionDenied(f"the grant key {path} is too short")
    return key


def _mac(key: bytes, source: str, name: str, expires: int) -> str:
    msg = f"{source}\n{name}\n{expires}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def grant(source: str, name: str, *, ttl: int = TTL) -> str:
    expires = int(time.time()) + ttl
    return f"{expires}.{_mac(_key(), source, name, expires)}"


def valid(token: str | None, source: str, name: str) -> bool:
    if not token or "." not in token:
        return False
    expires_s, mac = token.split(".", 1)
    if not expires_s.isdigit() or int(expires_s) < time.time():
        return False
    return hmac.compare_digest(mac, _mac(_key(), source, name, int(expires_s)))
