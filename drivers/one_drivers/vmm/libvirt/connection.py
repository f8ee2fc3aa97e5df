"""One libvirt connection per action, every call bounded, libvirt's errors turned into ours.

libvirt-python calls have no timeout of their own: each goes through
:func:`one_drivers.core.retry.call_with_timeout` capped by the action's deadline, and errors that
mean "try again" (a busy domain, a dropped RPC) are retried with tenacity inside it. libvirt's
default error handler prints to stderr; it is silenced so only our one line reaches OpenNebula.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from one_drivers.core.config import Settings
from one_drivers.core.errors import (
    ActionFailed,
    BackendUnavailable,
    NotFound,
    PermissionDenied,
)
from one_drivers.core.retry import LIBVIRT, Deadline, call_with_timeout, retrying

T = TypeVar("T")
DEFAULT_URI = "qemu:///system"


class Transient(Exception):
    """A libvirt error of a kind :data:`one_drivers.core.retry.LIBVIRT` may retry."""

    def __init__(self, text: str, kind: str) -> None:
        super().__init__(text)
        self.kind = kind


def _kind_names(lv: Any) -> dict[int, str]:
    return {getattr(lv, n): n for n in dir(lv) if n.startswith("VIR_ERR_")
            and isinstance(getattr(lv, n), int)}


def _libvirt() -> Any:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def uri_for(settings: Settings) -> str:
    return settings.get("LIBVIRT_URI") or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


class Hypervisor:
    """libvirt on this host for one action: ``Hypervisor(settings, deadline, subject)``."""

    def __init__(self, settings: Settings, deadline: Deadline, subject: str,
                 uri: str | None = None) -> None:
        self.settings = settings
        self.deadline = deadline
        self.subject = subject
        self.uri = uri or uri_for(settings)
        self.lv = _libvirt()
        self.kinds = _kind_names(self.lv)
        self.call_timeout = settings.float("LIBVIRT_TIMEOUT", 30)
        self.conn = self.retryable(self.lv.open, self.uri,
                                   what=f"connecting to libvirt at {self.uri}")

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # closing a dead connection is not a failure
            return

    def call(self, fn: Callable[..., T], *args: Any, what: str,
             timeout: float | None = None, idempotent: bool = False) -> T:
        """``fn(*args)`` with a timeout (LIBVIRT_TIMEOUT unless given), errors translated, and
        retried as :data:`~one_drivers.core.retry.LIBVIRT` says: ``idempotent`` calls (reads,
        set-to-a-value, destroy) also after errors whose outcome is unknown."""
        policy = retrying(self.deadline, retry_on=(Transient,), what=what,
                          max_attempts=LIBVIRT.max_attempts,
                          retry_if=lambda exc: LIBVIRT.retries(
                              getattr(exc, "kind", ""), idempotent=idempotent))
        try:
            for attempt in policy:
                with attempt:
                    limit = self.deadline.cap(timeout or self.call_timeout, what)
                    try:
                        return call_with_timeout(fn, *args, timeout=limit, what=what)
                    except self.lv.libvirtError as exc:
                        raise self._translate(exc, what) from None
        except Transient as exc:
            if exc.kind == "VIR_ERR_RPC":
                raise BackendUnavailable(f"libvirt at {self.uri} went away during {what} ({exc})",
                                         subject=self.subject) from None
            raise ActionFailed(f"{what} failed: {exc}", subject=self.subject) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, exc: Any, what: str) -> Exception:
        lv = self.lv
        code = exc.get_error_code()
        text = " ".join((exc.get_error_message() or str(exc)).split())
        if code in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_NO_DOMAIN_SNAPSHOT):
            return NotFound(f"{what}: {text}", subject=self.subject)
        if code in (lv.VIR_ERR_AUTH_FAILED, lv.VIR_ERR_AUTH_CANCELLED, lv.VIR_ERR_ACCESS_DENIED):
            return PermissionDenied(f"{what}: libvirt refused: {text}", subject=self.subject)
        if code in (lv.VIR_ERR_NO_CONNECT, lv.VIR_ERR_SYSTEM_ERROR) and "connect" in text.lower():
            return BackendUnavailable(f"cannot reach libvirt at {self.uri} ({text})",
                                      subject=self.subject, hint="is libvirtd running?")
        kind = self.kinds.get(code, "")
        if kind in LIBVIRT.not_started | LIBVIRT.unknown_outcome:
            return Transient(text, kind)
        if code == lv.VIR_ERR_INTERNAL_ERROR and "connection" in text.lower():
            return BackendUnavailable(f"libvirt at {self.uri} went away ({text})",
                                      subject=self.subject)
        return ActionFailed(f"{what} failed: {text}", subject=self.subject)

    def retryable(self, fn: Callable[..., T], *args: Any, what: str,
                  timeout: float | None = None) -> T:
        """:meth:`call` for a call that may be repeated (a read, a set-to-a-value, destroy):
        retried also after errors whose outcome is unknown."""
        return self.call(fn, *args, what=what, timeout=timeout, idempotent=True)

    # -- domains ------------------------------------------------------------------------------
    def domain(self, deploy_id: str) -> Any | None:
        """The domain with this UUID (or name), None when it does not exist."""
        lookup = (self.conn.lookupByUUIDString if _is_uuid(deploy_id)
                  else self.conn.lookupByName)
        try:
            return self.retryable(lookup, deploy_id, what=f"looking up domain {deploy_id}")
        except NotFound:
            return None

    def require(self, deploy_id: str) -> Any:
        dom = self.domain(deploy_id)
        if dom is None:
            raise NotFound(f"domain {deploy_id} does not exist on {self.uri}",
                           subject=self.subject)
        return dom

    def state(self, dom: Any) -> int | None:
        """libvirt's VIR_DOMAIN_* state; None when the domain is gone (a transient one that
        stopped)."""
        try:
            state: int = self.retryable(dom.state, 0, what="reading the domain state")[0]
            return state
        except NotFound:
            return None

    def wait_until(self, check: Callable[[], bool], *, seconds: float, interval: float = 0.2
                   ) -> bool:
        """Poll ``check`` for at most ``seconds`` (within the deadline); True once it holds."""
        end = time.monotonic() + min(seconds, self.deadline.remaining())
        while True:
            if check():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(interval)


def _is_uuid(text: str) -> bool:
    parts = text.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12]


@contextmanager
def hypervisor(settings: Settings, deadline: Deadline, subject: str,
               uri: str | None = None) -> Iterator[Hypervisor]:
    hv = Hypervisor(settings, deadline, subject, uri)
    try:
        yield hv
    finally:
        hv.close()

