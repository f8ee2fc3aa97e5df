"""``make e2e``: our drivers under a real oned. Skipped, with the reason, when no OpenNebula
install is given (``make test`` stays offline and needs none)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.opennebula import OpenNebula

LOCATION = "ONE_DRIVERS_E2E_LOCATION"


@pytest.fixture(scope="session")
def one(lab_env: dict[str, str]) -> Iterator[OpenNebula]:
    where = os.environ.get(LOCATION)
    if not where:
        pytest.skip(f"e2e: {LOCATION} names no OpenNebula install (make e2e sets it)")
    location = Path(where)
    if not (location / "bin" / "oned").exists():
        pytest.skip(f"e2e: no OpenNebula at {location} (a self-contained install of oned built "
                    "from OpenNebula's source: see README, 'A real oned')")
    cloud = OpenNebula(location, Path("/var/tmp/one-drivers-e2e"), lab_env)
    cloud.install()
    cloud.start()
    try:
        with lab_hosts_for_plain_ssh(lab_env):
            yield cloud
    finally:
        cloud.clean_up()  # what a failed step left, removed through oned and our drivers
        cloud.stop()


SYSTEM_SSH_INCLUDE = Path("/etc/ssh/ssh_config.d/one-drivers-lab.conf")


@contextlib.contextmanager
def lab_hosts_for_plain_ssh(lab_env: dict[str, str]) -> Iterator[None]:
    """Upstream's shell drivers (rsync's monitor, rsync run on a host) call /usr/bin/ssh with
    a PATH of their own, so they read only the system's and the passwd user's ssh
    configuration, as on a real cloud where oneadmin's ~/.ssh reaches every host. For the
    test's run, the system configuration includes the lab's, which names only the lab's own
    hosts (10.254.0.x, one-lab-host*): nothing else this machine reaches changes."""
    mark = "# written by one-drivers' make e2e for its run; removed when it ends\n"
    if SYSTEM_SSH_INCLUDE.exists() and not SYSTEM_SSH_INCLUDE.read_text().startswith(mark):
        raise RuntimeError(f"{SYSTEM_SSH_INCLUDE} exists and is not ours: left alone")
    SYSTEM_SSH_INCLUDE.write_text(f"{mark}Include {lab_env['ONE_DRIVERS_SSH_CONFIG']}\n")
    try:
        yield
    finally:
        SYSTEM_SSH_INCLUDE.unlink(missing_ok=True)
