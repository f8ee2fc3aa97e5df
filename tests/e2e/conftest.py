"""``make e2e``: our drivers under a real oned. Skipped, with the reason, when no OpenNebula
install is given (``make test`` stays offline and needs none)."""

from __future__ import annotations

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
        yield cloud
    finally:
        cloud.clean_up()  # what a failed step left, removed through oned and our drivers
        cloud.stop()
