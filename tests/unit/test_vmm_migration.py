"""How a migration's outcome is judged (fakes of the two hypervisors: pure decision logic)."""

from __future__ import annotations

import pytest

from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed
from one_drivers.vmm.libvirt import migrate

RUNNING, PAUSED = 1, 3


class FakeDomain:
    def __init__(self, state: int) -> None:
        self.current = state
        self.calls: list[str] = []

    def destroy(self) -> None:
        self.calls.append("destroy")
        self.current = 0

    def resume(self) -> None:
        self.calls.append("resume")
        self.current = RUNNING


class FakeHv:
    def __init__(self, dom: FakeDomain | None) -> None:
        self.dom = dom

    def domain(self, deploy_id: str) -> FakeDomain | None:
        return self.dom if self.dom is not None and self.dom.current else None

    def state(self, dom: FakeDomain) -> int | None:
        return dom.current or None

    def call(self, fn, *args, what: str, timeout: float | None = None,
             idempotent: bool = False):
        return fn(*args)

    retryable = call


def judge(src: FakeDomain | None, dst: FakeDomain | None) -> None:
    call = Call("vmm", "libvirt", "migrate", {"deploy_id": "u", "dst_host": "n2"})
    migrate._judge_failure(call, FakeHv(src), FakeHv(dst), src,  # type: ignore[arg-type]
                           ActionFailed("connection reset after the switch-over"))


def test_an_error_after_the_guest_runs_on_the_destination_is_success():
    src, dst = FakeDomain(PAUSED), FakeDomain(RUNNING)
    judge(src, dst)  # no exception: migrated, with a warning
    assert src.calls == ["destroy"] and dst.calls == []


def test_an_error_before_leaves_the_source_running_and_the_destination_clean():
    src, dst = FakeDomain(PAUSED), FakeDomain(PAUSED)
    with pytest.raises(ActionFailed, match="connection reset"):
        judge(src, dst)
    assert dst.calls == ["destroy"] and src.calls == ["resume"]


def test_a_guest_still_running_on_the_source_is_not_migrated():
    src, dst = FakeDomain(RUNNING), FakeDomain(RUNNING)  # e.g. the same libvirt twice
    with pytest.raises(ActionFailed):
        judge(src, dst)
    assert src.calls == []
