"""DS rbd against the upstream way, on the lab's Ceph (issue 3's targets).

- cp of a 1 GiB raw file with 50% allocated data vs ``rbd import`` of the same file: >= 1.0x,
  and no staging copy on disk.
- clone of a 10 GiB image with 1 GiB allocated vs ``rbd cp`` (upstream's DS clone): >= 20x, and
  the same time with 0 and 1 GiB allocated.
- monitor with 10 and with 1000 images in the pool: one Ceph round trip either way.
"""

from __future__ import annotations

import base64
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from common import lab_bench, report
from one_drivers.lab.documents import ds_doc

GIB = 1 << 30
MIB = 1 << 20


def timed(argv: list[str], stdin: bytes = b"") -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return took


def rbd_cli(env: dict[str, str]) -> list[str]:
    return ["rbd", "--conf", env["CEPH_CONF"], "--id", env["ONE_LAB_CEPH_USER"],
            "--keyring", env["ONE_LAB_CEPH_KEYRING"]]


def remove(ioctx: Any, *names: str) -> None:
    import rbd

    for name in names:
        try:
            with rbd.Image(ioctx, name) as image:
                for snap in list(image.list_snaps()):
                    image.remove_snap(snap["name"])
            rbd.RBD().remove(ioctx, name)
        except rbd.ImageNotFound:
            continue


def half_allocated_file(path: Path, size: int) -> None:
    block = os.urandom(4 * MIB)
    with open(path, "wb") as fh:
        for off in range(0, size, 8 * MIB):  # data, hole, data, hole...
            fh.seek(off)
            fh.write(block)
        fh.truncate(size)


def bench_cp(env: dict[str, str], remotes: Path, ioctx: Any, work: Path, runs: int) -> float:
    src = work / "disk.raw"
    half_allocated_file(src, GIB)
    staging = work / "staging"
    staging.mkdir()
    ours, theirs = [], []
    for i in range(runs):
        iid = 990_000 + i
        doc = ds_doc(env, iid, image={"PATH": str(src)},
                     ds={"SAFE_DIRS": str(work), "STAGING_DIR": str(staging)})
        ours.append(timed([str(remotes / "datastore/rbd/cp"), str(iid)],
                          base64.b64encode(doc.encode())))
        assert not any(staging.iterdir()), "cp staged a raw image"
        theirs.append(timed([*rbd_cli(env), "import", str(src), f"one/bench-import-{i}"]))
        remove(ioctx, f"one-{iid}", f"bench-import-{i}")
    a, b = statistics.median(ours), statistics.median(theirs)
    report(f"cp: 1 GiB raw, 50% allocated ({runs} runs each)", "datastore/rbd/cp", a,
           "rbd import (same file, same user)", b)
    print(f"  ratio {b / a:.2f}x (target >= 1.0), staging files written: 0")
    return b / a


def bench_clone(env: dict[str, str], remotes: Path, ioctx: Any, runs: int) -> float:
    import rbd

    results: dict[str, float] = {}
    for label, allocated in (("empty", 0), ("1 GiB allocated", GIB)):
        src_id = 991_000 + allocated // GIB
        name = f"one-{src_id}"
        rbd.RBD().create(ioctx, name, 10 * GIB)
        with rbd.Image(ioctx, name) as image:
            block = os.urandom(4 * MIB)
            for off in range(0, allocated, 4 * MIB):
                image.write(block, off * 10)  # spread over the 10 GiB
        ours = []
        for i in range(runs):
            new_id = 992_000 + i
            doc = ds_doc(env, new_id, image={"PATH": f"one/{name}"})
            ours.append(timed([str(remotes / "datastore/rbd/clone"), str(new_id)],
                              base64.b64encode(doc.encode())))
            remove(ioctx, f"one-{new_id}")
        results[label] = statistics.median(ours)
        if allocated:
            theirs = timed([*rbd_cli(env), "cp", f"one/{name}", "one/bench-copy"])
            remove(ioctx, "bench-copy")
            results["rbd cp"] = theirs
        remove(ioctx, name)
    report(f"clone: 10 GiB image ({runs} runs each)", "datastore/rbd/clone, 1 GiB allocated",
           results["1 GiB allocated"], "rbd cp (upstream's clone), 1 GiB allocated",
           results["rbd cp"])
    print(f"  datastore/rbd/clone, empty source: {results['empty'] * 1000:.1f} ms")
    ratio = results["rbd cp"] / results["1 GiB allocated"]
    print(f"  ratio {ratio:.1f}x (target >= 20x); empty vs 1 GiB allocated: "
          f"{results['empty'] * 1000:.0f} vs {results['1 GiB allocated'] * 1000:.0f} ms")
    return ratio


def bench_monitor(env: dict[str, str], remotes: Path, ioctx: Any, runs: int) -> float:
    import rbd

    doc = base64.b64encode(ds_doc(env).encode())
    created: list[str] = []
    medians = {}
    try:
        for count in (10, 1000):
            while len(created) < count:
                name = f"bench-mon-{len(created)}"
                rbd.RBD().create(ioctx, name, MIB)
                created.append(name)
            times = [timed([str(remotes / "datastore/rbd/monitor"), "100"], doc)
                     for _ in range(runs)]
            medians[count] = statistics.median(times)
    finally:
        remove(ioctx, *created)
    report(f"monitor ({runs} runs each): one 'df' round trip, no per-image scan",
           "datastore/rbd/monitor, 10 images", medians[10],
           "datastore/rbd/monitor, 1000 images", medians[1000])
    print(f"  1000/10 images time ratio {medians[1000] / medians[10]:.2f} (flat = 1.0)")
    return medians[1000] / medians[10]


def main() -> dict[str, float]:
    with lab_bench() as (env, ioctx, work):
        remotes = work / "remotes"
        return {
            "cp_vs_rbd_import": bench_cp(env, remotes, ioctx, work, runs=5),
            "clone_vs_rbd_cp": bench_clone(env, remotes, ioctx, runs=5),
            "monitor_1000_vs_10": bench_monitor(env, remotes, ioctx, runs=10),
        }


if __name__ == "__main__":
    main()
