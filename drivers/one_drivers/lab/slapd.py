"""OpenLDAP's slapd (Debian's) on loopback, for the ``ldap`` auth driver: a directory with
people, nested groups (RFC 2307bis ``groupOfNames`` with ``member`` DNs, one group inside
another), a POSIX group (``memberUid``), a read-only bind user, and TLS (``ldaps://`` and
StartTLS) with a certificate from the lab's own CA.

Users (password = ``<name>-pw``): alice (devs, and through devs ops; legacy by memberUid),
bob (cloud-admins), carol (no group), ``d*vid`` (a name with a filter metacharacter).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from one_drivers.lab.proc import LabError, alive, read_pid, run, spawn, stop, wait_for
from one_drivers.lab.tls import make_ca_and_server

LDAP_PORT, LDAPS_PORT = 13890, 13636
BASE = "dc=one,dc=lab"
BIND_DN, BIND_PW = f"cn=reader,{BASE}", "reader-pw"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
PEOPLE = ("alice", "bob", "carol", "d*vid")


def ldif() -> str:
    people = "".join(
        f"dn: uid={u},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\n"
        f"sn: {u}\nuserPassword: {u}-pw\n\n" for u in PEOPLE)

    def group(cn: str, *members: str) -> str:
        return (f"dn: cn={cn},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {cn}\n"
                + "".join(f"member: {m}\n" for m in members) + "\n")

    return (
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: one\no: lab\n\n"
        f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n"
        f"dn: {BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {BIND_PW}\n\n"
        + people
        + group("devs", f"uid=alice,ou=people,{BASE}")
        + group("ops", f"cn=devs,ou=groups,{BASE}")  # nested: devs are ops
        + group("cloud-admins", f"uid=bob,ou=people,{BASE}")
        + group("nobody", f"cn=reader,{BASE}")
        + f"dn: cn=legacy,ou=groups,{BASE}\nobjectClass: posixGroup\ncn: legacy\n"
          "gidNumber: 5000\nmemberUid: alice\n\n")


class SlapdLab:
    def __init__(self, root: Path, port_offset: int = 0) -> None:
        self.dir = root / "slapd"
        self.port, self.tls_port = LDAP_PORT + port_offset, LDAPS_PORT + port_offset
        self.pidfile = self.dir / "slapd.pid"
        self.ca = self.dir / "ca.pem"

    def env(self) -> dict[str, str]:
        return {"ONE_LAB_LDAP_URI": f"ldap://127.0.0.1:{self.port}",
                "ONE_LAB_LDAPS_URI": f"ldaps://127.0.0.1:{self.tls_port}",
                "ONE_LAB_LDAP_CA": str(self.ca), "ONE_LAB_LDAP_BASE": BASE,
                "ONE_LAB_LDAP_BIND_DN": BIND_DN, "ONE_LAB_LDAP_BIND_PW": BIND_PW,
                "ONE_LAB_LDAP_PID": str(self.pidfile)}

    def running(self) -> bool:
        return alive(read_pid(self.pidfile))

    def healthy(self) -> bool:
        if not self.running():
            return False
        for port in (self.port, self.tls_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    def up(self) -> None:
        self.down()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "db").mkdir(parents=True)
        self._certificates()
        conf = self.dir / "slapd.conf"
        includes = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS)
        conf.write_text(
            f"{includes}pidfile {self.pidfile}\nargsfile {self.dir}/slapd.args\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"TLSCACertificateFile {self.ca}\nTLSCertificateFile {self.dir}/server.pem\n"
            f"TLSCertificateKeyFile {self.dir}/server.key\n"
            "database mdb\nmaxsize 16777216\n"
            f"suffix \"{BASE}\"\nrootdn \"cn=admin,{BASE}\"\nrootpw admin-pw\n"
            f"directory {self.dir}/db\nindex objectClass,member,memberUid,uid eq\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by * read\n")
        (self.dir / "base.ldif").write_text(ldif())
        run(["slapadd", "-f", str(conf), "-l", str(self.dir / "base.ldif")], timeout=60)
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"
        spawn(["slapd", "-f", str(conf), "-h", urls, "-d", "0"], log=self.dir / "slapd.log",
              pidfile=None)

        def serving() -> bool:
            if self.pidfile.exists() and not self.running():
                raise LabError(f"slapd exited; see {self.dir}/slapd.log")
            return self.healthy()

        wait_for(serving, timeout=20, what="slapd", interval=0.05)

    def down(self) -> list[str]:
        return ["slapd"] if stop(self.pidfile) else []

    def _certificates(self) -> None:
        make_ca_and_server(self.ca, self.dir / "server.pem", self.dir / "server.key")
