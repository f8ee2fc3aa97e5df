"""A signing OpenID issuer built for the tests (no OpenID provider runs in the lab): https with
its own CA, a discovery document, a JWKS (RSA and EC keys, rotatable), the device
authorization and token endpoints of RFC 8628, and tokens signed with PyJWT. It counts the key
set fetches, so tests can see the driver's cache and its rate limit at work."""

from __future__ import annotations

import datetime
import http.server
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

CLIENT = "opennebula"


def _cert(directory: Path) -> tuple[Path, Path, Path]:
    import ipaddress

    now = datetime.datetime.now(datetime.UTC)
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test IdP CA"))
          .issuer_name(name("test IdP CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "idp.pem", directory / "idp.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Issuer:
    def __init__(self, directory: Path) -> None:
        self.ca, cert, key = _cert(directory)
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.algs: dict[str, str] = {}
        self.add_key("rsa-1", "RS256")
        self.add_key("ec-1", "ES256")
        self.jwks_fetches = 0
        self.devices: dict[str, dict[str, Any]] = {}  # device code -> state
        handler = self._handler()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_key(self, kid: str, alg: str) -> None:
        rsa_key = alg.startswith(("RS", "PS"))
        self.keys[kid] = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                          if rsa_key else ec.generate_private_key(ec.SECP256R1()))
        self.algs[kid] = alg

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[self.algs[kid]]
                             .to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "use": "sig", "alg": self.algs[kid]})
        return {"keys": out}

    def token(self, user: str = "alice", *, kid: str = "rsa-1", groups: Any = ("devs",),
              key: Any = None, alg: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": CLIENT, "sub": f"id-{user}", "iat": now,
                "exp": now + 300, "preferred_username": user, "groups": list(groups),
                **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None},
                          key if key is not None else self.keys[kid],
                          algorithm=alg or self.algs[kid], headers={"kid": kid})

    def approve(self, user_code: str, user: str = "alice") -> None:
        for state in self.devices.values():
            if state["user_code"] == user_code:
                state["user"] = user

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                                     "device_authorization_endpoint": f"{issuer.url}/device",
                                     "token_endpoint": f"{issuer.url}/token"})
                elif self.path == "/jwks":
                    issuer.jwks_fetches += 1
                    self._json(200, issuer.jwks())
                else:
                    self._json(404, {})

            def do_POST(self) -> None:
                form = dict(urllib.parse.parse_qsl(
                    self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()))
                if self.path == "/device" and form.get("client_id") == CLIENT:
                    code = secrets.token_urlsafe(16)
                    issuer.devices[code] = {"user_code": secrets.token_hex(4).upper(),
                                            "user": None}
                    self._json(200, {"device_code": code,
                                     "user_code": issuer.devices[code]["user_code"],
                                     "verification_uri": f"{issuer.url}/verify",
                                     "expires_in": 60, "interval": 0.2})
                elif self.path == "/token":
                    state = issuer.devices.get(form.get("device_code", ""))
                    if state is None:
                        self._json(400, {"error": "expired_token"})
                    elif state["user"] is None:
                        self._json(400, {"error": "authorization_pending"})
                    else:
                        self._json(200, {"id_token": issuer.token(state["user"]),
                                         "access_token": "opaque", "token_type": "Bearer"})
                else:
                    self._json(400, {"error": "invalid_request"})

        return Handler
