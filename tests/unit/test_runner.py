"""The error contract: exit codes, one plain last stderr line, tracebacks only in the log."""

import base64
import io

import pytest

from one_drivers.core import registry
from one_drivers.core.runner import main, run

DS = ("<DS_DRIVER_ACTION_DATA><IMAGE><ID>7</ID><TEMPLATE>{tpl}</TEMPLATE></IMAGE>"
      "<DATASTORE><ID>1</ID></DATASTORE></DS_DRIVER_ACTION_DATA>")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setitem(registry.PACKAGES, "datastore",
                        {**registry.PACKAGES["datastore"], "fake": "tests.unit.fake_driver"})
    monkeypatch.setenv("ONE_DRIVERS_LOG", str(tmp_path / "driver.log"))
    return tmp_path


def invoke(action, argv, data, remotes=None):
    out = io.StringIO()
    rc = run("datastore", "fake", action, argv, stdin=io.BytesIO(data), stdout=out,
             remotes=remotes)
    return rc, out.getvalue()


def enc(tpl=""):
    return base64.b64encode(DS.format(tpl=tpl).encode())


def test_success_prints_stdout_with_defaults_config_and_template_layers(fake, capsys):
    assert invoke("stat", ["7"], enc(), fake) == (0, "42\n")
    conf = fake / "etc" / "datastore" / "fake" / "fake.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("ANSWER=from-file\n")
    assert invoke("stat", ["7"], enc(), fake) == (0, "from-file\n")
    assert invoke("stat", ["7"], enc("<ANSWER>from-template</ANSWER>"), fake) == (
        0, "from-template\n")


def test_action_timeout_comes_from_config(fake):
    assert invoke("monitor", ["1"], enc(), fake) == (0, "TIMEOUT=5\n")
    conf = fake / "etc" / "datastore" / "fake" / "fake.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("MONITOR_TIMEOUT=9\n")
    assert invoke("monitor", ["1"], enc(), fake) == (0, "TIMEOUT=9\n")


@pytest.mark.parametrize(
    ("action", "argv", "data", "code", "line"),
    [
        ("stat", ["7"], b"!!", 3, "image 7: datastore/fake/stat stdin is not valid base64"),
        ("stat", ["7"], base64.b64encode(b"<DS_DRIVER"), 3, "is not well-formed XML"),
        ("stat", ["7"], base64.b64encode(b"<VM/>"), 3, "has root element <VM>"),
        ("stat", ["7"], b"", 3, "image 7: datastore/fake/stat stdin is empty"),
        ("stat", [], b"", 2, "expects arguments ID, got 0"),
        ("stat", ["x"], b"", 3, "argument ID is 'x', expected an integer"),
        ("snap_delete", ["7"], b"", 2, "driver datastore/fake has no action 'snap_delete'"),
        ("rm", ["7"], None, 6, "image 7: RBD image one/one-7 does not exist; nothing to remove"),
    ],
)
def test_failures_end_in_one_plain_line(fake, capsys, action, argv, data, code, line):
    rc, out = invoke(action, argv, enc() if data is None else data)
    err = capsys.readouterr().err
    assert rc == code and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert line in lines[-1]
    assert not lines[-1].startswith(("ERROR:", "INFO:"))  # 7.x would swallow a prefixed line
    assert "Traceback" not in err


def test_missing_attribute_names_the_path(fake, capsys):
    tpl_less = base64.b64encode(
        b"<DS_DRIVER_ACTION_DATA><DATASTORE><ID>1</ID></DATASTORE></DS_DRIVER_ACTION_DATA>")
    rc, _ = invoke("stat", ["7"], tpl_less)
    err = capsys.readouterr().err.strip()
    assert rc == 3
    assert err == ("image 7: missing required attribute DS_DRIVER_ACTION_DATA/IMAGE; "
                   "set it in the template")


def test_a_bug_gives_one_line_and_the_traceback_goes_to_the_log(fake, capsys):
    rc, _ = invoke("clone", ["7"], enc())
    err = capsys.readouterr().err
    assert rc == 70
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error in datastore/fake/clone (ZeroDivisionError: boom second line)" in err
    log = (fake / "driver.log").read_text()
    assert "Traceback (most recent call last)" in log and "ZeroDivisionError" in log


def test_unknown_driver_and_family(fake, capsys):
    assert main(["datastore", "nope", "cp", "1"]) == 2
    assert "unknown datastore driver 'nope'" in capsys.readouterr().err
    assert main(["storage", "rbd", "cp", "1"]) == 2
    assert "unknown driver family 'storage'" in capsys.readouterr().err
    assert main(["datastore"]) == 2
    assert "usage: python -m one_drivers" in capsys.readouterr().err


def test_a_huge_stdin_is_refused_without_reading_it_all():
    """Measured from a small wrapper process: a child forked from pytest itself would report
    pytest's memory as its peak."""
    import subprocess
    import sys

    from one_drivers.core.runner import MAX_STDIN

    wrapper = (
        "import os, resource, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'one_drivers', 'datastore', 'rbd', 'stat',"
        " '1'], stdin=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "try:\n"
        f"    p.stdin.write(b'A' * {MAX_STDIN + (8 << 20)})\n"
        "    p.stdin.close()\n"
        "except BrokenPipeError:\n"
        "    pass\n"
        "err = p.stderr.read().decode()\n"
        "rc = p.wait()\n"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, err.strip())\n")
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    rc, peak_kib, err = out.split(" ", 2)
    assert rc == "3", err
    assert "larger than 32 MiB" in err
    assert int(peak_kib) < 200 * 1024, f"{peak_kib} KiB: the document was capped"
