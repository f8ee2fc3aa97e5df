"""OpenFlow changes through ``ovs-ofctl --bundle``: all of one bridge's changes in one atomic
bundle (OpenFlow 1.4), so a VM's rules are swapped, never half-replaced. ovsdbapp does not speak
OpenFlow and a bundle of hundreds of flows costs one short process."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable

from one_drivers.core.errors import ActionFailed, BackendTimeout, BackendUnavailable

DEFAULT_RUNDIR = "/var/run/openvswitch"


def run_dir(ovsdb: str, configured: str | None = None) -> str:
    """Where the bridges' OpenFlow sockets are: configured, else next to a unix OVSDB socket."""
    if configured:
        return configured
    if ovsdb.startswith("unix:"):
        return os.path.dirname(ovsdb[5:])
    return DEFAULT_RUNDIR


class OpenFlow:
    def __init__(self, rundir: str, timeout: float) -> None:
        self.rundir = rundir
        self.timeout = timeout

    def target(self, bridge: str) -> str:
        return f"unix:{os.path.join(self.rundir, bridge)}.mgmt"

    def _run(self, bridge: str, args: list[str], stdin: str | None = None) -> str:
        """Run ovs-ofctl; a bridge socket that is not there yet (ovs-vswitchd still starting or
        re-reading the database) is waited for within the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self._run_once(bridge, args, stdin)
            except BackendUnavailable:
                if time.monotonic() + 0.2 > deadline:
                    raise
                time.sleep(0.2)

    def _run_once(self, bridge: str, args: list[str], stdin: str | None) -> str:
        argv = ["ovs-ofctl", f"--timeout={max(1, int(self.timeout))}", *args]
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  timeout=self.timeout + 2, check=False)
        except subprocess.TimeoutExpired:
            raise BackendTimeout(f"ovs-ofctl on bridge {bridge} took over {self.timeout:g} s")\
                from None
        except FileNotFoundError:
            raise ActionFailed("ovs-ofctl is not installed",
                               hint="install openvswitch-switch") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            if "Connection refused" in last or "No such file" in last:
                raise BackendUnavailable(f"cannot reach bridge {bridge}'s OpenFlow socket "
                                         f"({last})", hint="is ovs-vswitchd running?")
            raise ActionFailed(f"OpenFlow change on bridge {bridge} failed: {last}")
        return proc.stdout

    def apply(self, bridge: str, bundle_text: str) -> None:
        """Apply a :func:`one_drivers.ovs.flows.bundle` (flow and group changes) to ``bridge``,
        all or nothing."""
        self._run(bridge, ["-O", "OpenFlow14", "bundle", self.target(bridge), "-"], bundle_text)

    def set_flooding(self, bridge: str, ofports: Iterable[int], flood: bool) -> None:
        """NORMAL's flooding to these ports on or off (OpenFlow port config, not in OVSDB:
        re-applied by every action and by reconcile after ovs-vswitchd restarts), on one
        in-process OpenFlow connection (:mod:`portmod`)."""
        from one_drivers.ovs.portmod import set_flooding

        ports = list(ofports)
        if ports:
            set_flooding(self.target(bridge)[5:], bridge, ports, flood=flood,
                         timeout=self.timeout)

    def cookies(self, bridge: str, cookie: int, mask: int) -> set[int]:
        """The cookies of the flows on ``bridge`` matching cookie/mask."""
        out = self._run(bridge, ["dump-flows", "--no-stats", self.target(bridge),
                                 f"cookie=0x{cookie:x}/0x{mask:x}"])
        found = set()
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("cookie="):
                found.add(int(line.split(",", 1)[0][7:], 16))
        return found
