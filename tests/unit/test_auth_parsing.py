"""The auth drivers' pure parts: upstream's ldap_auth.conf as read here, and JWT claims."""

from __future__ import annotations

import pytest

from one_drivers.auth.ldap.config import parse
from one_drivers.auth.oidc import jose
from one_drivers.core.errors import BadInput, PermissionDenied

UPSTREAM = """
server 1:
    :auth_method: :simple
    :host: ldap1.example.com
    :port: 389
    :base: 'dc=domain'
    :user_field: 'cn'
    :mapping_generate: true
    :mapping_timeout: 300
    :mapping_filename: server1.yaml
    :mapping_key: GROUP_DN
    :mapping_default: 1
    :rfc2307bis: true
server 2:
    :host: ldap2.example.com
    :encryption: :simple_tls
    :base: 'dc=domain'
server 3:
    :host: ldap3.example.com
:order:
    - server 1
    - ['server 2', 'server 3']
"""


def test_upstreams_file_reads_as_it_is():
    config = parse(UPSTREAM)
    one, two = config.servers["server 1"], config.servers["server 2"]
    assert (one.host, one.port, one.user_field, one.mapping_default) == \
        ("ldap1.example.com", 389, "cn", "1")
    assert one.verify_cert and one.nested == "recursive" and one.group_field == "member"
    assert (two.encryption, two.port) == ("simple_tls", 636), "ldaps' port by default"
    assert config.order == [["server 1"], ["server 2", "server 3"]]
    assert config.chain("anyone") == config.order


def test_match_user_regex_picks_the_servers():
    config = parse(UPSTREAM.split(":order:")[0]
                   + ':match_user_regex:\n    "@orgB$": [\'server 2\']\n    ".*": server 1\n')
    assert config.chain("bob@orgB") == [["server 2"]]
    assert config.chain("alice") == [["server 1"]]


@pytest.mark.parametrize(("text", "message"), [
    ("- not a mapping", "holds no servers"),
    ("s:\n    :port: 1\n", "has no :host:"),
    ("s:\n    :host: h\n    :encryption: :tls\n", "is not simple_tls or start_tls"),
    ("s:\n    :host: h\n:order:\n    - t\n", "which is not a server there"),
    ("s:\n    :host: h\n    :nested_groups: deep\n", "is not recursive, in_chain or none"),
    ("s: [unclosed\n", "is not valid YAML"),
])
def test_a_broken_configuration_is_named(text, message):
    with pytest.raises(BadInput, match=message):
        parse(text)


CLAIMS = {"iss": "https://idp", "aud": "one", "exp": 1000.0}


@pytest.mark.parametrize(("claims", "message"), [
    ({**CLAIMS, "iss": "https://other"}, "not issued by"),
    ({**CLAIMS, "aud": ["x", "y"]}, "is not for"),
    ({k: v for k, v in CLAIMS.items() if k != "exp"}, "no expiry"),
    ({**CLAIMS, "exp": "tomorrow"}, "exp is not a number"),
    ({**CLAIMS, "exp": True}, "exp is not a number"),
    ({**CLAIMS, "exp": 900.0}, "has expired"),
    ({**CLAIMS, "nbf": 1100.0}, "not valid yet"),
])
def test_claims_that_refuse_a_token(claims, message):
    with pytest.raises(PermissionDenied, match=message):
        jose.check_claims(claims, issuer="https://idp", audience="one", leeway=60, now=1000.0)


def test_claims_that_pass_within_the_leeway():
    jose.check_claims({**CLAIMS, "aud": ["x", "one"], "exp": 950.0, "nbf": 1050.0},
                      issuer="https://idp", audience="one", leeway=60, now=1000.0)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.e30.x", "e30.W10.x",
                                   "x" * 20000])
def test_what_is_not_a_jwt(token):
    with pytest.raises(BadInput, match="not a JWT"):
        jose.split(token)
