"""``auth/ldap/authenticate`` as one_auth_mad runs it (stdin ``<AUTHN>``, no arguments) against
the lab's OpenLDAP slapd: TLS, nested groups, the mapping from OpenNebula's groups (the oned
stand-in answers the group and user pools), failover, a stopped and a hung server, injection."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from one_drivers.core.xmlview import escape
from one_drivers.lab.lab import Lab
from one_drivers.lab.proc import stop_processes_mentioning
from tests.helpers import last_line

pytestmark = pytest.mark.lab

GROUPS = {"101": "cn=devs,ou=groups,dc=one,dc=lab", "102": "cn=ops,ou=groups,dc=one,dc=lab",
          "103": "cn=legacy,ou=groups,dc=one,dc=lab",
          "104": "cn=cloud-admins,ou=groups,dc=one,dc=lab"}


def record_oned(admins: dict[str, list[int]] | None = None) -> None:
    oned = Lab().oned
    groups = "".join(
        f"<GROUP><ID>{gid}</ID><NAME>g{gid}</NAME><TEMPLATE><GROUP_DN>{dn}</GROUP_DN>"
        "</TEMPLATE><ADMINS>" + "".join(f"<ID>{u}</ID>" for u in (admins or {}).get(gid, []))
        + "</ADMINS></GROUP>" for gid, dn in GROUPS.items())
    oned.record("grouppool", 0, f"<GROUP_POOL><GROUP><ID>0</ID><NAME>oneadmin</NAME><TEMPLATE/>"
                                f"</GROUP>{groups}</GROUP_POOL>")
    oned.record("userpool", 0, "<USER_POOL><USER><ID>0</ID><NAME>oneadmin</NAME></USER>"
                               "<USER><ID>5</ID><NAME>alice</NAME></USER></USER_POOL>")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server(env, name: str, **over) -> str:
    uri = urllib.parse.urlsplit(env["ONE_LAB_LDAPS_URI"])
    attrs = {"host": "127.0.0.1", "port": uri.port, "encryption": ":simple_tls",
             "ca_cert": env["ONE_LAB_LDAP_CA"], "user": env["ONE_LAB_LDAP_BIND_DN"],
             "password": env["ONE_LAB_LDAP_BIND_PW"], "base": env["ONE_LAB_LDAP_BASE"],
             "user_field": "uid", "timeout": 3, "mapping_default": 1,
             "mapping_filename": f"{name}.yaml",
             "group_admin_group_dn": GROUPS["104"], **over}
    return f"{name}:\n" + "".join(f"    :{k}: {v!r}\n" if isinstance(v, str) and
                                  not v.startswith(":") else f"    :{k}: {v}\n"
                                  for k, v in attrs.items() if v is not None)


@pytest.fixture
def ldap(lab_env, remotes, tmp_path):
    record_oned()
    conf = tmp_path / "ldap_auth.conf"

    def login(user: str, password: str, servers: str, order: str = "", *, env=None,
              settings_extra: str = ""):
        conf.write_text(servers + (order or "\n:order:\n    - lab\n"))
        doc = (f"<AUTHN><USERNAME>{escape(user)}</USERNAME><PASSWORD>-</PASSWORD>"
               f"<SECRET>{escape(password)}</SECRET></AUTHN>")
        settings = remotes / "etc" / "auth" / "ldap" / "ldap.conf"
        base = settings.read_text().split("\n# test\n")[0]
        settings.write_text(base + f"\n# test\nCONFIG={conf}\nMAPPING_DIR={tmp_path}/map\n"
                            + settings_extra)
        return subprocess.run([str(remotes / "auth" / "ldap" / "authenticate")], input=doc,
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, **(env or {})})

    yield login
    stop_processes_mentioning(str(tmp_path))  # the login agent this test's logins started


def fields(out: str) -> list[str]:
    return [urllib.parse.unquote(f) for f in out.split()]


def test_a_login_over_tls_with_nested_groups_mapped(ldap, lab_env):
    res = ldap("alice", "alice-pw", server(lab_env, "lab"))
    assert res.returncode == 0, res.stderr
    assert fields(res.stdout) == ["ldap", "alice", "uid=alice,ou=people,dc=one,dc=lab",
                                  "101", "102"], "devs, and ops through devs"
    # bob is in the admin group: admin of every mapped group
    res = ldap("bob", "bob-pw", server(lab_env, "lab"))
    assert res.returncode == 0 and fields(res.stdout)[3:] == ["*104"], res.stdout
    # carol has no mapped group: mapping_default
    res = ldap("carol", "carol-pw", server(lab_env, "lab"))
    assert res.returncode == 0 and fields(res.stdout)[3:] == ["1"], res.stdout
    # nested groups off: only the direct one
    res = ldap("alice", "alice-pw", server(lab_env, "lab", nested_groups=":none"))
    assert fields(res.stdout)[3:] == ["101"], res.stdout
    # a POSIX directory (memberUid)
    res = ldap("alice", "alice-pw", server(lab_env, "lab", rfc2307bis=False,
                                           group_field="memberUid", user_group_field="uid"))
    assert res.returncode == 0 and fields(res.stdout)[3:] == ["103"], res.stdout


def test_group_admin_rights_granted_in_opennebula_are_kept(ldap, lab_env):
    """OpenNebula/one#5210: alice administers group 102 because an admin made her so; the next
    login keeps it (DRIVER_MANAGED_GROUP_ADMIN applies the driver's list)."""
    record_oned(admins={"102": [5]})
    res = ldap("alice", "alice-pw", server(lab_env, "lab"))
    assert res.returncode == 0 and fields(res.stdout)[3:] == ["101", "*102"], res.stdout


def test_refusals_and_what_never_reaches_the_directory(ldap, lab_env):
    lab = server(lab_env, "lab")
    res = ldap("alice", "wrong", lab)
    assert res.returncode == 5 and "wrong password" in last_line(res.stderr), res.stderr
    res = ldap("nobody-here", "x", lab)
    assert res.returncode == 5 and "no such user" in last_line(res.stderr)
    # a blank password is refused before any bind: through a server that does not exist it
    # would otherwise be "no LDAP server answered" (positive control below)
    dead = server(lab_env, "lab", port=free_port())
    res = ldap("alice", "  ", dead)
    assert res.returncode == 5 and "empty or blank password" in last_line(res.stderr)
    res = ldap("alice", "alice-pw", dead)
    assert res.returncode == 4 and "no LDAP server answered" in last_line(res.stderr)
    # filter metacharacters are values, not filters
    res = ldap("*", "alice-pw", lab)
    assert res.returncode == 5 and "no such user" in last_line(res.stderr), res.stderr
    res = ldap("alice)(uid=*", "alice-pw", lab)
    assert res.returncode == 5 and "no such user" in last_line(res.stderr)
    res = ldap("d*vid", "d*vid-pw", lab)
    assert res.returncode == 0 and fields(res.stdout)[1] == "d*vid", "a literal '*' matches"
    # members of a required group only
    restricted = server(lab_env, "lab", group=GROUPS["104"])
    assert ldap("bob", "bob-pw", restricted).returncode == 0
    res = ldap("alice", "alice-pw", restricted)
    assert res.returncode == 5 and "not a member of" in last_line(res.stderr)


def test_tls_is_verified_unless_turned_off(ldap, lab_env):
    unknown_ca = server(lab_env, "lab", ca_cert="/etc/ssl/certs/ca-certificates.crt")
    res = ldap("alice", "alice-pw", unknown_ca)
    assert res.returncode == 4, res.stderr
    res = ldap("alice", "alice-pw", server(lab_env, "lab", ca_cert=None,
                                           verify_cert=False))
    assert res.returncode == 0, "positive control: the same server without verification"
    uri = urllib.parse.urlsplit(lab_env["ONE_LAB_LDAP_URI"])
    res = ldap("alice", "alice-pw", server(lab_env, "lab", port=uri.port,
                                           encryption=":start_tls"))
    assert res.returncode == 0, res.stderr


def test_failover_in_order_and_in_availability_groups(ldap, lab_env):
    dead, lab = server(lab_env, "dead", port=free_port()), server(lab_env, "lab")
    other = server(lab_env, "other", base="ou=groups,dc=one,dc=lab")  # knows nobody
    res = ldap("alice", "alice-pw", dead + lab, "\n:order:\n    - ['dead', 'lab']\n")
    assert res.returncode == 0, res.stderr
    assert "LDAP server dead" in res.stderr, "the dead one was tried first"
    # refused by the first entry of the order, accepted by the next
    res = ldap("alice", "alice-pw", other + lab, "\n:order:\n    - other\n    - lab\n")
    assert res.returncode == 0, res.stderr
    # match_user_regex picks the servers
    res = ldap("alice", "alice-pw", other + lab,
               "\n:match_user_regex:\n    '^al': lab\n    '.*': other\n")
    assert res.returncode == 0, res.stderr


def test_a_hung_directory_ends_within_the_deadline(ldap, lab_env):
    """slapd stopped with SIGSTOP accepts connections and never answers: the login ends at
    the server's timeout with a clear line; the same login once it runs again is accepted."""
    pid = int(Path(lab_env["ONE_LAB_LDAP_PID"]).read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        res = ldap("alice", "alice-pw", server(lab_env, "lab", timeout=2))
        assert res.returncode == 4 and "did not answer in time" in res.stderr, res.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ldap("alice", "alice-pw", server(lab_env, "lab")).returncode == 0


def _agents(where: Path) -> list[int]:
    """PIDs of running (not stopped-and-killed) login agents serving ``where``."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(where).encode() in args and b"one_drivers.auth.ldap.agent" in b" ".join(args) \
                and state != "Z":
            pids.append(int(entry))
    return pids


def _wait(check, what: str, timeout: float = 15) -> None:
    import time

    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def test_the_login_agent_answers_as_the_login_would_and_never_blocks_one(ldap, lab_env,
                                                                         tmp_path):
    """The first login is done in its own process and starts the agent; the next ones are the
    agent's (its log says so), with the same answer and the same refusals as without an agent
    (AGENT_IDLE=0). A stuck agent (SIGSTOP) is killed and the login done in-process; a dead
    agent's socket is replaced; an agent serving another environment retires."""
    where = tmp_path / "map"
    log = where / "agent.log"
    lab = server(lab_env, "lab", timeout=2)
    alone = ldap("alice", "alice-pw", lab, settings_extra="AGENT_IDLE=0\n")
    assert alone.returncode == 0 and not _agents(where), "AGENT_IDLE=0: no agent"
    refused_alone = ldap("alice", "wrong", lab, settings_extra="AGENT_IDLE=0\n")
    first = ldap("alice", "alice-pw", lab)
    assert first.stdout == alone.stdout and not log.exists(), "done here, not by the agent"
    _wait(lambda: len(_agents(where)) == 1 and (where / "agent.sock").exists(),
          "the agent to listen")
    served = ldap("alice", "alice-pw", lab)
    assert served.returncode == 0 and served.stdout == alone.stdout, served.stderr
    assert log.read_text().splitlines()[-1].endswith("alice: signed on")
    refused = ldap("alice", "wrong", lab)
    assert (refused.returncode, refused.stderr) == (refused_alone.returncode,
                                                   refused_alone.stderr)
    assert log.read_text().splitlines()[-1].endswith("refused (PermissionDenied)")
    slapd = int(Path(lab_env["ONE_LAB_LDAP_PID"]).read_text().split()[0])
    os.kill(slapd, signal.SIGSTOP)  # the directory hung: the agent's login ends in time too
    try:
        hung = ldap("alice", "alice-pw", lab)
        assert hung.returncode == 4 and "did not answer in time" in hung.stderr, hung.stderr
    finally:
        os.kill(slapd, signal.SIGCONT)
    assert log.read_text().splitlines()[-1].endswith("refused (BackendUnavailable)")
    (agent,) = _agents(where)
    os.kill(agent, signal.SIGSTOP)  # a stuck agent
    lines = len(log.read_text().splitlines())
    res = ldap("alice", "alice-pw", lab)
    assert res.returncode == 0 and res.stdout == alone.stdout, res.stderr
    assert len(log.read_text().splitlines()) == lines, "done here, not by the stuck agent"
    _wait(lambda: agent not in _agents(where) and len(_agents(where)) == 1,
          "the stuck agent to be replaced")
    (agent,) = _agents(where)
    os.kill(agent, signal.SIGKILL)  # a dead agent: its socket is left behind
    _wait(lambda: not _agents(where), "the agent to die")
    assert (where / "agent.sock").exists()
    res = ldap("alice", "alice-pw", lab)
    assert res.returncode == 0 and res.stdout == alone.stdout, res.stderr
    _wait(lambda: len(_agents(where)) == 1, "a new agent")
    (agent,) = _agents(where)
    _agent_dies_mid_login(ldap, lab_env, lab, where, agent)
    _wait(lambda: len(_agents(where)) == 1, "a new agent after the one killed mid-login")
    (agent,) = _agents(where)
    other = ldap("alice", "alice-pw", lab, env={"ONE_XMLRPC": "http://127.0.0.1:1/RPC2"})
    assert other.returncode == 0, other.stderr  # done here: oned unreachable, mapping file
    _wait(lambda: agent not in _agents(where), "the agent serving another oned to retire")


def _agent_dies_mid_login(ldap, lab_env, lab: str, where: Path, agent: int) -> None:
    """The agent killed while it waits on a hung directory: the caller does the login itself
    (the directory's own error, exit 4), not "the agent failed"."""
    import threading

    port = urllib.parse.urlsplit(lab_env["ONE_LAB_LDAPS_URI"]).port
    slapd = int(Path(lab_env["ONE_LAB_LDAP_PID"]).read_text().split()[0])
    os.kill(slapd, signal.SIGSTOP)
    result: list[subprocess.CompletedProcess[str]] = []
    try:
        login = threading.Thread(target=lambda: result.append(ldap("alice", "alice-pw", lab)))
        login.start()

        def agent_waits_on_slapd() -> bool:
            out = subprocess.run(["ss", "-Htnp", "state", "established", "dport", f"= :{port}"],
                                 capture_output=True, text=True, timeout=10, check=False)
            return f"pid={agent}," in out.stdout

        _wait(agent_waits_on_slapd, "the agent to be under way with the login")
        os.kill(agent, signal.SIGKILL)
        login.join(60)
    finally:
        os.kill(slapd, signal.SIGCONT)
    (res,) = result
    assert res.returncode == 4 and "did not answer in time" in res.stderr, res.stderr
