"""The ``rbd`` marketplace against the lab's Ceph, run as oned's one_market MAD runs it: the
datastore's ``export`` first, then ``market/rbd/import <base64 XML> <app id>`` (no stdin); an
app exported into a datastore by DS ``cp`` with the document oned builds for FROM_APP images
(the MARKETPLACE added, PATH set to the app's SOURCE); delete and monitor."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from one_drivers.core.faults import KILLED
from one_drivers.core.xmlview import escape
from one_drivers.lab.documents import datastore_doc, ds_doc, elements
from tests.helpers import last_line, purge_image, read_image, run_remote

pytestmark = pytest.mark.lab
MIB = 1 << 20
MARKET_ID, ZONE = 300, 0
_ids = itertools.count(random.randint(10_000, 90_000) * 10 + 7)


def market_xml(env, **template) -> str:
    tmpl = {"POOL_NAME": env["ONE_LAB_CEPH_MARKET_POOL"], "CEPH_USER": env["ONE_LAB_CEPH_USER"],
            "CEPH_KEY": env["ONE_LAB_CEPH_KEYRING"], "CEPH_CONF": env["CEPH_CONF"],
            "EXPORT_HOST": "front", **template}
    return (f"<MARKETPLACE><ID>{MARKET_ID}</ID><NAME>ceph-apps</NAME><MARKET_MAD>rbd"
            f"</MARKET_MAD><ZONE_ID>{ZONE}</ZONE_ID><TEMPLATE>{elements(tmpl)}</TEMPLATE>"
            "</MARKETPLACE>")


def app_xml(app_id: int, *, source: str = "", name: str = "") -> str:
    return (f"<MARKETPLACEAPP><ID>{app_id}</ID><UID>3</UID><NAME>{escape(name or f'app{app_id}')}"
            f"</NAME><ZONE_ID>{ZONE}</ZONE_ID><ORIGIN_ID>0</ORIGIN_ID><SOURCE>{escape(source)}"
            "</SOURCE><TYPE>1</TYPE><DESCRIPTION>a \"quoted\" one</DESCRIPTION><VERSION>1.2"
            "</VERSION><TEMPLATE><PUBLISHER>lab</PUBLISHER><TAGS>linux</TAGS>"
            "<VMTEMPLATE64>Q1BVPTE=</VMTEMPLATE64></TEMPLATE></MARKETPLACEAPP>")


def market(remotes, action: str, doc: str, obj_id: int, env=None):
    """One market action as one_market runs it: the document base64 in argv, no stdin."""
    proc = subprocess.run([str(remotes / "market" / "rbd" / action),
                           base64.b64encode(doc.encode()).decode(), str(obj_id)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, **(env or {})})
    return proc


def answer(text: str) -> dict[str, str]:
    return dict(re.findall(r'^(\w+)="([^"]*)"$', text, re.M))


class World:
    def __init__(self, env, remotes, ioctx, market_ioctx) -> None:
        self.env, self.remotes, self.ioctx, self.mioctx = env, remotes, ioctx, market_ioctx
        self.images: list[str] = []
        self.apps: list[int] = []

    def image(self, size: int = 64 * MIB, data: bytes = b"") -> tuple[int, bytes]:
        """An rbd datastore image ``one-<id>`` with some data written at a few offsets."""
        import rbd

        image_id = next(_ids)
        rbd.RBD().create(self.ioctx, f"one-{image_id}", size)
        self.images.append(f"one-{image_id}")
        with rbd.Image(self.ioctx, f"one-{image_id}") as image:
            for off in (0, 5 * MIB, size - MIB):
                image.write(data or os.urandom(4096), off)
        return image_id, read_image(self.ioctx, f"one-{image_id}")

    def export(self, image_id: int) -> dict[str, str]:
        doc = ds_doc(self.env, image_id, image={"SOURCE": f"one/one-{image_id}"})
        res = run_remote(self.remotes, "datastore/rbd/export", [str(image_id)], doc)
        assert res.returncode == 0, res.stderr
        return dict(re.findall(r"<(\w+)>([^<]*)</\1>", res.stdout))

    def import_doc(self, app_id: int, image_id: int, **market) -> str:
        info = self.export(image_id)
        extra = "".join(f"<{k}>{escape(info.get(k, ''))}</{k}>"
                        for k in ("IMPORT_SOURCE", "MD5", "SIZE", "FORMAT", "DISPOSE"))
        image = (f"<IMAGE><ID>{image_id}</ID><SOURCE>one/one-{image_id}</SOURCE><TEMPLATE/>"
                 "</IMAGE>")
        return (f"<MARKET_DRIVER_ACTION_DATA>{app_xml(app_id)}{market_xml(self.env, **market)}"
                f"{image}{datastore_doc(self.env, 100)}{extra}</MARKET_DRIVER_ACTION_DATA>")

    def create_app(self, image_id: int, **market_attrs) -> tuple[int, dict[str, str]]:
        app_id = next(_ids)
        self.apps.append(app_id)
        res = market(self.remotes, "import", self.import_doc(app_id, image_id, **market_attrs),
                     app_id)
        assert res.returncode == 0, res.stderr
        return app_id, answer(res.stdout)

    def app_doc(self, app_id: int, source: str) -> str:
        return (f"<MARKET_DRIVER_ACTION_DATA>{app_xml(app_id, source=source)}"
                f"{market_xml(self.env)}</MARKET_DRIVER_ACTION_DATA>")

    def export_app(self, source: str, app_md5: str, *, uid: int = 7, image_id: int | None = None,
                   market: str | None = None):
        """DS cp of an image made from the app, by a tenant: what oned sends (FROM_APP)."""
        image_id = image_id or next(_ids)
        self.images.append(f"one-{image_id}")
        doc = ds_doc(self.env, image_id, image={"UID": uid, "GID": 100, "PATH": source},
                     image_template={"FROM_APP": 1, "FROM_APP_MD5": app_md5,
                                     "FROM_APP_NAME": "x"})
        doc = doc.replace("</DS_DRIVER_ACTION_DATA>",
                          (market if market is not None else market_xml(self.env))
                          + "</DS_DRIVER_ACTION_DATA>")
        return image_id, run_remote(self.remotes, "datastore/rbd/cp", [str(image_id)], doc)

    def app_images(self) -> list[str]:
        import rbd

        return sorted(n for n in rbd.RBD().list(self.mioctx)
                      if any(n.startswith(f"one-app-{a}-") for a in self.apps))

    def cleanup(self) -> None:
        import rbd

        for name in self.images:
            purge_image(self.ioctx, name)
        for name in self.app_images():
            purge_image(self.mioctx, name)
        for entry in rbd.RBD().trash_list(self.mioctx):
            if any(entry["name"].startswith(f"one-app-{a}-") for a in self.apps):
                purge_image(self.mioctx, image_id=entry["id"])


@pytest.fixture
def world(lab_env, remotes, ceph_admin):
    cluster, ioctx = ceph_admin
    mioctx = cluster.open_ioctx(lab_env["ONE_LAB_CEPH_MARKET_POOL"])
    w = World(lab_env, remotes, ioctx, mioctx)
    yield w
    w.cleanup()
    mioctx.close()


def spec_of(source: str) -> tuple[str, str, str]:
    path = source.split("://", 1)[1].split("/", 1)[1]
    body, snap = path.split("@")
    pool, name = body.split("/")
    return pool, name, snap


def test_an_app_is_a_copy_in_the_market_pool_and_exports_by_clone(world, lab_env):
    import rbd

    image_id, content = world.image()
    app_id, out = world.create_app(image_id)
    assert out["FORMAT"] == "raw" and out["SIZE"] == "64"
    assert out["MD5"] == hashlib.md5(content, usedforsecurity=False).hexdigest()
    pool, name, snap = spec_of(out["SOURCE"])
    assert out["SOURCE"].startswith("rbd://front/")
    assert pool == lab_env["ONE_LAB_CEPH_MARKET_POOL"] and snap == "app"
    assert re.fullmatch(rf"one-app-{app_id}-[0-9a-f]{{8}}", name)
    with rbd.Image(world.mioctx, name, snapshot="app", read_only=True) as app:
        assert app.is_protected_snap("app")
        assert app.read(0, app.size()) == content, "the image's data, copied"
    with rbd.Image(world.mioctx, name, read_only=True) as app, pytest.raises(rbd.ImageNotFound):
        app.parent_id()  # a copy, not a clone of the datastore's image
    # the datastore's image can go: the app does not depend on it
    with rbd.Image(world.ioctx, f"one-{image_id}") as img:
        img.write(b"changed!", 0)
    with rbd.Image(world.mioctx, name, snapshot="app", read_only=True) as app:
        assert app.read(0, 8) == content[:8]

    # a tenant exports it into the datastore: a clone of the app's snapshot, at once
    new_id, res = world.export_app(out["SOURCE"], out["MD5"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"one/one-{new_id} raw"
    with rbd.Image(world.ioctx, f"one-{new_id}", read_only=True) as img:
        assert img.parent_info()[:2] == (pool, name), "a copy-on-write clone of the app"
        assert img.read(0, img.size()) == content

    # while the clone lives, delete hides the app; the monitor collects it once it is gone
    res = market(world.remotes, "delete", world.app_doc(app_id, out["SOURCE"]), app_id)
    assert res.returncode == 0, res.stderr
    assert name not in rbd.RBD().list(world.mioctx)
    assert name in {e["name"] for e in rbd.RBD().trash_list(world.mioctx)}
    with rbd.Image(world.ioctx, f"one-{new_id}", read_only=True) as img:
        assert img.read(0, img.size()) == content, "the clone still reads its data"
    doc = f"<MARKET_DRIVER_ACTION_DATA>{market_xml(lab_env)}</MARKET_DRIVER_ACTION_DATA>"
    assert market(world.remotes, "monitor", doc, MARKET_ID).returncode == 0
    assert name in {e["name"] for e in rbd.RBD().trash_list(world.mioctx)}, \
        "kept while its clone lives (positive control for the collection below)"
    rm = run_remote(world.remotes, "datastore/rbd/rm", [str(new_id)],
                    ds_doc(lab_env, new_id, image={"SOURCE": f"one/one-{new_id}"}))
    assert rm.returncode == 0, rm.stderr
    res = market(world.remotes, "monitor", doc, MARKET_ID)
    assert res.returncode == 0, res.stderr
    assert name not in {e["name"] for e in rbd.RBD().trash_list(world.mioctx)}
    assert not world.app_images()
    # a second delete: nothing left, success
    res = market(world.remotes, "delete", world.app_doc(app_id, out["SOURCE"]), app_id)
    assert res.returncode == 0, res.stderr


def test_exports_are_only_of_apps(world, lab_env):
    import rbd

    image_id, _ = world.image()
    app_id, out = world.create_app(image_id)
    pool, name, _ = spec_of(out["SOURCE"])
    # positive control: the app itself, by a tenant
    _, res = world.export_app(out["SOURCE"], out["MD5"])
    assert res.returncode == 0, res.stderr
    # a datastore image named as the app's SOURCE would be: refused, nothing made
    for bad in (f"rbd://x/one/one-{image_id}@app", f"rbd://x/{pool}/{name}",
                f"rbd://x/{pool}/{name}@other"):
        bad_id, res = world.export_app(bad, out["MD5"])
        assert res.returncode != 0 and "not an app of the marketplace" in last_line(res.stderr)
        assert f"one-{bad_id}" not in rbd.RBD().list(world.ioctx)
    # an image in the market pool with an app's name that our market did not make
    rbd.RBD().create(world.mioctx, f"one-app-{app_id}-00000000", MIB)
    world.images.append("x")
    with rbd.Image(world.mioctx, f"one-app-{app_id}-00000000") as foreign:
        foreign.create_snap("app")
    bad_id, res = world.export_app(f"rbd://x/{pool}/one-app-{app_id}-00000000@app", "0")
    assert res.returncode != 0 and "is not a one-drivers app" in last_line(res.stderr)
    with rbd.Image(world.mioctx, f"one-app-{app_id}-00000000") as foreign:
        foreign.remove_snap("app")
    rbd.RBD().remove(world.mioctx, f"one-app-{app_id}-00000000")
    # the same PATH without oned's MARKETPLACE (a tenant's own image template): refused
    doc = ds_doc(lab_env, next(_ids), image={"UID": 7, "GID": 100, "PATH": out["SOURCE"]})
    res = run_remote(world.remotes, "datastore/rbd/cp", [str(next(_ids))], doc)
    assert res.returncode != 0 and "only the oneadmin group" in last_line(res.stderr)


def test_an_app_from_another_cluster_is_streamed_and_its_checksum_checked(world, lab_env,
                                                                            tmp_path):
    """A market whose ceph.conf is another file than the datastore's is another cluster to
    cp (the lab has one cluster: a copy of its ceph.conf stands for the other one's)."""
    import rbd

    image_id, content = world.image()
    _, out = world.create_app(image_id)
    other_conf = tmp_path / "other-ceph.conf"
    other_conf.write_text(Path(lab_env["CEPH_CONF"]).read_text())
    other = market_xml(lab_env, CEPH_CONF=str(other_conf))
    new_id, res = world.export_app(out["SOURCE"], out["MD5"], market=other)
    assert res.returncode == 0, res.stderr
    with rbd.Image(world.ioctx, f"one-{new_id}", read_only=True) as img:
        with pytest.raises(rbd.ImageNotFound):
            img.parent_id()  # streamed: no clone across clusters
        assert img.read(0, img.size()) == content
    bad_id, res = world.export_app(out["SOURCE"], "0" * 32, market=other)
    assert res.returncode != 0 and "MD5" in last_line(res.stderr)
    assert f"one-{bad_id}" not in rbd.RBD().list(world.ioctx)


def test_import_killed_midway_leaves_nothing_after_delete(world, lab_env):
    import rbd

    image_id, _ = world.image()
    app_id = next(_ids)
    world.apps.append(app_id)
    doc = world.import_doc(app_id, image_id)
    res = market(world.remotes, "import", doc, app_id,
                 env={"ONE_DRIVERS_CRASH_AT": "market:copied"})
    assert res.returncode == KILLED, res.stderr
    left = world.app_images()
    assert len(left) == 1 and left[0].endswith(".one-drivers-tmp"), left
    # oned marks the app ERROR; deleting it (no SOURCE) removes what the import left
    res = market(world.remotes, "delete", world.app_doc(app_id, ""), app_id)
    assert res.returncode == 0, res.stderr
    assert not world.app_images()
    # an import that finished without oned hearing of it (killed right after): also removed
    res = market(world.remotes, "import", doc, app_id,
                 env={"ONE_DRIVERS_CRASH_AT": "market:built"})
    assert res.returncode == KILLED, res.stderr
    assert len(world.app_images()) == 1
    res = market(world.remotes, "delete", world.app_doc(app_id, ""), app_id)
    assert res.returncode == 0, res.stderr
    assert not world.app_images()
    # another zone's app of the same id is not ours to sweep
    res = market(world.remotes, "import", doc.replace(f"<ZONE_ID>{ZONE}</ZONE_ID>",
                                                       "<ZONE_ID>9</ZONE_ID>"), app_id)
    assert res.returncode == 0, res.stderr
    res = market(world.remotes, "delete", world.app_doc(app_id, ""), app_id)
    assert res.returncode == 0 and len(world.app_images()) == 1
    assert rbd.RBD().list(world.mioctx)


def test_bad_input_gets_one_line_and_makes_nothing(world, lab_env):
    image_id, _ = world.image()
    app_id = next(_ids)
    world.apps.append(app_id)
    doc = world.import_doc(app_id, image_id)
    cases = {
        "cannot read the export": doc.replace("<IMPORT_SOURCE>rbd://", "<IMPORT_SOURCE>ftp://"),
        "one/one-1: not found": doc.replace(f"one-{image_id}</IMPORT_SOURCE>",
                                      "one-1</IMPORT_SOURCE>"),
        "pool": doc.replace(f"<POOL_NAME>{lab_env['ONE_LAB_CEPH_MARKET_POOL']}</POOL_NAME>",
                            "<POOL_NAME>no-such-pool</POOL_NAME>"),
        "MARKETPLACE": doc.replace("<MARKETPLACE>", "<X>").replace("</MARKETPLACE>", "</X>"),
    }
    for expected, bad in cases.items():
        res = market(world.remotes, "import", bad, app_id)
        assert res.returncode != 0, expected
        assert expected in last_line(res.stderr), res.stderr
        assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, res.stderr
    assert not world.app_images()
    res = market(world.remotes, "delete", world.app_doc(app_id, f"rbd://x/one/one-{image_id}@app"),
                 app_id)
    assert res.returncode != 0 and "is not an app of this market" in last_line(res.stderr)


def test_monitor_reports_the_pool_and_lists_the_catalogue_when_asked(world, lab_env):
    image_id, _ = world.image()
    app_id, out = world.create_app(image_id)
    doc = f"<MARKET_DRIVER_ACTION_DATA>{market_xml(lab_env)}</MARKET_DRIVER_ACTION_DATA>"
    res = market(world.remotes, "monitor", doc, MARKET_ID)
    assert res.returncode == 0, res.stderr
    usage = dict(re.findall(r"^(\w+)=(\d+)$", res.stdout, re.M))
    assert int(usage["TOTAL_MB"]) == int(usage["USED_MB"]) + int(usage["FREE_MB"]) > 0
    assert "APP=" not in res.stdout, "no catalogue unless LIST_APPS"
    listing = f"<MARKET_DRIVER_ACTION_DATA>{market_xml(lab_env, LIST_APPS='yes')}" \
              "</MARKET_DRIVER_ACTION_DATA>"
    res = market(world.remotes, "monitor", listing, MARKET_ID)
    assert res.returncode == 0, res.stderr
    apps = [base64.b64decode(v).decode() for v in re.findall(r'^APP="([^"]+)"$', res.stdout,
                                                              re.M)]
    ours = [a for a in apps if f'SOURCE="{out["SOURCE"]}"' in a]
    assert len(ours) == 1, apps
    entry = ours[0]
    for line in (f'NAME="app{app_id}"', 'PUBLISHER="lab"', 'VERSION="1.2"', 'TAGS="linux"',
                 f'MD5="{out["MD5"]}"', 'SIZE="64"', 'FORMAT="raw"', 'TYPE="IMAGE"',
                 'VMTEMPLATE64="Q1BVPTE="', 'DESCRIPTION="a \\"quoted\\" one"'):
        assert line in entry.splitlines(), entry


def test_through_a_bridge_the_front_end_never_touches_ceph(world, lab_env):
    """CEPH_ACCESS=bridge: import, monitor and delete run on the lab's host over ssh; the
    front-end dies if it ever connects to Ceph (a fault point at the connection), and the
    same action without the bridge does die there (the positive control)."""
    import rbd

    from tests.integration.test_ds_rbd_bridge import ssh_sessions

    image_id, content = world.image()
    app_id = next(_ids)
    world.apps.append(app_id)
    bridge = {"CEPH_ACCESS": "bridge", "BRIDGE_LIST": lab_env["ONE_LAB_SSH_HOST"]}
    no_ceph_here = {"ONE_DRIVERS_CRASH_AT": "ceph:connect"}
    local = world.import_doc(app_id, image_id)
    res = market(world.remotes, "import", local, app_id, env=no_ceph_here)
    assert res.returncode == KILLED, "positive control: here it connects"
    sessions = ssh_sessions(lab_env)
    res = market(world.remotes, "import", world.import_doc(app_id, image_id, **bridge), app_id,
                 env=no_ceph_here)
    assert res.returncode == 0, res.stderr
    assert ssh_sessions(lab_env) > sessions
    out = answer(res.stdout)
    _, name, _ = spec_of(out["SOURCE"])
    with rbd.Image(world.mioctx, name, snapshot="app", read_only=True) as app:
        assert app.read(0, app.size()) == content
    doc = (f"<MARKET_DRIVER_ACTION_DATA>{app_xml(app_id, source=out['SOURCE'])}"
           f"{market_xml(lab_env, **bridge)}</MARKET_DRIVER_ACTION_DATA>")
    res = market(world.remotes, "monitor", doc, MARKET_ID, env=no_ceph_here)
    assert res.returncode == 0 and res.stdout.startswith("USED_MB="), res.stderr
    res = market(world.remotes, "delete", doc, app_id, env=no_ceph_here)
    assert res.returncode == 0, res.stderr
    assert not world.app_images()


def import_file(lab_env, *argv: str):
    import sys

    return subprocess.run([str(Path(sys.executable).parent / "one-drivers"), "market",
                           "import-file", str(MARKET_ID), *argv], capture_output=True, text=True,
                          timeout=300, check=False)


def test_import_file_puts_an_appliance_in_the_catalogue(world, lab_env, tmp_path):
    """An air-gapped site's appliance (a qcow2 file): converted once into the market's pool
    under the rules of DS cp, listed by the monitor with LIST_APPS, exportable by clone; a
    qcow2 with a backing file and a file outside SAFE_DIRS are refused."""
    import rbd

    from one_drivers.lab.lab import Lab

    Lab().oned.record("market", MARKET_ID, market_xml(lab_env, LIST_APPS="yes",
                                                      SAFE_DIRS=str(tmp_path)))
    qcow = tmp_path / "appliance.qcow2"
    raw = tmp_path / "appliance.raw"
    raw.write_bytes(os.urandom(MIB) + bytes(3 * MIB) + os.urandom(MIB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)],
                   check=True, timeout=60)
    res = import_file(lab_env, str(qcow), "--name", "appliance", "--version", "7",
                      "--publisher", "site")
    assert res.returncode == 0, res.stderr
    out = answer(res.stdout)
    _, name, _ = spec_of(out["SOURCE"])
    world.apps.append(0)
    assert out["MD5"] == hashlib.md5(raw.read_bytes(), usedforsecurity=False).hexdigest()
    with rbd.Image(world.mioctx, name, snapshot="app", read_only=True) as app:
        assert app.read(0, app.size()) == raw.read_bytes(), "converted from qcow2 to raw"
    doc = f"<MARKET_DRIVER_ACTION_DATA>{market_xml(lab_env, LIST_APPS='yes')}" \
          "</MARKET_DRIVER_ACTION_DATA>"
    res = market(world.remotes, "monitor", doc, MARKET_ID)
    listed = [base64.b64decode(v).decode() for v in re.findall(r'^APP="([^"]+)"$', res.stdout,
                                                                re.M)]
    assert [a for a in listed if 'NAME="appliance"' in a and 'VERSION="7"' in a
            and f'SOURCE="{out["SOURCE"]}"' in a], listed
    new_id, res = world.export_app(out["SOURCE"], out["MD5"])
    assert res.returncode == 0, res.stderr
    with rbd.Image(world.ioctx, f"one-{new_id}", read_only=True) as img:
        assert img.read(0, img.size()) == raw.read_bytes()

    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", str(qcow),
                    str(backed)], check=True, capture_output=True, timeout=60)
    res = import_file(lab_env, str(backed), "--name", "backed")
    assert res.returncode != 0 and "backing file" in last_line(res.stderr), res.stderr
    res = import_file(lab_env, "/etc/hostname", "--name", "secret")
    assert res.returncode != 0 and "restricted directory" in last_line(res.stderr), res.stderr
    assert len([n for n in world.app_images() if n.startswith("one-app-0-")]) == 1


def test_a_crash_at_every_step_then_what_oned_does_next_converges(world, lab_env, tmp_path):
    """import killed at each point it passes (enumerated by a traced run), then what oned does
    with an app whose import failed (delete it: no SOURCE): nothing left; delete killed at
    each of its points, then run again: nothing left. A fresh import works after each."""
    trace = tmp_path / "trace"
    image_id, content = world.image()
    app_id = next(_ids)
    world.apps.append(app_id)
    doc = world.import_doc(app_id, image_id)
    res = market(world.remotes, "import", doc, app_id,
                 env={"ONE_DRIVERS_FAULT_TRACE": str(trace)})
    assert res.returncode == 0, res.stderr
    source = answer(res.stdout)["SOURCE"]
    points = list(dict.fromkeys(trace.read_text().split()))
    assert {"market:copied", "market:built", "build:made"} <= set(points), points
    trace.unlink()
    res = market(world.remotes, "delete", world.app_doc(app_id, source), app_id,
                 env={"ONE_DRIVERS_FAULT_TRACE": str(trace)})
    assert res.returncode == 0 and not world.app_images()
    delete_points = list(dict.fromkeys(trace.read_text().split()))
    assert "market:snapshot-removed" in delete_points
    for point in points:
        res = market(world.remotes, "import", doc, app_id, env={"ONE_DRIVERS_CRASH_AT": point})
        assert res.returncode == KILLED, (point, res.stderr)
        res = market(world.remotes, "delete", world.app_doc(app_id, ""), app_id)
        assert res.returncode == 0, (point, res.stderr)
        assert not world.app_images(), point
    for point in delete_points:
        res = market(world.remotes, "import", doc, app_id)
        assert res.returncode == 0, res.stderr
        source = answer(res.stdout)["SOURCE"]
        res = market(world.remotes, "delete", world.app_doc(app_id, source), app_id,
                     env={"ONE_DRIVERS_CRASH_AT": point})
        assert res.returncode == KILLED, (point, res.stderr)
        res = market(world.remotes, "delete", world.app_doc(app_id, source), app_id)
        assert res.returncode == 0, (point, res.stderr)
        assert not world.app_images(), point
    res = market(world.remotes, "import", doc, app_id)
    assert res.returncode == 0, res.stderr
    import rbd

    _, name, _ = spec_of(answer(res.stdout)["SOURCE"])
    with rbd.Image(world.mioctx, name, snapshot="app", read_only=True) as app:
        assert app.read(0, app.size()) == content


def test_a_market_in_a_rados_namespace(world, lab_env):
    """NAMESPACE: the apps live in a namespace of the pool (a market per tenant group in one
    pool); SOURCE names it; an export reads only that market's namespace."""
    import rbd

    namespace = f"apps{next(_ids)}"
    rbd.RBD().namespace_create(world.mioctx, namespace)
    image_id, content = world.image()
    try:
        res = market(world.remotes, "import",
                     world.import_doc(next(_ids), image_id, NAMESPACE="no-such-ns"), 1)
        assert res.returncode == 6 and "namespace one-market/no-such-ns does not exist" in \
            last_line(res.stderr), res.stderr
        app_id, out = world.create_app(image_id, NAMESPACE=namespace)
        pool = lab_env["ONE_LAB_CEPH_MARKET_POOL"]
        assert out["SOURCE"].startswith(f"rbd://front/{pool}/{namespace}/one-app-{app_id}-")
        name = out["SOURCE"].rsplit("/", 1)[1].split("@")[0]
        ns_ioctx = world.mioctx  # the same pool: switch it to the namespace and back
        ns_ioctx.set_namespace(namespace)
        try:
            with rbd.Image(ns_ioctx, name, snapshot="app", read_only=True) as app:
                assert app.read(0, app.size()) == content
        finally:
            ns_ioctx.set_namespace("")
        assert name not in rbd.RBD().list(world.mioctx), "not in the pool's default namespace"
        in_ns = market_xml(lab_env, NAMESPACE=namespace)
        new_id, res = world.export_app(out["SOURCE"], out["MD5"], market=in_ns)
        assert res.returncode == 0, res.stderr
        with rbd.Image(world.ioctx, f"one-{new_id}", read_only=True) as img:
            assert img.read(0, img.size()) == content
            assert img.get_parent_image_spec()["pool_namespace"] == namespace
        # the same SOURCE through a market of the pool's default namespace: not its app
        _, res = world.export_app(out["SOURCE"], out["MD5"])
        assert res.returncode != 0 and "not an app of the marketplace" in last_line(res.stderr)
        rm = run_remote(world.remotes, "datastore/rbd/rm", [str(new_id)],
                        ds_doc(lab_env, new_id, image={"SOURCE": f"one/one-{new_id}"}))
        assert rm.returncode == 0, rm.stderr
        doc = (f"<MARKET_DRIVER_ACTION_DATA>{app_xml(app_id, source=out['SOURCE'])}{in_ns}"
               "</MARKET_DRIVER_ACTION_DATA>")
        res = market(world.remotes, "delete", doc, app_id)
        assert res.returncode == 0, res.stderr
        ns_ioctx.set_namespace(namespace)
        try:
            assert not list(rbd.RBD().list(ns_ioctx))
        finally:
            ns_ioctx.set_namespace("")
    finally:
        rbd.RBD().namespace_remove(world.mioctx, namespace)


def test_an_app_from_a_file_datastore_is_streamed_in_with_its_checksum(world, lab_env, tmp_path):
    """A file datastore's export: a path in its directory on the front-end, or
    ssh://<bridge>:<path> (the lab's host), raw or qcow2 (converted); the export's MD5 is
    checked over the bytes as fetched; paths outside the datastore are refused."""
    import rbd

    base = tmp_path / "datastores" / "1"
    base.mkdir(parents=True)
    raw = base / "0123abcd"
    data = os.urandom(MIB) + bytes(2 * MIB) + os.urandom(MIB)
    raw.write_bytes(data)
    qcow = base / "4567ef01"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)],
                   check=True, timeout=60)

    def doc(app_id: int, source: Path | str, fmt: str = "raw", md5: str | None = None) -> str:
        local = Path(str(source).split(":", 2)[-1]) if str(source).startswith("ssh") else source
        digest = md5 or hashlib.md5(Path(local).read_bytes(), usedforsecurity=False).hexdigest()
        fs = (f"<DATASTORE><ID>1</ID><NAME>files</NAME><DS_MAD>fs</DS_MAD><BASE_PATH>{base}"
              "</BASE_PATH><TEMPLATE/></DATASTORE>")
        return (f"<MARKET_DRIVER_ACTION_DATA>{app_xml(app_id)}{market_xml(lab_env)}"
                f"<IMAGE><ID>9</ID><SOURCE>{source}</SOURCE><TEMPLATE/></IMAGE>{fs}"
                f"<IMPORT_SOURCE>{escape(str(source))}</IMPORT_SOURCE><MD5>{digest}</MD5>"
                f"<SIZE>4</SIZE><FORMAT>{fmt}</FORMAT><DISPOSE>NO</DISPOSE>"
                "</MARKET_DRIVER_ACTION_DATA>")

    raw_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    for source, fmt in ((raw, "raw"), (qcow, "qcow2"),
                        (f"ssh://{lab_env['ONE_LAB_SSH_HOST']}:{raw}", "raw")):
        app_id = next(_ids)
        world.apps.append(app_id)
        res = market(world.remotes, "import", doc(app_id, source, fmt), app_id,
                     env={"ONE_DRIVERS_SSH_CONFIG": lab_env["ONE_DRIVERS_SSH_CONFIG"]})
        assert res.returncode == 0, (source, res.stderr)
        out = answer(res.stdout)
        assert out["MD5"] == raw_md5, "the app's checksum is its raw data's"
        _, name, _ = spec_of(out["SOURCE"])
        with rbd.Image(world.mioctx, name, snapshot="app", read_only=True) as app:
            assert app.read(0, app.size()) == data, source

    app_id = next(_ids)
    world.apps.append(app_id)
    res = market(world.remotes, "import", doc(app_id, raw, md5="0" * 32), app_id)
    assert res.returncode != 0 and "MD5" in last_line(res.stderr), res.stderr
    outside = tmp_path / "elsewhere"
    outside.write_bytes(data)
    for source in (outside, f"ssh://{lab_env['ONE_LAB_SSH_HOST']}:{outside}",
                   f"ssh://{lab_env['ONE_LAB_SSH_HOST']}:{base}/../elsewhere"):
        res = market(world.remotes, "import", doc(app_id, source, md5=raw_md5), app_id,
                     env={"ONE_DRIVERS_SSH_CONFIG": lab_env["ONE_DRIVERS_SSH_CONFIG"]})
        assert res.returncode != 0, source
        assert "restricted directory" in last_line(res.stderr) or \
            "is not in the exporting datastore" in last_line(res.stderr), res.stderr
    assert not [n for n in world.app_images() if n.startswith(f"one-app-{app_id}-")]


def test_a_market_on_another_cluster(world, lab_env, second_cluster):
    """The datastore on the lab's cluster, the market on a second one: an app's creation reads
    with the datastore's user there and writes with the market's here; its export into the
    datastore is streamed back (no clone across clusters) with the app's MD5 checked."""
    import rados
    import rbd

    env2 = second_cluster.env()
    other = {"POOL_NAME": env2["ONE_LAB_CEPH_MARKET_POOL"], "CEPH_CONF": env2["CEPH_CONF"],
             "CEPH_USER": env2["ONE_LAB_CEPH_USER"], "CEPH_KEY": env2["ONE_LAB_CEPH_KEYRING"]}
    image_id, content = world.image()
    app_id, out = world.create_app(image_id, **other)
    _, name, _ = spec_of(out["SOURCE"])
    cluster = rados.Rados(conffile=env2["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    try:
        with cluster.open_ioctx(other["POOL_NAME"]) as ioctx2:
            with rbd.Image(ioctx2, name, snapshot="app", read_only=True) as app:
                assert app.read(0, app.size()) == content, "copied into the other cluster"
            assert name not in rbd.RBD().list(world.mioctx), "not in the datastores' cluster"
            market2 = market_xml(lab_env, **other)
            new_id, res = world.export_app(out["SOURCE"], out["MD5"], market=market2)
            assert res.returncode == 0, res.stderr
            with rbd.Image(world.ioctx, f"one-{new_id}", read_only=True) as img:
                with pytest.raises(rbd.ImageNotFound):
                    img.parent_id()
                assert img.read(0, img.size()) == content
            bad_id, res = world.export_app(out["SOURCE"], "f" * 32, market=market2)
            assert res.returncode != 0 and "MD5" in last_line(res.stderr)
            assert f"one-{bad_id}" not in rbd.RBD().list(world.ioctx)
            doc = (f"<MARKET_DRIVER_ACTION_DATA>{app_xml(app_id, source=out['SOURCE'])}"
                   f"{market2}</MARKET_DRIVER_ACTION_DATA>")
            res = market(world.remotes, "delete", doc, app_id)
            assert res.returncode == 0, res.stderr
            assert not [n for n in rbd.RBD().list(ioctx2) if n.startswith("one-app-")]
    finally:
        cluster.shutdown()
