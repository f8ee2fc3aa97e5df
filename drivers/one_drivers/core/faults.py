"""Fault injection at step boundaries, for crash-safety tests (not sleeps, not mocks).

``ONE_DRIVERS_CRASH_AT=<point>`` makes the action die at that point as SIGKILL would (no cleanup,
no ``finally``); ``ONE_DRIVERS_FAULT_TRACE=<file>`` appends every point an action passes, so a
test can enumerate them and kill the action at each. Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import os

CRASH_AT = "ONE_DRIVERS_CRASH_AT"
TRACE = "ONE_DRIVERS_FAULT_TRACE"
KILLED = 137  # the exit status of a process killed by SIGKILL


def point(name: str) -> None:
    trace = os.environ.get(TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    if os.environ.get(CRASH_AT) == name:
        os._exit(KILLED)
