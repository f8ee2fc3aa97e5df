"""A small oned stand-in for the lab: serves recorded documents over XML-RPC.

``one.vm.info``, ``one.datastore.info``, ``one.image.info``, ``one.market.info``,
``one.vn.info``, ``one.grouppool.info``, ``one.userpool.info`` and ``one.vnpool.info`` answer as
oned does (``[ok, xml-or-message, code]``) from ``<dir>/<kind>/<id>.xml`` (pools:
``<kind>/0.xml``), read on every call so tests can record documents while it runs; the session
must match the lab's one_auth.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from one_drivers.lab.proc import LabError, alive, read_pid, spawn, stop, wait_for

PORT = 12633
AUTHENTICATION, NO_EXISTS = 0x0100, 0x0400
Answer = list[bool | str | int]


class OnedStandin:
    """The lab component: start, stop, and where tests record documents."""

    def __init__(self, root: Path, port_offset: int = 0) -> None:
        self.dir = root / "oned"
        self.port = PORT + port_offset
        self.pidfile = self.dir / "oned-standin.pid"
        self.auth = self.dir / "one_auth"

    def env(self) -> dict[str, str]:
        return {"ONE_XMLRPC": f"http://127.0.0.1:{self.port}/RPC2", "ONE_AUTH": str(self.auth),
                "ONE_LAB_ONED_DIR": str(self.dir)}

    def record(self, kind: str, obj_id: int, xml: str) -> None:
        """Make the stand-in answer ``xml`` for that VM or datastore from now on."""
        path = self.dir / kind / f"{obj_id}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(xml)
        tmp.replace(path)

    def running(self) -> bool:
        return alive(read_pid(self.pidfile))

    def healthy(self) -> bool:
        if not self.running():
            return False
        from one_drivers.core.errors import DriverError, NotFound
        from one_drivers.core.oned import Oned

        oned = Oned(self.env()["ONE_XMLRPC"], self.auth.read_text().strip(), timeout=2)
        # the newest method it serves: a stand-in of an older checkout is restarted
        for probe in (lambda: oned.vm(-1),
                      lambda: oned.call("one.vn.info", oned.session, -1, False)):
            try:
                probe()
            except NotFound:
                continue
            except (DriverError, OSError):
                return False
        return True

    def up(self) -> None:
        self.down()
        for sub in ("vm", "datastore"):  # recorded documents do not survive a restart
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.auth.write_text("oneadmin:lab-secret\n")
        self.auth.chmod(0o600)
        spawn([sys.executable, "-m", "one_drivers.lab.oned_standin", "--dir", str(self.dir),
               "--port", str(self.port)], log=self.dir / "oned-standin.log",
              pidfile=self.pidfile)

        def serving() -> bool:
            if not self.running():
                raise LabError(f"the oned stand-in exited; see {self.dir}/oned-standin.log")
            return self.healthy()

        wait_for(serving, timeout=15, what="the oned stand-in", interval=0.05)

    def down(self) -> list[str]:
        return ["oned-standin"] if stop(self.pidfile) else []


def serve(directory: Path, port: int) -> None:
    session = (directory / "one_auth").read_text().strip()

    def info(kind: str, method: str, sess: str, obj_id: int, decrypt: bool = False) -> Answer:
        if sess != session:
            return [False, f"[{method}] User couldn't be authenticated, aborting call.",
                    AUTHENTICATION]
        path = directory / kind / f"{int(obj_id)}.xml"
        if not path.exists():
            what = {"vm": "virtual machine"}.get(kind, kind)
            return [False, f"[{method}] Error getting {what} [{obj_id}].", NO_EXISTS]
        return [True, path.read_text(), 0]

    class Quiet(SimpleXMLRPCRequestHandler):
        rpc_paths = ("/RPC2",)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = SimpleXMLRPCServer(("127.0.0.1", port), requestHandler=Quiet, logRequests=False,
                                allow_none=True)
    server.register_function(lambda s, i, d=False: info("vm", "one.vm.info", s, i, d),
                             "one.vm.info")
    server.register_function(
        lambda s, i, d=False: info("datastore", "one.datastore.info", s, i, d),
        "one.datastore.info")
    server.register_function(lambda s, i, d=False: info("image", "one.image.info", s, i, d),
                             "one.image.info")
    server.register_function(lambda s, i, d=False: info("market", "one.market.info", s, i, d),
                             "one.market.info")
    server.register_function(lambda s, i, d=False: info("vn", "one.vn.info", s, i, d),
                             "one.vn.info")
    # pools: what a test recorded as <kind>/0.xml
    server.register_function(lambda s, *_: info("vnpool", "one.vnpool.info", s, 0),
                             "one.vnpool.info")
    server.register_function(lambda s: info("grouppool", "one.grouppool.info", s, 0),
                             "one.grouppool.info")
    server.register_function(lambda s, *_: info("userpool", "one.userpool.info", s, 0),
                             "one.userpool.info")
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args()
    serve(args.dir, args.port)


if __name__ == "__main__":
    main()
