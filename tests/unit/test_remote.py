import shlex
import socket

import pytest

from one_drivers.core import remote
from one_drivers.core.errors import ActionFailed, BackendTimeout, BadInput


def test_local_names_take_the_fast_path():
    for host in (None, "localhost", "127.0.0.1", socket.gethostname()):
        assert remote.is_local(host)
    assert not remote.is_local("node-elsewhere")
    assert remote.command("localhost", ["rm", "-rf", "/x y"]) == ["rm", "-rf", "/x y"]


def test_ssh_command_is_batch_mode_and_quotes_every_argument(monkeypatch):
    monkeypatch.setenv("ONE_DRIVERS_SSH_CONFIG", "/etc/x/ssh_config")
    argv = ["mkdir", "-p", "/var/lib/one/datastores/0/42; rm -rf /", "$(reboot)"]
    cmd = remote.command("node1", argv)
    assert cmd[0] == "ssh" and "BatchMode=yes" in cmd and cmd[-3:-1] == ["--", "node1"]
    assert cmd[cmd.index("-F") + 1] == "/etc/x/ssh_config"
    assert shlex.split(cmd[-1]) == argv  # the remote shell rebuilds exactly this argv


def test_a_host_name_is_never_an_option():
    for host in ("-oProxyCommand=touch /tmp/x", "-F/etc/evil", "a b", "x\ny", ""):
        with pytest.raises(BadInput, match="is not a host name"):
            remote.ssh_argv(host, ["true"])


def test_local_run_streams_stdin_and_reports_failures():
    assert remote.run(None, ["cat"], input=b"data", timeout=5).stdout == b"data"
    with pytest.raises(ActionFailed, match=r"ls here failed with exit code 2: .*nonexistent"):
        remote.run(None, ["ls", "/nonexistent-dir"], timeout=5)
    with pytest.raises(ActionFailed, match="no-such-tool is not installed here"):
        remote.run(None, ["no-such-tool"], timeout=5)
    with pytest.raises(BackendTimeout, match=r"sleep here did not finish within 0\.2 s"):
        remote.run(None, ["sleep", "5"], timeout=0.2)


def test_oned_endpoint_parsing():
    from one_drivers.core.errors import BadInput
    from one_drivers.core.oned import split_endpoint

    assert split_endpoint("http://localhost:2633/RPC2") == ("http", "localhost", 2633, "/RPC2")
    assert split_endpoint("https://one.example") == ("https", "one.example", 443, "/")
    assert split_endpoint("http://[::1]:2633/RPC2") == ("http", "::1", 2633, "/RPC2")
    with pytest.raises(BadInput):
        split_endpoint("ftp://x")
    with pytest.raises(BadInput):
        split_endpoint("http://host:port/")
