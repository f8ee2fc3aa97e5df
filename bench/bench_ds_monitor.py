"""DS monitor: our action process against upstream's way, in the lab.

Upstream runs ``ceph df detail --format xml`` on a bridge over ssh, then parses the XML with
shell tools (about 877 ms measured under a real oned, lab-facts.md). Here we time only the part
that stays even without ssh and Ruby: the ``ceph`` CLI run as the same restricted user, so the
ratio is a lower bound of the real gain.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
from pathlib import Path

from common import compare, report, time_argv
from one_drivers.core.remotes import install
from one_drivers.demo import datastore_xml
from one_drivers.lab.lab import Lab

RUNS = 20


def main() -> dict[str, float]:
    env = Lab().env()
    os.environ.update(env)
    doc = base64.b64encode(datastore_xml(100, env).encode())
    cli = ["ceph", "--conf", env["CEPH_CONF"], "--id", env["ONE_LAB_CEPH_USER"], "--keyring",
           env["ONE_LAB_CEPH_KEYRING"], "df", "detail", "--format", "xml"]
    with tempfile.TemporaryDirectory() as tmp:
        install(Path(tmp), python=sys.executable)
        shim = str(Path(tmp) / "datastore" / "rbd" / "monitor")
        ours, theirs = compare(lambda: time_argv([shim, "100"], doc),
                               lambda: time_argv(cli), RUNS)
    report(f"DS monitor ({RUNS} interleaved runs each)",
           "datastore/rbd/monitor (whole action, librados)", ours,
           "upstream's core step: ceph df detail CLI (no ssh, no parsing)", theirs)
    print(f"  ratio {theirs / ours:.1f}x faster than upstream's core step alone "
          f"(upstream's whole action: ~877 ms, {0.877 / ours:.0f}x)")
    return {"ds_monitor_speedup": theirs / ours}


if __name__ == "__main__":
    main()
