"""``one-drivers demo``: the lab up, its health, and real actions run as OpenNebula runs them.

The remotes tree is installed into the lab directory and each action is started as its shim with
argv and base64 stdin shaped like oned's, so what the demo shows is what a front-end would see.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

from one_drivers.core.remotes import install
from one_drivers.lab.documents import ds_doc
from one_drivers.lab.lab import Lab


def datastore_xml(ds_id: int, env: dict[str, str], **extra: str) -> str:
    """A datastore-only DS_DRIVER_ACTION_DATA for the lab (what monitor receives)."""
    return ds_doc(env, ds_id=ds_id, ds=extra)


def run_shim(remotes: Path, family: str, driver: str, action: str, argv: list[str],
             stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    shim = remotes / family / driver / action
    return subprocess.run([str(shim), *argv], input=stdin, capture_output=True, timeout=120,
                          check=False)


def _show(title: str, proc: subprocess.CompletedProcess[bytes], took: float) -> None:
    print(f"\n$ {title}   (exit {proc.returncode}, {took * 1000:.0f} ms)")
    for stream in (proc.stdout, proc.stderr):
        text = stream.decode(errors="replace").rstrip()
        if text:
            print("  " + text.replace("\n", "\n  "))


def run_demo() -> int:
    lab = Lab()
    print(f"== lab: bringing it up in {lab.root}")
    t = time.monotonic()
    timings = lab.up()
    print(f"lab up in {time.monotonic() - t:.1f}s; started: {timings or 'nothing (was healthy)'}")
    status = lab.status()
    print(json.dumps(status, indent=2))
    print("ceph:", json.dumps(lab.ceph.health()))
    if not status["healthy"]:
        print("the lab is not healthy; see the logs under", lab.root, file=sys.stderr)
        return 1

    remotes = lab.root / "remotes"
    report = install(remotes)
    print(f"\n== remotes installed in {remotes}: {len(report.written)} written, "
          f"{len(report.unchanged)} unchanged")
    env = lab.env()

    print("\n== datastore/rbd/monitor, as oned's DS MAD runs it (id in argv, base64 XML on stdin),"
          " as the restricted cephx user")
    doc = base64.b64encode(datastore_xml(100, env).encode())
    t = time.monotonic()
    proc = run_shim(remotes, "datastore", "rbd", "monitor", ["100"], doc)
    _show("datastore/rbd/monitor 100 <<< base64(DS_DRIVER_ACTION_DATA)", proc,
          time.monotonic() - t)
    if proc.returncode != 0:
        return 1

    print("\n== the same action with bad input: one plain line, a documented exit code")
    for label, data in (("not base64", b"%%%"), ("not XML", base64.b64encode(b"<oops"))):
        t = time.monotonic()
        bad = run_shim(remotes, "datastore", "rbd", "monitor", ["100"], data)
        _show(f"datastore/rbd/monitor 100 <<< {label}", bad, time.monotonic() - t)
    denied = datastore_xml(100, env, CEPH_USER="admin")
    t = time.monotonic()
    bad = run_shim(remotes, "datastore", "rbd", "monitor", ["100"],
                   base64.b64encode(denied.encode()))
    _show("datastore/rbd/monitor 100 <<< CEPH_USER=admin with the 'one' user's key", bad,
          time.monotonic() - t)
    print("\nDone. `make lab-down` stops the lab.")
    return 0
