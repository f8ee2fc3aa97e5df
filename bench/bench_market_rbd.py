"""The ``rbd`` marketplace against upstream's way of doing the same work on the lab's Ceph
(issue 16's targets), a 10 GiB image holding 1 GiB of data:

- app creation: ours is what one_market runs, our datastore ``export`` then ``market/rbd/import``
  (a copy inside Ceph); upstream's ``http`` market from a ``ceph`` datastore is its export
  (``rbd export | md5sum`` when the image has no MD5) then its import, ``downloader.sh`` piping
  ``ssh <bridge> rbd export`` into ``ssh <market host> dd`` (here the lab's second host is both);
  ours also with CEPH_ACCESS=bridge, where the front-end never touches the data;
- app export into a datastore on the same cluster: ours is DS ``cp`` with the app's SOURCE (a
  clone); upstream's is the download of the app's file over http and ``rbd import``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import lab_bench, report
from one_drivers.core.xmlview import escape
from one_drivers.lab.documents import datastore_doc, ds_doc, elements

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import purge_image

MIB, GIB = 1 << 20, 1 << 30
MARKET_ID = 310


def timed(argv: list[str], *, stdin: bytes | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]}: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return took, proc.stdout.decode()


def pipeline(*argvs: list[str]) -> float:
    """``a | b | c`` without a shell: each stage's stdout feeds the next; every stage must
    succeed."""
    t = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    prev = None
    for argv in argvs:
        proc = subprocess.Popen(argv, stdin=prev, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        if prev is not None:
            prev.close()
        prev = proc.stdout
        procs.append(proc)
    if prev is not None:
        prev.read()
    for proc in procs:
        if proc.wait(timeout=3600) != 0:
            raise RuntimeError(f"{proc.args[0]} failed in a pipeline")
    return time.perf_counter() - t


def market_xml(env: dict[str, str], **extra: str) -> str:
    tmpl = {"POOL_NAME": env["ONE_LAB_CEPH_MARKET_POOL"], "CEPH_USER": env["ONE_LAB_CEPH_USER"],
            "CEPH_KEY": env["ONE_LAB_CEPH_KEYRING"], "CEPH_CONF": env["CEPH_CONF"], **extra}
    return (f"<MARKETPLACE><ID>{MARKET_ID}</ID><NAME>bench</NAME><MARKET_MAD>rbd</MARKET_MAD>"
            f"<ZONE_ID>0</ZONE_ID><TEMPLATE>{elements(tmpl)}</TEMPLATE></MARKETPLACE>")


def make_image(ioctx: Any, name: str) -> None:
    import rbd

    rbd.RBD().create(ioctx, name, 10 * GIB)
    with rbd.Image(ioctx, name) as image:  # 1 GiB of data, spread over the disk
        chunk = os.urandom(4 * MIB)
        for i in range(256):
            image.write(chunk, i * 40 * MIB)


def purge(ioctx: Any, names: list[str]) -> None:
    for name in names:
        purge_image(ioctx, name)


def ours_create(env: dict[str, str], remotes: Path, image_id: int, app_id: int,
                **market: str) -> tuple[float, str]:
    t = time.perf_counter()
    doc = ds_doc(env, image_id, image={"SOURCE": f"one/one-{image_id}"})
    _, exported = timed([str(remotes / "datastore/rbd/export"), str(image_id)],
                        stdin=base64.b64encode(doc.encode()))
    info = dict(re.findall(r"<(\w+)>([^<]*)</\1>", exported))
    extra = "".join(f"<{k}>{escape(info.get(k, ''))}</{k}>"
                    for k in ("IMPORT_SOURCE", "MD5", "SIZE", "FORMAT", "DISPOSE"))
    xml = (f"<MARKET_DRIVER_ACTION_DATA><MARKETPLACEAPP><ID>{app_id}</ID><NAME>b{app_id}</NAME>"
           "<TYPE>1</TYPE><TEMPLATE/></MARKETPLACEAPP>" + market_xml(env, **market)
           + f"<IMAGE><ID>{image_id}</ID><SOURCE>one/one-{image_id}</SOURCE></IMAGE>"
           + datastore_doc(env, 100) + extra + "</MARKET_DRIVER_ACTION_DATA>")
    _, out = timed([str(remotes / "market/rbd/import"), base64.b64encode(xml.encode()).decode(),
                    str(app_id)])
    return time.perf_counter() - t, re.findall(r'^SOURCE="([^"]+)"', out, re.M)[0]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def bench_market(env: dict[str, str], ioctx: Any, work: Path, runs: int = 2) -> dict[str, float]:
    import rados

    remotes = work / "remotes"
    ssh = ["ssh", "-F", env["ONE_DRIVERS_SSH_CONFIG"], env["ONE_LAB_SSH_HOST"]]
    rbd_cli = f"rbd --conf {env['CEPH_CONF']} --id {env['ONE_LAB_CEPH_USER']} " \
              f"--keyring {env['ONE_LAB_CEPH_KEYRING']}"
    rbd_local = rbd_cli.split()
    cluster = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    mioctx = cluster.open_ioctx(env["ONE_LAB_CEPH_MARKET_POOL"])
    res: dict[str, list[float]] = {"create": [], "create_bridge": [], "create_up": [],
                                   "export": [], "export_up": []}
    staging = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="bench-market-"))
    server, port = serve(staging)
    made: list[str] = []
    try:
        for run in range(runs):
            image_id = 88_000 + run
            make_image(ioctx, f"one-{image_id}")
            made.append(f"one-{image_id}")
            took, source = ours_create(env, remotes, image_id, 88_100 + run)
            res["create"].append(took)
            took, _ = ours_create(env, remotes, image_id, 88_200 + run, CEPH_ACCESS="bridge",
                                  BRIDGE_LIST=env["ONE_LAB_SSH_HOST"])
            res["create_bridge"].append(took)
            # upstream: export's checksum (no MD5 in the image), then downloader.sh's pipe
            app_file = staging / f"app-{run}"
            t = time.perf_counter()
            pipeline([*rbd_local, "export", f"one/one-{image_id}", "-"], ["md5sum"])
            pipeline([*ssh, f"{rbd_cli} export one/one-{image_id} -"],
                     [*ssh, f"dd of={app_file} bs=4M status=none"])
            res["create_up"].append(time.perf_counter() - t)

            # export into the datastore: ours a clone of the app, upstream download + import
            new_id = 88_300 + run
            doc = ds_doc(env, new_id, image={"UID": 0, "GID": 0, "PATH": source},
                         image_template={"FROM_APP": 1, "FROM_APP_MD5": "x"})
            doc = doc.replace("</DS_DRIVER_ACTION_DATA>",
                              market_xml(env) + "</DS_DRIVER_ACTION_DATA>")
            took, _ = timed([str(remotes / "datastore/rbd/cp"), str(new_id)],
                            stdin=base64.b64encode(doc.encode()))
            res["export"].append(took)
            made.append(f"one-{new_id}")
            t = time.perf_counter()
            pipeline(["curl", "-sf", f"http://127.0.0.1:{port}/{app_file.name}"],
                     [*rbd_local, "import", "-", f"one/bench-upstream-{run}"])
            res["export_up"].append(time.perf_counter() - t)
            made.append(f"bench-upstream-{run}")
            app_file.unlink()
    finally:
        server.shutdown()
        shutil.rmtree(staging, ignore_errors=True)
        purge(ioctx, made)
        import rbd

        purge(mioctx, [n for n in rbd.RBD().list(mioctx) if n.startswith(("one-app-881",
                                                                          "one-app-882"))])
        mioctx.close()
        cluster.shutdown()
    med = {k: statistics.median(v) for k, v in res.items()}
    report(f"market app creation: 10 GiB image with 1 GiB of data ({runs} runs)",
           "datastore/rbd/export + market/rbd/import (a copy in Ceph)", med["create"],
           "ceph export (rbd export | md5sum) + ssh rbd export | ssh dd", med["create_up"])
    print(f"  ratio {med['create_up'] / med['create']:.1f}x (target >= 3x); through a bridge "
          f"(CEPH_ACCESS=bridge, no byte on the front-end): {med['create_bridge']:.2f} s, "
          f"{med['create_up'] / med['create_bridge']:.1f}x")
    report(f"market app export into a datastore on the same cluster ({runs} runs)",
           "datastore/rbd/cp of the app's SOURCE (a clone)", med["export"],
           "download over http + rbd import", med["export_up"])
    print(f"  ratio {med['export_up'] / med['export']:.0f}x (target >= 50x, and < 5 s)")
    return {"market_create_vs_http_market": med["create_up"] / med["create"],
            "market_export_vs_download_import": med["export_up"] / med["export"],
            "market_export_s": med["export"]}


def main() -> dict[str, float]:
    with lab_bench() as (env, ioctx, work):
        return bench_market(env, ioctx, work)


if __name__ == "__main__":
    main()
