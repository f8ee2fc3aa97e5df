"""Where root and the driver user write: trusted directories, no symlink ever followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from one_drivers.core import atomic, log
from one_drivers.core.safefs import (
    Untrusted,
    is_trusted_dir,
    open_trusted_dir,
    read_trusted_file,
)

NOBODY = 65534


@pytest.fixture
def base(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    return tmp_path


def test_a_directory_another_user_owns_or_can_write_is_not_trusted(base: Path) -> None:
    assert is_trusted_dir(str(base))  # positive control
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    assert not is_trusted_dir(str(theirs))
    open_dir = base / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    assert not is_trusted_dir(str(open_dir))
    (open_dir / "below").mkdir()
    assert not is_trusted_dir(str(open_dir / "below")), "a swappable step on the way"
    sticky = base / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "mine").mkdir()
    assert is_trusted_dir(str(sticky / "mine")), "sticky on the way is fine (like /var/tmp)"
    assert not is_trusted_dir(str(sticky)), "but not as the place to write"


def test_symlinks_on_the_way_are_followed_only_when_root_or_the_user_owns_them(
        base: Path) -> None:
    (base / "real").mkdir()
    os.symlink(base / "real", base / "mine")
    assert is_trusted_dir(str(base / "mine"))
    sticky = base / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    os.symlink(base / "real", sticky / "theirs")
    os.lchown(sticky / "theirs", NOBODY, NOBODY)
    with pytest.raises(Untrusted, match="symlink owned by uid 65534"):
        open_trusted_dir(str(sticky / "theirs"))


def test_private_directories_are_made_0700_and_checked(base: Path) -> None:
    fd = open_trusted_dir(str(base / "a" / "b"), create_mode=0o700, private=True)
    os.close(fd)
    assert stat.S_IMODE((base / "a" / "b").stat().st_mode) == 0o700
    (base / "a" / "b").chmod(0o750)
    with pytest.raises(Untrusted, match="mode 0700"):
        open_trusted_dir(str(base / "a" / "b"), private=True)


def test_root_reads_configuration_only_root_can_change(base: Path) -> None:
    conf = base / "x.conf"
    conf.write_text("A=1\n")
    conf.chmod(0o644)
    assert read_trusted_file(str(conf)) == b"A=1\n"
    conf.chmod(0o666)
    with pytest.raises(Untrusted, match="can be changed by others"):
        read_trusted_file(str(conf))
    conf.chmod(0o644)
    os.chown(conf, NOBODY, NOBODY)
    with pytest.raises(Untrusted):
        read_trusted_file(str(conf))
    os.symlink(conf, base / "link.conf")
    with pytest.raises(Untrusted, match="symlink"):
        read_trusted_file(str(base / "link.conf"))
    assert read_trusted_file(str(base / "missing.conf")) is None


def test_an_atomic_write_never_follows_a_planted_symlink(base: Path, monkeypatch) -> None:
    victim = base / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    target = base / "state.xml"
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "fixed")
    os.symlink(victim, base / ".state.xml.tmp.fixed")  # the name it will try first
    calls = iter(["fixed", "other", "third"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(calls))
    atomic.write_atomic(str(target), "<VM/>")
    assert victim.read_text() == "secret"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert target.read_text() == "<VM/>" and not target.is_symlink()
    os.symlink(victim, base / "old.xml")  # replacing a symlink: its target's mode is not taken
    monkeypatch.undo()
    atomic.write_atomic(str(base / "old.xml"), "new")
    assert stat.S_IMODE((base / "old.xml").lstat().st_mode) == 0o644
    assert victim.read_text() == "secret"


def test_root_writes_only_where_nobody_else_can(base: Path) -> None:
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(Untrusted):
        atomic.write_atomic(str(theirs / "f"), "x")
    assert not (theirs / "f").exists()


def test_the_driver_log_never_falls_back_to_a_shared_directory(monkeypatch) -> None:
    monkeypatch.delenv("ONE_DRIVERS_LOG", raising=False)
    monkeypatch.setattr(log, "_context", {"label": "t", "path": ""})
    path = log.log_path()
    assert path is None or not path.startswith(("/tmp", "/var/tmp"))
    if os.geteuid() == 0:
        assert path in (log.ROOT_LOG, None)


def test_the_monitor_keeps_its_state_only_in_a_private_directory(base: Path) -> None:
    from one_drivers.im.libvirt.control import private_state_dir

    fresh = base / "im"
    private_state_dir(str(fresh))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    shared = base / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    with pytest.raises(Untrusted):  # /var/tmp/one-drivers/im as it was: anyone's
        private_state_dir(str(shared))
    planted = shared / "im"
    planted.mkdir(mode=0o700)
    os.chown(planted, NOBODY, NOBODY)  # pre-created by another local user
    with pytest.raises(Untrusted, match="owned by uid 65534"):
        private_state_dir(str(planted))


def test_a_missing_configuration_or_its_directory_is_no_configuration(base: Path) -> None:
    assert read_trusted_file(str(base / "nodir" / "x.conf")) is None
