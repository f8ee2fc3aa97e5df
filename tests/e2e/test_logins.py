"""Logins through the real oned: a user oned does not know signs in with the lab's LDAP
(DEFAULT_AUTH ldap) and lands in the OpenNebula groups mapped from the directory's (nested)
groups; a user of the oidc driver signs in with a token from the lab's OpenID provider
(LemonLDAP::NG).
oned runs our auth drivers itself (one_auth_mad), as in production."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from tests.e2e.opennebula import OpenNebula
from tests.helpers import id_token

pytestmark = [pytest.mark.lab, pytest.mark.e2e]


def as_user(one: OpenNebula, auth: str, *argv: str) -> subprocess.CompletedProcess[str]:
    path = one.work / "user_auth"
    path.write_text(auth + "\n")
    path.chmod(0o600)
    return subprocess.run(list(argv), env={**one.env, "ONE_AUTH": str(path)},
                          capture_output=True, text=True, timeout=120, check=False)


def test_an_ldap_user_signs_in_into_the_mapped_groups(one: OpenNebula) -> None:
    groups = {}
    for name, dn in (("devs", "cn=devs,ou=groups,dc=one,dc=lab"),
                     ("ops", "cn=ops,ou=groups,dc=one,dc=lab")):
        out = one.run(["onegroup", "create", f"e2e-{name}"])
        groups[name] = out.strip().rsplit(" ", 1)[-1]
        tmpl = one.work / f"group-{name}.tmpl"
        tmpl.write_text(f'GROUP_DN="{dn}"\n')
        one.run(["onegroup", "update", groups[name], str(tmpl), "--append"])
    try:
        wrong = as_user(one, "alice:not-her-password", "oneuser", "show", "-x")
        assert wrong.returncode != 0, "positive control: a wrong password is refused"
        res = as_user(one, "alice:alice-pw", "oneuser", "show", "-x")
        assert res.returncode == 0, res.stderr
        user = ET.fromstring(res.stdout)
        assert user.findtext("NAME") == "alice" and user.findtext("AUTH_DRIVER") == "ldap"
        assert user.findtext("GID") == groups["devs"], "the first mapped group is primary"
        assert {e.text for e in user.iterfind("GROUPS/ID")} >= set(groups.values()), \
            "ops through devs (a nested group)"
    finally:
        one.cli("oneuser", "delete", "alice")
        for gid in groups.values():
            one.cli("onegroup", "delete", gid)


def test_an_oidc_user_signs_in_with_a_token(one: OpenNebula, lab_env: dict[str, str]) -> None:
    """oned runs our oidc driver on a token the lab's LemonLDAP::NG issued."""
    conf = one.location / "var" / "remotes" / "etc" / "auth" / "oidc" / "oidc.conf"
    before = conf.read_text()
    try:
        conf.write_text(before + f"\nISSUER={lab_env['ONE_LAB_IDP_ISSUER']}\n"
                                 f"AUDIENCE={lab_env['ONE_LAB_IDP_CLIENT_ID']}\n"
                                 f"CA_FILE={lab_env['ONE_LAB_IDP_CA']}\nDEFAULT_GROUP=1\n")
        one.run(["oneuser", "create", "rtyler", "unused", "--driver", "oidc"])
        refused = as_user(one, f"rtyler:{id_token(lab_env, 'msmith')}", "oneuser", "show", "-x")
        assert refused.returncode != 0, "msmith's token is not rtyler's"
        res = as_user(one, f"rtyler:{id_token(lab_env, 'rtyler')}", "oneuser", "show", "-x")
        assert res.returncode == 0, res.stderr
        user = ET.fromstring(res.stdout)
        assert user.findtext("NAME") == "rtyler" and user.findtext("AUTH_DRIVER") == "oidc"
    finally:
        one.cli("oneuser", "delete", "rtyler")
        conf.write_text(before)
