"""What the ``libvirt`` VMM actions share: settings with the lab's environment defaults, and the
hypervisor of the action's host."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.vmm.libvirt.connection import Hypervisor, hypervisor

# VIR_DOMAIN_* states
RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = 1, 2, 3, 4, 5, 6, 7


def resolved(settings: Settings) -> Settings:
    """Settings with the environment's defaults (the lab sets them) where the config is empty."""
    env = {"DOMAIN_TYPE": os.environ.get("ONE_DRIVERS_DOMAIN_TYPE", ""),
           "CEPH_CONF": os.environ.get("CEPH_CONF") or "/etc/ceph/ceph.conf"}
    return settings.over({k: v for k, v in env.items() if v and not settings.get(k)})


@contextmanager
def host_hypervisor(call: Call, uri: str | None = None) -> Iterator[Hypervisor]:
    with hypervisor(resolved(call.settings), call.deadline, call.subject, uri) as hv:
        yield hv
