"""Front-end verify: DS cp, TM clone and TM delete through the installed remotes, against the
ceph container's cluster as the restricted cephx user; the VM and datastore documents come from
an oned stand-in (XML-RPC), as TM actions read them from oned. The image datastore's attributes
are the role's example template's, so the example is proven to work. Exits non-zero with the
reason."""

import base64
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from one_drivers.lab.documents import datastore_doc, disk_attrs, ds_doc, vm_doc
from one_drivers.lab.oned_standin import OnedStandin

REMOTES = Path("/var/lib/one/remotes")
MON = sys.argv[1]
ENV = {"CEPH_CONF": "/etc/ceph/ceph.conf", "ONE_LAB_CEPH_POOL": "one",
       "ONE_LAB_CEPH_USER": "libvirt",
       "ONE_LAB_CEPH_KEYRING": "/etc/ceph/ceph.client.libvirt.keyring",
       "ONE_LAB_CEPH_MON": MON}
IMAGE, VM, SYS_DS = 7001, 71, 0
EXAMPLES = Path("/var/lib/one/one-drivers-examples")


def template(path: Path) -> dict:
    """The single-valued attributes of an OpenNebula template file."""
    return dict(re.findall(r'^([A-Z_]+)\s*=\s*"([^"]*)"\s*$', path.read_text(), re.M))


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"verify failed: {what}")


def run(path: str, argv: list[str], stdin: bytes = b"", env: dict | None = None) -> str:
    proc = subprocess.run([str(REMOTES / path), *argv], input=stdin, capture_output=True,
                          timeout=300, env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        sys.exit(f"{path} failed (exit {proc.returncode}): {proc.stderr.decode().strip()}")
    return proc.stdout.decode().strip()


def images() -> set:
    import rados
    import rbd

    cluster = rados.Rados(conffile=ENV["CEPH_CONF"], rados_id="libvirt",
                          conf={"keyring": ENV["ONE_LAB_CEPH_KEYRING"]})
    cluster.connect(timeout=20)
    try:
        with cluster.open_ioctx("one") as ioctx:
            return set(rbd.RBD().list(ioctx))
    finally:
        cluster.shutdown()


EXAMPLE_DS = template(EXAMPLES / "ceph-image-datastore.tmpl")
check((EXAMPLE_DS.get("DS_MAD"), EXAMPLE_DS.get("TM_MAD")) == ("rbd", "rbd"),
      f"the example image datastore selects the rbd drivers: {EXAMPLE_DS}")
check(template(EXAMPLES / "ovsdb-vnet.tmpl").get("VN_MAD") == "ovsdb",
      "the example virtual network selects the ovsdb driver")

with tempfile.TemporaryDirectory() as tmp:
    src = Path(tmp) / "disk.raw"
    src.write_bytes(os.urandom(1 << 20) + bytes(3 << 20))
    doc = ds_doc(ENV, IMAGE, image={"PATH": str(src)}, ds={"SAFE_DIRS": tmp, **EXAMPLE_DS})
    source = run("datastore/rbd/cp", [str(IMAGE)], base64.b64encode(doc.encode()))
    check(source.split()[0] == f"one/one-{IMAGE}", source)
    oned = OnedStandin(Path(tmp) / "oned", port_offset=int(sys.argv[2]))
    oned.up()
    try:
        oned.record("datastore", 100, datastore_doc(ENV, 100))
        oned.record("datastore", SYS_DS, datastore_doc(ENV, SYS_DS, system=True))
        disk = disk_attrs(ENV, 0, IMAGE_ID=IMAGE, SOURCE=f"one/one-{IMAGE}", CLONE="YES",
                          TYPE="RBD", DATASTORE_ID=100)
        oned.record("vm", VM, vm_doc(VM, [disk], sys_ds=SYS_DS))
        host_disk = f"node1:/var/lib/one/datastores/{SYS_DS}/{VM}/disk.0"
        run("tm/rbd/clone", [f"fe:one/one-{IMAGE}", host_disk, str(VM), "100"], env=oned.env())
        check(f"one-{IMAGE}-{VM}-0" in images(), "the clone is in Ceph")
        run("tm/rbd/delete", [host_disk, str(VM), "100"], env=oned.env())
        check(f"one-{IMAGE}-{VM}-0" not in images(), "and gone after delete")
    finally:
        oned.down()
    run("datastore/rbd/rm", [str(IMAGE)], base64.b64encode(
        ds_doc(ENV, IMAGE, image={"SOURCE": f"one/one-{IMAGE}"}).encode()))
    check(f"one-{IMAGE}" not in images(), "the image is gone after DS rm")
print("frontend: DS cp (the example datastore's attributes), TM clone, TM delete, DS rm "
      "through the installed remotes: ok")
