"""``auth/oidc/authenticate`` through the installed remotes (as one_auth_mad runs it) against a
signing issuer built for the tests (``tests/oidc_issuer.py``: https, discovery, JWKS, device
flow), and ``one-drivers auth oidc-login``: what a real IdP will not produce on demand (forged
and malformed tokens, key rotation, ES256 keys, an IdP gone away, the device flow, which the
lab's LemonLDAP::NG 2.16 does not offer). The real IdP's own tokens: test_auth_oidc_idp.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import last_line, oidc_authenticate
from tests.oidc_issuer import CLIENT, Issuer


@pytest.fixture
def idp(tmp_path):
    issuer = Issuer(tmp_path)
    yield issuer
    issuer.close()


@pytest.fixture
def login(idp, remotes, tmp_path):
    mapping = tmp_path / "groups.json"
    mapping.write_text(json.dumps({"devs": "101", "ops-admins": "*102"}))
    def run(token: str, user: str = "alice", **settings: str):
        return oidc_authenticate(remotes, {
            "ISSUER": idp.url, "AUDIENCE": CLIENT, "CA_FILE": str(idp.ca),
            "GROUP_MAPPING": str(mapping), "JWKS_DIR": str(tmp_path / "jwks"),
            "JWKS_MIN_REFRESH": "60", **settings}, token, user)

    return run


def test_a_valid_token_signs_on_with_mapped_groups(idp, login):
    res = login(idp.token(groups=["devs", "unmapped", "ops-admins"]))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["oidc", "alice", "-", "101", "*102"]
    res = login(idp.token(kid="ec-1"))  # ES256
    assert res.returncode == 0 and res.stdout.split() == ["oidc", "alice", "-", "101"]
    res = login(idp.token(groups=[]), DEFAULT_GROUP="1")
    assert res.stdout.split() == ["oidc", "alice", "-", "1"], "no mapped group: the default"
    assert idp.jwks_fetches == 1, "the key set was fetched once, then read from the cache"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _forged(header: dict, claims: dict, secret: bytes | None) -> str:
    """A token made by hand: unsigned (``alg`` none), or HMAC-signed with ``secret``."""
    import hashlib
    import hmac

    body = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(claims).encode())
    signature = _b64(hmac.new(secret, body, hashlib.sha256).digest()) if secret else b""
    return (body + b"." + signature).decode()


def test_refused_tokens(idp, login):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    now = int(time.time())
    unknown_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = idp.keys["rsa-1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": idp.url, "aud": CLIENT, "exp": now + 60, "preferred_username": "alice"}
    cases = {
        "has expired": idp.token(exp=now - 3600, iat=now - 7200),
        "not valid yet": idp.token(nbf=now + 3600),
        "is not for": idp.token(aud="someone-else"),
        "was not issued by": idp.token(iss="https://evil.example"),
        "signature is wrong": idp.token(key=unknown_key),  # the issuer's key id, not its key
        "algorithm 'none' is not accepted": _forged({"alg": "none", "kid": "rsa-1"}, claims,
                                                    None),
        # the issuer's public key used as an HMAC secret: the classic algorithm confusion
        "algorithm 'HS256' is not accepted": _forged({"alg": "HS256", "kid": "rsa-1"}, claims,
                                                     public_pem),
        "not 'bob'": idp.token(user="alice"),
        "no usable user name": idp.token(preferred_username=None),
    }
    for expected, token in cases.items():
        res = login(token, user="bob" if expected == "not 'bob'" else "alice")
        assert res.returncode == 5, (expected, res.stderr)
        assert expected in last_line(res.stderr), (expected, res.stderr)
    res = login("not a token")
    assert res.returncode == 3 and "not a JWT" in last_line(res.stderr)
    res = login("   ")
    assert res.returncode == 5 and "no token" in last_line(res.stderr)


def test_keys_rotate_and_the_idp_is_not_needed_once_they_are_cached(idp, login):
    assert login(idp.token()).returncode == 0
    assert idp.jwks_fetches == 1
    idp.add_key("rsa-2", "RS256")  # the IdP rotates: a new key id
    res = login(idp.token(kid="rsa-2"), JWKS_MIN_REFRESH="0")
    assert res.returncode == 0, res.stderr
    assert idp.jwks_fetches == 2, "an unknown key id fetched the key set again"
    idp.add_key("rsa-3", "RS256")
    res = login(idp.token(kid="rsa-3"))  # JWKS_MIN_REFRESH 60: no new fetch so soon
    assert res.returncode == 5 and "fetched moments ago" in last_line(res.stderr)
    assert idp.jwks_fetches == 2, "a token naming unknown keys cannot make us hammer the IdP"
    token = idp.token(kid="rsa-2")
    idp.close()  # the IdP goes away: cached keys still sign users on
    res = login(token)
    assert res.returncode == 0, res.stderr
    res = login(idp.token(kid="rsa-3"), JWKS_MIN_REFRESH="0")
    assert res.returncode == 4 and "cannot reach the identity provider" in last_line(res.stderr)


def test_device_flow_writes_one_auth_and_its_token_signs_on(idp, login, tmp_path):
    one_auth = tmp_path / "one" / "one_auth"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "one-drivers"), "auth",
                             "oidc-login", "--issuer", idp.url, "--client-id", CLIENT,
                             "--ca-file", str(idp.ca), "--one-auth", str(one_auth)],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    prompt = proc.stderr.readline()
    assert "enter the code" in prompt, prompt
    code = prompt.split()[-1]
    threading.Timer(0, idp.approve, args=(code, "alice")).start()  # the user, in a browser
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, rest
    assert oct(one_auth.stat().st_mode & 0o777) == "0o600"
    name, token = one_auth.read_text().strip().split(":", 1)
    assert name == "alice"
    res = login(token)
    assert res.returncode == 0 and res.stdout.split()[:2] == ["oidc", "alice"], res.stderr
    os.unlink(one_auth)
