"""``auth/oidc/authenticate`` against a real OpenID provider: the lab's LemonLDAP::NG, which signs
its own ID tokens (RS256, its key published in its JWKS) for its Demo users. Tokens are obtained
with the password grant (the IdP's token endpoint), as any relying party's back end could, and
handed to the driver as one_auth_mad does: nothing about them is made by the test."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from tests.helpers import id_token, oidc_authenticate

pytestmark = pytest.mark.lab


@pytest.fixture
def login(lab_env, remotes, tmp_path):
    mapping = tmp_path / "groups.json"
    mapping.write_text(json.dumps({"timelords": "*101", "earthlings": "102"}))
    def run(token: str, user: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return oidc_authenticate(remotes, {
            "ISSUER": lab_env["ONE_LAB_IDP_ISSUER"], "AUDIENCE": "opennebula",
            "CA_FILE": lab_env["ONE_LAB_IDP_CA"], "GROUP_MAPPING": str(mapping),
            "JWKS_DIR": str(tmp_path / "jwks"), **settings}, token, user)

    return run


def test_the_idps_own_tokens_sign_users_on_with_their_groups(lab_env, login):
    res = login(id_token(lab_env, "dwho"), "dwho")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["oidc", "dwho", "-", "*101"], "timelords: group admin of 101"
    res = login(id_token(lab_env, "rtyler"), "rtyler")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["oidc", "rtyler", "-", "102"]


def test_what_the_idp_issued_to_someone_else_is_refused(lab_env, login):
    """Each refusal next to its positive control: the same kind of token, accepted."""
    mine = id_token(lab_env, "msmith")
    assert login(mine, "msmith").returncode == 0, "positive control: a token for OpenNebula"
    other = login(id_token(lab_env, "msmith", client="other"), "msmith")
    assert other.returncode != 0 and "is not for 'opennebula' (aud)" in other.stderr
    wrong_user = login(mine, "dwho")  # msmith's token used to log in as dwho
    assert wrong_user.returncode != 0 and "names the user 'msmith'" in wrong_user.stderr
    header, claims, signature = mine.split(".")
    padded = claims + "=" * (-len(claims) % 4)
    raised = json.loads(base64.urlsafe_b64decode(padded))
    raised["preferred_username"] = "dwho"  # the IdP's signature no longer matches
    forged = base64.urlsafe_b64encode(json.dumps(raised).encode()).rstrip(b"=").decode()
    tampered = login(f"{header}.{forged}.{signature}", "dwho")
    assert tampered.returncode != 0 and "signature" in tampered.stderr, tampered.stderr
    elsewhere = login(mine, "msmith", ISSUER="https://127.0.0.1:1/")  # not this IdP
    assert elsewhere.returncode != 0
