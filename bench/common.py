"""Helpers for side-by-side benchmarks: alternate the two ways, report medians and the ratio."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def time_argv(argv: Sequence[str], stdin: bytes = b"", expect: int | None = 0) -> float:
    t = time.perf_counter()
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, check=False)
    took = time.perf_counter() - t
    if expect is not None and proc.returncode != expect:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}, expected {expect}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return took


def compare(ours: Callable[[], float], theirs: Callable[[], float], runs: int,
            warmup: int = 3) -> tuple[float, float]:
    """Medians (seconds) of ``runs`` interleaved runs of each, after a warm-up."""
    for _ in range(warmup):
        ours()
        theirs()
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(ours())
        b.append(theirs())
    return statistics.median(a), statistics.median(b)


def report(title: str, ours_label: str, ours: float, theirs_label: str, theirs: float) -> None:
    print(f"\n{title}")
    print(f"  {ours_label:<58} {ours * 1000:8.1f} ms (median)")
    print(f"  {theirs_label:<58} {theirs * 1000:8.1f} ms (median)")


@contextmanager
def lab_bench() -> Iterator[tuple[dict[str, str], Any, Path]]:
    """The lab's env (exported), an admin I/O context on its pool, and installed remotes."""
    import os
    import sys
    import tempfile

    import rados

    from one_drivers.core.remotes import install
    from one_drivers.lab.lab import Lab

    env = Lab().env()
    os.environ.update(env)
    cluster = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    ioctx = cluster.open_ioctx(env["ONE_LAB_CEPH_POOL"])
    try:
        with tempfile.TemporaryDirectory(prefix="one-drivers-bench-", dir="/var/tmp") as tmp:
            remotes = Path(tmp) / "remotes"
            install(remotes, python=sys.executable)
            yield env, ioctx, Path(tmp)
    finally:
        ioctx.close()
        cluster.shutdown()
