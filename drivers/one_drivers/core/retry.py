"""Time limits and retries.

Every action runs under a :class:`Deadline`; every backend call gets a timeout no longer than what
is left of it; transient errors are retried with tenacity inside that deadline, never beyond.
tenacity is imported lazily: an action that fails on bad input never pays for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from one_drivers.core import log
from one_drivers.core.errors import BackendTimeout

if TYPE_CHECKING:
    import tenacity

T = TypeVar("T")


class Deadline:
    """A point in (monotonic) time by which the whole action must be done."""

    def __init__(self, seconds: float, what: str = "action") -> None:
        self.seconds = seconds
        self.what = what
        self.started = time.monotonic()
        self.expires = self.started + seconds

    def retime(self, seconds: float) -> None:
        """The limit a more specific layer (a datastore template) sets, counted from the start."""
        self.seconds = seconds
        self.expires = self.started + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def cap(self, seconds: float, doing: str = "") -> float:
        """A per-call timeout: ``seconds`` or what is left, whichever is shorter."""
        left = self.remaining()
        if left <= 0:
            raise BackendTimeout(
                f"{self.what} ran out of its {self.seconds:g} s time limit"
                + (f" before {doing}" if doing else ""),
                hint="raise ACTION_TIMEOUT in the driver configuration if the backend is slow",
            )
        return min(seconds, left)


def action_timeout(action: str, settings: Any, default: float) -> float:
    """``<ACTION>_TIMEOUT``, else ``ACTION_TIMEOUT``, else ``default``, from ``settings``."""
    value: float = settings.float(f"{action.upper().replace('.', '_')}_TIMEOUT",
                                  settings.float("ACTION_TIMEOUT", default))
    return value


class RetryPolicy(NamedTuple):
    """Which errors of a backend are worth another try, by the backend's own error kinds (never
    by message text). ``not_started``: the call provably did nothing (it could not take the
    domain's job lock, say): retried whatever the call. ``unknown_outcome``: it may have
    happened (a dropped RPC): retried only for idempotent calls, where twice is once; a
    migration, a device attach or a domain creation is never repeated after one of these."""

    backend: str
    not_started: frozenset[str]
    unknown_outcome: frozenset[str]
    max_attempts: int = 6

    def retries(self, kind: str, *, idempotent: bool) -> bool:
        return kind in self.not_started or (idempotent and kind in self.unknown_outcome)


LIBVIRT = RetryPolicy(
    "libvirt",
    # "cannot acquire state change lock": another job holds the domain, ours never began
    not_started=frozenset({"VIR_ERR_OPERATION_TIMEOUT"}),
    unknown_outcome=frozenset({"VIR_ERR_RPC", "VIR_ERR_AGENT_UNRESPONSIVE"}),
)
# ssh says only "255": the connection failed, before or while the command ran
SSH = RetryPolicy("ssh", not_started=frozenset(), unknown_outcome=frozenset({"exit-255"}),
                  max_attempts=3)


def retrying(
    deadline: Deadline,
    *,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    max_attempts: int = 8,
    max_wait: float = 2.0,
    retry_if: Callable[[BaseException], bool] | None = None,
) -> tenacity.Retrying:
    """A tenacity policy for transient errors: jittered exponential back-off, bounded by the
    deadline and an attempt count, original exception re-raised when it gives up. ``retry_if``
    narrows ``retry_on`` (a :class:`RetryPolicy`'s decision)."""
    import tenacity

    class _stop_at_deadline(tenacity.stop.stop_base):
        def __call__(self, state: tenacity.RetryCallState) -> bool:
            return deadline.remaining() <= 0

    def _announce(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info(f"{what} failed ({exc}); retry {state.attempt_number} of {max_attempts - 1}")

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_attempts) | _stop_at_deadline(),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=max_wait),
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, retry_on) and (retry_if is None or retry_if(exc))),
        before_sleep=_announce,
        reraise=True,
    )


def call_with_timeout(fn: Callable[..., T], *args: Any, timeout: float, what: str) -> T:
    """Run a blocking call that has no timeout of its own in a worker thread.

    If it does not return in time we raise and leave the thread behind: the action process exits
    soon after, which is the only safe way to abandon a call stuck inside a C library.
    """
    import threading  # only calls without a timeout of their own pay for it

    result: list[T] = []
    error: list[BaseException] = []

    def _target() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    worker = threading.Thread(target=_target, name=what, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise BackendTimeout(f"{what} did not answer within {timeout:g} s",
                             hint="check that the service is up and reachable")
    if error:
        raise error[0]
    return result[0]
