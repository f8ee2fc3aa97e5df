"""Fault injection at step boundaries, for crash-safety tests (not sleeps, not mocks).

``ONE_DRIVERS_CRASH_AT=<point>`` makes the action die at that point as SIGKILL would (no cleanup,
no ``finally``); ``ONE_DRIVERS_FAULT_TRACE=<file>`` appends every point an action passes, so a
test can enumerate them and kill the action at each; ``ONE_DRIVERS_PAUSE_AT=<point>=<file>``
holds the action at that point while ``<file>`` exists (it creates it), so a test can act on an
action in progress (cancel it) without guessing how long it takes. Unset, a point costs a few
dict lookups.
"""

from __future__ import annotations

import os

CRASH_AT = "ONE_DRIVERS_CRASH_AT"
TRACE = "ONE_DRIVERS_FAULT_TRACE"
PAUSE_AT = "ONE_DRIVERS_PAUSE_AT"
KILLED = 137  # the exit status of a process killed by SIGKILL


def point(name: str) -> None:
    trace = os.environ.get(TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    if os.environ.get(CRASH_AT) == name:
        os._exit(KILLED)
    pause = os.environ.get(PAUSE_AT, "")
    if pause.startswith(name + "="):
        import time

        marker = pause.split("=", 1)[1]
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        while os.path.exists(marker):  # a signal (a cancel) ends it like any action's step
            time.sleep(0.05)
