"""``auth/ldap/authenticate`` (a login with nested group lookup, as one_auth_mad runs it, with
its resident login agent, then without)
against the same binds and searches done with OpenLDAP's command lines on the lab's slapd
(issue 17's target: at most 1.5x): ``ldapsearch`` for the user as the search user,
``ldapwhoami`` as the user (the password), ``ldapsearch`` for the groups, then for the groups
holding those (one level of nesting), all over ldaps with the lab's CA."""

from __future__ import annotations

import os
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from common import compare, lab_bench, report, time_argv
from one_drivers.lab.lab import Lab


def bench_ldap(env: dict[str, str], work: Path, runs: int = 30) -> dict[str, float]:
    remotes = work / "remotes"
    uri = urllib.parse.urlsplit(env["ONE_LAB_LDAPS_URI"])
    tmp = Path(tempfile.mkdtemp(prefix="bench-ldap-"))
    conf = tmp / "ldap_auth.conf"
    conf.write_text(
        "lab:\n    :host: 127.0.0.1\n"
        f"    :port: {uri.port}\n    :encryption: :simple_tls\n"
        f"    :ca_cert: '{env['ONE_LAB_LDAP_CA']}'\n    :user: '{env['ONE_LAB_LDAP_BIND_DN']}'\n"
        f"    :password: '{env['ONE_LAB_LDAP_BIND_PW']}'\n    :base: '{env['ONE_LAB_LDAP_BASE']}'\n"
        "    :user_field: uid\n    :mapping_default: 1\n:order:\n    - lab\n")
    settings = remotes / "etc" / "auth" / "ldap" / "ldap.conf"
    settings.write_text(settings.read_text() + f"\nCONFIG={conf}\nMAPPING_DIR={tmp}/map\n")
    Lab().oned.record("grouppool", 0, "<GROUP_POOL/>")
    doc = b"<AUTHN><USERNAME>alice</USERNAME><PASSWORD>-</PASSWORD>" \
          b"<SECRET>alice-pw</SECRET></AUTHN>"
    tls = {**os.environ, "LDAPTLS_CACERT": env["ONE_LAB_LDAP_CA"]}
    bind = ["-x", "-H", env["ONE_LAB_LDAPS_URI"]]
    reader = [*bind, "-D", env["ONE_LAB_LDAP_BIND_DN"], "-w", env["ONE_LAB_LDAP_BIND_PW"],
              "-b", env["ONE_LAB_LDAP_BASE"], "-LLL"]
    dn = f"uid=alice,ou=people,{env['ONE_LAB_LDAP_BASE']}"

    def ours() -> float:
        return time_argv([str(remotes / "auth/ldap/authenticate")], stdin=doc)

    def theirs() -> float:
        took = 0.0
        for argv in (["ldapsearch", *reader, "(uid=alice)", "dn"],
                     ["ldapwhoami", *bind, "-D", dn, "-w", "alice-pw"],
                     ["ldapsearch", *reader, f"(member={dn})", "dn"],
                     ["ldapsearch", *reader,
                      f"(|(member=cn=devs,ou=groups,{env['ONE_LAB_LDAP_BASE']}))", "dn"]):
            took += run_timed(argv, tls)
        return took

    results = {}
    base = settings.read_text()
    try:
        for label, idle in (("with the login agent", "300"), ("no agent, AGENT_IDLE=0", "0")):
            settings.write_text(base + f"AGENT_IDLE={idle}\n")
            ours()  # the agent started (or not) before the timed runs
            a, b = compare(ours, theirs, runs)
            report(f"ldap login with nested groups over ldaps, {label} ({runs} runs)",
                   "auth/ldap/authenticate (one process)", a,
                   "ldapsearch + ldapwhoami + 2 ldapsearch (4 processes)", b)
            print(f"  ratio ours/theirs {a / b:.2f} (target <= 1.5)")
            results["ldap_login_vs_openldap_tools" + ("" if idle != "0" else "_no_agent")] = a / b
    finally:
        settings.write_text(base)
        from one_drivers.lab.proc import stop_processes_mentioning

        stop_processes_mentioning(str(tmp))  # the agent the timed logins started
    return results


def run_timed(argv: list[str], env: dict[str, str]) -> float:
    import time

    t = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=True, timeout=30)
    return time.perf_counter() - t


def main() -> dict[str, float]:
    with lab_bench() as (env, _ioctx, work):
        return bench_ldap(env, work)


if __name__ == "__main__":
    main()
