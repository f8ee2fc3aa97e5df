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


def test_policies_retry_by_kind_and_by_what_the_call_is():
    from one_drivers.core.retry import LIBVIRT, SSH

    assert LIBVIRT.retries("VIR_ERR_OPERATION_TIMEOUT", idempotent=False), "never started"
    assert not LIBVIRT.retries("VIR_ERR_RPC", idempotent=False), "a migrate is not repeated"
    assert LIBVIRT.retries("VIR_ERR_RPC", idempotent=True)
    assert not LIBVIRT.retries("VIR_ERR_OPERATION_FAILED", idempotent=True), "by kind only"
    assert SSH.retries("exit-255", idempotent=True) and not SSH.retries("exit-255",
                                                                         idempotent=False)


class _LibvirtError(Exception):
    """Stands for libvirt.libvirtError (a unit test: no libvirtd here)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return self.text


def _hypervisor():
    import libvirt

    from one_drivers.vmm.libvirt import connection

    hv = object.__new__(connection.Hypervisor)
    hv.lv = type("lv", (), {k: getattr(libvirt, k) for k in dir(libvirt)
                            if k.startswith("VIR_ERR_")} | {"libvirtError": _LibvirtError})
    hv.kinds = connection._kind_names(libvirt)
    hv.deadline, hv.subject, hv.call_timeout, hv.uri = Deadline(30), "VM 1", 5, "qemu:///test"
    return hv


def test_libvirt_calls_are_retried_by_error_code_never_by_its_text():
    import libvirt

    from one_drivers.core.errors import ActionFailed, BackendUnavailable

    hv = _hypervisor()
    calls = []

    def failing(code: int, text: str, times: int):
        def fn():
            calls.append(code)
            if len(calls) <= times:
                raise _LibvirtError(code, text)
            return "done"
        return fn

    # the job lock was busy: nothing started, so even a non-idempotent call is tried again
    assert hv.call(failing(libvirt.VIR_ERR_OPERATION_TIMEOUT, "cannot acquire state change "
                                                              "lock", 2), what="attach") == "done"
    assert len(calls) == 3
    # a dropped RPC during a migration is not repeated; during a read it is
    calls.clear()
    with pytest.raises(BackendUnavailable):
        hv.call(failing(libvirt.VIR_ERR_RPC, "rpc", 1), what="migrate")
    assert len(calls) == 1
    calls.clear()
    assert hv.retryable(failing(libvirt.VIR_ERR_RPC, "rpc", 1), what="read") == "done"
    assert len(calls) == 2
    # "in use" in a message is not a cause: one try
    calls.clear()
    with pytest.raises(ActionFailed):
        hv.retryable(failing(libvirt.VIR_ERR_OPERATION_FAILED, "device is busy, in use", 1),
                     what="detach")
    assert len(calls) == 1
