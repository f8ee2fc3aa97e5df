import time

import pytest

from one_drivers.core.errors import BackendTimeout
from one_drivers.core.retry import Deadline, call_with_timeout, retrying


class Transient(Exception):
    pass


def test_deadline_caps_call_timeouts_and_expires():
    d = Deadline(10, "test")
    assert d.cap(3) == 3
    assert 9 < d.cap(60) <= 10
    expired = Deadline(0, "tm/rbd/clone")
    with pytest.raises(BackendTimeout, match=r"ran out of its 0 s time limit before cloning"):
        expired.cap(5, "cloning")


def test_retrying_retries_transient_errors_then_succeeds(capsys):
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise Transient("busy")
        return "ok"

    assert retrying(Deadline(10), retry_on=(Transient,), what="open image")(flaky) == "ok"
    assert len(attempts) == 3
    assert "INFO: open image failed (busy); retry 1 of 7" in capsys.readouterr().err


def test_retrying_gives_up_with_the_original_error_and_ignores_others():
    calls = []

    def always():
        calls.append(1)
        raise Transient("still busy")

    with pytest.raises(Transient, match="still busy"):
        retrying(Deadline(10), retry_on=(Transient,), what="x", max_attempts=3)(always)
    assert len(calls) == 3

    def other():
        calls.append(1)
        raise ValueError("not transient")

    calls.clear()
    with pytest.raises(ValueError):
        retrying(Deadline(10), retry_on=(Transient,), what="x")(other)
    assert len(calls) == 1


def test_retrying_stops_at_the_deadline():
    calls = []

    def always():
        calls.append(1)
        raise Transient("busy")

    with pytest.raises(Transient):
        retrying(Deadline(0.3), retry_on=(Transient,), what="x", max_attempts=1000,
                 max_wait=0.05)(always)
    assert 1 < len(calls) < 1000, "the deadline, not the attempt count, stopped it"


def test_call_with_timeout():
    assert call_with_timeout(lambda x: x * 2, 21, timeout=5, what="double") == 42
    with pytest.raises(BackendTimeout, match=r"libvirt lookup did not answer within 0\.1 s"):
        call_with_timeout(time.sleep, 5, timeout=0.1, what="libvirt lookup")
    with pytest.raises(KeyError):
        call_with_timeout({}.__getitem__, "k", timeout=5, what="lookup")
