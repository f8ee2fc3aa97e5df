"""LemonLDAP::NG (Debian's) as the lab's OpenID Connect identity provider, for the ``oidc``
auth driver: a real IdP signing real ID tokens (RS256, its own key, published in its JWKS),
over https with a certificate from the lab's own CA.

Its portal is a PSGI application; Plack's server runs it on loopback (no web server needed).
Users come from its ``Demo`` backend (password = login): ``dwho`` (groups users, timelords),
``rtyler`` and ``msmith`` (users, earthlings). Relying parties: ``opennebula`` (the client
OpenNebula is registered as) and ``other`` (another application, whose tokens OpenNebula must
refuse); both may use the password grant, which is how tests obtain tokens without a browser.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from one_drivers.lab.proc import LabError, alive, read_pid, spawn, stop, wait_for
from one_drivers.lab.tls import make_ca_and_server

IDP_PORT = 14443
SHIPPED_CONF = Path("/var/lib/lemonldap-ng/conf/lmConf-1.json")  # the Demo set-up Debian ships
PSGI = Path("/usr/share/lemonldap-ng/portal/htdocs/index.psgi")
CLIENTS = {"opennebula": "one-lab-oidc-secret", "other": "other-app-secret"}


class LemonldapLab:
    def __init__(self, root: Path, port_offset: int = 0) -> None:
        self.dir = root / "idp"
        self.port = IDP_PORT + port_offset
        self.pidfile = self.dir / "plackup.pid"
        self.ca = self.dir / "ca.pem"

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"ONE_LAB_IDP_ISSUER": self.issuer, "ONE_LAB_IDP_CA": str(self.ca),
                "ONE_LAB_IDP_CLIENT_ID": "opennebula",
                "ONE_LAB_IDP_CLIENT_SECRET": CLIENTS["opennebula"],
                "ONE_LAB_IDP_OTHER_CLIENT_ID": "other",
                "ONE_LAB_IDP_OTHER_CLIENT_SECRET": CLIENTS["other"],
                "ONE_LAB_IDP_PID": str(self.pidfile)}

    def running(self) -> bool:
        return alive(read_pid(self.pidfile))

    def healthy(self) -> bool:
        if not self.running() or not self.ca.exists():
            return False
        try:
            context = ssl.create_default_context(cafile=str(self.ca))
            with urllib.request.urlopen(  # noqa: S310 - https to our own loopback IdP
                    f"{self.issuer}/.well-known/openid-configuration", timeout=5,
                    context=context) as answer:
                return bool(json.load(answer).get("issuer") == self.issuer)
        except (OSError, ValueError):
            return False

    def up(self) -> None:
        self.down()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for sub in ("conf", "sessions/lock", "psessions/lock", "cache", "notifications"):
            (self.dir / sub).mkdir(parents=True)
        self.dir.chmod(0o700)
        make_ca_and_server(self.ca, self.dir / "server.pem", self.dir / "server.key")
        (self.dir / "conf" / "lmConf-1.json").write_text(json.dumps(self._conf(), indent=1))
        ini = self.dir / "lemonldap-ng.ini"
        ini.write_text(f"[all]\nlogLevel = warn\n[configuration]\ntype = File\n"
                       f"dirName = {self.dir / 'conf'}\n[portal]\nstaticPrefix = /static\n"
                       "templateDir = /usr/share/lemonldap-ng/portal/templates\n"
                       "languages = en\n")
        with socket.socket() as probe:  # a clear line rather than a silent bind failure
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise LabError(f"port {self.port} is taken: the IdP cannot listen there")
        spawn(["plackup", "-s", "HTTP::Server::PSGI", "--enable-ssl",
               "--ssl-key-file", str(self.dir / "server.key"),
               "--ssl-cert-file", str(self.dir / "server.pem"),
               "-o", "127.0.0.1", "-p", str(self.port), str(PSGI)],
              log=self.dir / "portal.log", pidfile=self.pidfile,
              env={"PATH": "/usr/bin:/bin", "LLNG_DEFAULTCONFFILE": str(ini)})

        def serving() -> bool:
            if not self.running():
                raise LabError(f"the IdP exited; see {self.dir}/portal.log")
            return self.healthy()

        wait_for(serving, timeout=60, what="the IdP (LemonLDAP::NG) to serve its discovery "
                 "document", interval=0.2)

    def down(self) -> list[str]:
        return ["idp"] if stop(self.pidfile) else []

    def _conf(self) -> dict[str, Any]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        if not SHIPPED_CONF.exists():
            raise LabError(f"{SHIPPED_CONF} is missing: install liblemonldap-ng-portal-perl "
                           "(make deps)")
        conf: dict[str, Any] = json.loads(SHIPPED_CONF.read_text())
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        for option in ("globalStorageOptions", "persistentStorageOptions"):
            where = self.dir / ("sessions" if option.startswith("global") else "psessions")
            conf[option] = {**conf.get(option, {}), "Directory": str(where),
                            "LockDirectory": str(where / "lock")}
        conf["localSessionStorageOptions"] = {**conf.get("localSessionStorageOptions", {}),
                                              "cache_root": str(self.dir / "cache")}
        conf["notificationStorageOptions"] = {"dirName": str(self.dir / "notifications")}
        rp_options = {
            client: {"oidcRPMetaDataOptionsClientID": client,
                     "oidcRPMetaDataOptionsClientSecret": secret,
                     "oidcRPMetaDataOptionsAllowPasswordGrant": 1,
                     "oidcRPMetaDataOptionsIDTokenForceClaims": 1,
                     "oidcRPMetaDataOptionsIDTokenSignAlg": "RS256",
                     "oidcRPMetaDataOptionsBypassConsent": 1,
                     "oidcRPMetaDataOptionsRedirectUris": f"https://127.0.0.1/{client}/cb"}
            for client, secret in CLIENTS.items()}
        claims = {"preferred_username": "uid", "name": "cn", "email": "mail",
                  "groups": "groups"}
        conf.update({
            "cfgNum": 1, "portal": f"{self.issuer}/", "domain": "127.0.0.1",
            # no self-registration (it would need a mail server), no notifications
            "registerDB": "Null", "notification": 0, "issuerDBOpenIDConnectActivation": 1,
            "oidcServiceMetaDataIssuer": self.issuer,
            "oidcServicePrivateKeySig": private, "oidcServicePublicKeySig": public,
            "oidcServiceKeyIdSig": "one-lab-1",
            "oidcRPMetaDataOptions": rp_options,
            "oidcRPMetaDataExportedVars": {client: claims for client in CLIENTS},
        })
        return conf
