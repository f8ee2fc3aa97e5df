"""Start-up cost: an action that fails at once on missing input, against ``python -c pass``.

Target (issue 2): less than 50 ms more than the bare interpreter, same interpreter, same flags.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from common import compare, report, time_argv
from one_drivers.core.remotes import install

RUNS = 60
TARGET_MS = 50.0


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        install(Path(tmp), python=sys.executable)
        shim = str(Path(tmp) / "datastore" / "rbd" / "monitor")
        ours, bare = compare(
            lambda: time_argv([shim, "100"], b"", expect=3),
            lambda: time_argv([sys.executable, "-I", "-c", "pass"]),
            RUNS,
        )
    report(f"start-up: failing action vs bare interpreter ({RUNS} interleaved runs each)",
           "datastore/rbd/monitor shim, empty stdin (exit 3)", ours,
           "python -I -c pass", bare)
    diff_ms = (ours - bare) * 1000
    verdict = "meets" if diff_ms < TARGET_MS else "MISSES"
    print(f"  ratio {ours / bare:.2f}x, difference {diff_ms:+.1f} ms "
          f"({verdict} the < {TARGET_MS:g} ms target)")
    no_site = statistics.median(time_argv([sys.executable, "-IS", "-c", "pass"])
                                for _ in range(RUNS))
    print(f"  (the shim skips 'site' like python -IS -c pass, {no_site * 1000:.1f} ms: our own "
          f"cost is {(ours - no_site) * 1000:+.1f} ms over that)")
    return {"startup_ratio": ours / bare, "startup_diff_ms": diff_ms}


if __name__ == "__main__":
    main()
