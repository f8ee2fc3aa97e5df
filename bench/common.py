"""Helpers for side-by-side benchmarks: alternate the two ways, report medians and the ratio."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


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
