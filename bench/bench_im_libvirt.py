"""IM probes for a host with 50 running domains (libvirt's test driver, which every process can
load from the same node file): ours (STATE_VM + MONITOR_VM from one bulk call) against one
``virsh domstats`` call per domain, as upstream's probes do (issue 6).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import report


def node_xml(count: int) -> str:
    doms = "".join(
        f"<domain type='test'><name>one-{i}</name><memory>65536</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os><devices><disk type='file'><source file='/dev/null'/>"
        f"<target dev='vda'/></disk><interface type='network'><source network='default'/>"
        f"</interface></devices></domain>" for i in range(count))
    return f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores></cpu>{doms}</node>"


class Counting:
    """A libvirt connection that counts the calls made through it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.conn, name)
        if not callable(attr):
            return attr

        def counted(*args: Any) -> Any:
            self.calls += 1
            return attr(*args)

        return counted


def ours(uri: str) -> tuple[float, int]:
    import libvirt

    from one_drivers.im.libvirt import probes

    started = time.perf_counter()
    conn = Counting(libvirt.open(uri))
    doms = probes.domains(conn)
    probes.state_vm(doms, {}, sync=True)
    probes.monitor_vm(doms, {}, time.time())
    took = time.perf_counter() - started
    conn.conn.close()
    return took, conn.calls


def upstream(uri: str, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        subprocess.run(["virsh", "--connect", uri, "domstats", f"one-{i}"], capture_output=True,
                       check=True)
    return time.perf_counter() - started


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="one-drivers-bench-", dir="/var/tmp") as tmp:
        calls = {}
        for count in (10, 50):
            node = Path(tmp) / f"node{count}.xml"
            node.write_text(node_xml(count))
            uri = f"test://{node}"
            runs = [ours(uri) for _ in range(5)]
            calls[count] = runs[0][1]
        took = sorted(r[0] for r in runs)[2]
        theirs = upstream(uri, 50)
    report("IM STATE_VM + MONITOR_VM, 50 running domains (libvirt test driver)",
           "ours: one bulk getAllDomainStats (connect included)", took,
           "one `virsh domstats` per domain", theirs)
    print(f"  ratio {theirs / took:.0f}x (target >= 20x); libvirt calls per probe: "
          f"{calls[10]} with 10 domains, {calls[50]} with 50")
    return {"im_probe_vs_virsh": theirs / took}


if __name__ == "__main__":
    main()
