"""``import``, ``delete`` and ``monitor`` of the ``rbd`` marketplace (layout: :mod:`.apps`).

import runs after the datastore's ``export`` (ours answers ``rbd://host/pool/one-<id>``): the
image's allocated extents are copied from the datastore's pool (read with the datastore's own
Ceph user, possibly another cluster) into the market's pool (written with the market's), under
a staging name, snapshotted ``app`` and protected, stamped, then renamed: nothing is staged on a
disk and nothing is downloaded. A file datastore's export (a path in its directory here,
``ssh://<bridge>:<path>``, or http) is streamed in with its MD5 checked. A crash leaves at
most a staging image, which the app's delete (or a later import of the same app) removes.

delete removes the app's image, only when our stamp says it is an app; while datastore images
cloned from it live it goes to the RBD trash instead, and ``monitor`` collects it once they are
gone. monitor answers the pool's usage (quota-aware, as the datastore monitor) and, with
LIST_APPS=yes, every app of the pool as ``APP="<base64 template>"``.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import time
from typing import Any

from one_drivers.ceph import ownership
from one_drivers.ceph.naming import ImageSpec, staging_name
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, children, create, open_image
from one_drivers.core import faults, log
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.core.xmlview import Template
from one_drivers.market.rbd import apps

MIB = 1 << 20


def market_settings(call: Call) -> Settings:
    """Defaults < driver config file < the market's template."""
    return call.settings.over(call.doc.marketplace.child("TEMPLATE", Template, required=False))


def _market_ids(call: Call) -> dict[str, str]:
    market = call.doc.marketplace
    return {"market": market.opt("ID") or "", "zone": market.opt("ZONE_ID") or "0"}


def _source_settings(call: Call, spec: ImageSpec) -> Settings:
    """How to read the exported image: its datastore's Ceph access (the rbd datastore driver's
    defaults and configuration file, then the datastore's template), in the pool the export
    named."""
    from one_drivers.core.config import config_path, load_file
    from one_drivers.core.registry import get_driver

    base = Settings([get_driver("datastore", "rbd").default_values(),
                     load_file(config_path("datastore", "rbd", call.extras.get("remotes")))],
                    subject=call.subject)
    datastore = call.doc.child("DATASTORE", Template, required=False)
    return base.over(datastore.child("TEMPLATE", Template, required=False)).over(
        {"POOL_NAME": spec.pool})


def _entry(call: Call, size_mb: int, md5: str) -> dict[str, str]:
    app = call.doc.app
    template = app.child("TEMPLATE", Template, required=False)
    entry = {key: app.opt(key) or template.get(key) or ""
             for key in ("NAME", "DESCRIPTION", "VERSION", "APPTEMPLATE64", "PUBLISHER", "TAGS",
                         "VMTEMPLATE64")}
    entry.update({"TYPE": "IMAGE", "FORMAT": "raw", "SIZE": str(size_mb), "MD5": md5,
                  "REGTIME": str(int(time.time())), "ORIGIN_ID": "-1",
                  "IMPORT_ID": str(call.args["id"])})
    return {k: v for k, v in entry.items() if v}


def import_app(call: Call) -> str:
    """The app's image made in the market's pool from the datastore's export: an ``rbd://``
    export is copied inside Ceph; anything else (a file datastore's export: a path on this
    host, ``ssh://<host>:<path>`` on its bridge, or an http(s) URL) is streamed in, with the
    export's MD5 checked over the bytes as fetched (a qcow2 converted once, as DS cp does)."""
    from one_drivers.ceph.build import build_image

    settings = market_settings(call)
    app_id = int(call.args["id"])
    source = call.doc.text("IMPORT_SOURCE")
    md5 = call.doc.text("MD5")
    ids = _market_ids(call)
    with rbd_pool(settings, call.deadline, call.subject, creating=True) as market:
        sweep(market, app_id, ids)
        name = apps.image_name(app_id, secrets.token_hex(4))
        dst = ImageSpec(market.name, name, namespace=market.access.namespace)
        meta = ownership.stamp("app", app=app_id, **ids)
        entry: dict[str, str] = {}

        def finish(app_image: Any, staging: str) -> None:
            """The catalogue entry, and the protected snapshot the SOURCE names."""
            from one_drivers.datastore.rbd.export import md5_of

            size_mb = -(-app_image.size() // MIB)
            # a converted image's checksum is its raw data's, what an export stream reads
            raw_md5 = md5 if source.lower().startswith("rbd://") or \
                call.doc.opt("FORMAT") in (None, "raw") else md5_of(app_image, staging)
            entry.update(_entry(call, size_mb, raw_md5))
            faults.point("market:copied")
            apps.write_entry(app_image, entry)
            app_image.create_snap(apps.APP_SNAP)
            app_image.protect_snap(apps.APP_SNAP)

        def make(staging: str, stamp: dict[str, str]) -> None:
            if source.lower().startswith("rbd://"):
                _copy_rbd(call, market, source, staging, stamp)
            else:
                _stream(call, market, source, md5, staging, stamp, settings)
            with open_image(market.ioctx, staging) as app_image:
                finish(app_image, staging)

        with ceph_errors(f"making the app image {dst}", call.subject):
            build_image(market, dst, meta=meta, identity=("app", "market", "zone"),
                        subject=call.subject, seconds=call.deadline.remaining(), make=make)
        faults.point("market:built")
    host = settings.get("EXPORT_HOST") or socket.getfqdn()
    return (f'SOURCE="{apps.source_url(host, dst)}"\nMD5="{entry["MD5"]}"\n'
            f'SIZE="{entry["SIZE"]}"\nFORMAT="raw"\n')


def _copy_rbd(call: Call, market: Pool, source: str, staging: str,
              stamp: dict[str, str]) -> None:
    """The exported image's allocated extents, read with its datastore's Ceph user."""
    from one_drivers.ceph.copying import copy_extents, extents
    from one_drivers.datastore.rbd.sources import parse_rbd_url

    src = parse_rbd_url(source)
    with rbd_pool(_source_settings(call, src), call.deadline, call.subject) as origin, \
            ceph_errors(f"reading {src}", call.subject), \
            open_image(origin.ioctx, src.name, snapshot=src.snap, read_only=True) as image:
        create(market.ioctx, staging, image.size(), data_pool=market.access.data_pool,
               meta=stamp)
        with open_image(market.ioctx, staging) as app_image:
            copied = copy_extents(image, app_image, extents(image))
    log.info(f"copied {copied >> 20} MiB of {src} into {market.name}/{staging}")


def _stream(call: Call, market: Pool, source: str, md5: str, staging: str,
            stamp: dict[str, str], settings: Settings) -> None:
    """A file datastore's export into the app image. The source is the export's answer, not a
    tenant's text; a local path must still be inside the exporting datastore's directory."""
    import subprocess
    import urllib.parse

    from one_drivers.core import remote
    from one_drivers.datastore.rbd.cp import ImportRequest, import_source

    base = call.doc.opt("DATASTORE/BASE_PATH") or ""
    rules = settings.over({"RESTRICTED_DIRS": "/", "SAFE_DIRS": base})
    path, data, proc = source, None, None
    if source.startswith("ssh://"):  # on the datastore's bridge: read there, streamed here
        host, sep, path = source[len("ssh://"):].partition(":")
        if not sep or not path.startswith("/"):
            raise BadInput(f"{source!r} is not ssh://<host>:<path>")
        if not path.startswith(base.rstrip("/") + "/") or "/../" in path:
            raise BadInput(f"{path} is not in the exporting datastore's {base}")
        proc = remote.popen(remote.check_host(host), ["cat", "--", path],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        data = proc.stdout
    elif urllib.parse.urlsplit(source).scheme not in ("", "file", "http", "https"):
        raise BadInput(f"the rbd market cannot read the export {source!r}",
                       hint="create the app from an rbd, file or http(s) source")
    request = ImportRequest(path, md5, None, None, int(call.args["id"]), data)
    try:
        import_source(market, staging, stamp, request, rules, call.deadline, call.subject)
    finally:
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
    if proc is not None and proc.returncode not in (0, -9):
        raise ActionFailed(f"reading {source} failed (exit {proc.returncode})")


def sweep(market: Pool, app_id: int, wanted: dict[str, str], *, finished: bool = False) -> int:
    """Remove what interrupted imports of this app left: staging images stamped with
    ``wanted`` (zone, market, ...) whose builder is gone; with ``finished`` (a delete of an app
    oned has no SOURCE for: the import ended before oned heard of it) its finished images
    too."""
    import rbd

    from one_drivers.ceph.build import abandoned, drop_staging

    prefix, suffix = f"one-app-{app_id}-", staging_name("")
    wanted = {**wanted, "app": str(app_id)}
    dropped = 0
    for name in rbd.RBD().list(market.ioctx):
        staging = name.endswith(suffix)
        if not name.startswith(prefix) or not (staging or finished):
            continue
        with open_image(market.ioctx, name, read_only=True) as image:
            meta = ownership.read(image)
            # killed right after creating it: not stamped yet, nobody's but a dead builder's
            blank = staging and not ownership.stamped(image)
        if not blank and (meta.get("kind") != "app"
                          or any(meta.get(k) != v for k, v in wanted.items())
                          # a file import's app 0 is not the zone's app 0
                          or meta.get("source") != wanted.get("source")):
            continue
        if staging:
            if not abandoned(market, ImageSpec(market.name, name.removesuffix(suffix))):
                continue  # being built right now
            drop_staging(market, name)
        elif not _remove(market, name):
            raise ActionFailed(f"{market.name}/{name} has clones: not removed")
        dropped += 1
    return dropped


def _app_spec(call: Call, market: Pool) -> ImageSpec | None:
    from one_drivers.datastore.rbd.sources import parse_rbd_url

    source = call.doc.app.opt("SOURCE")
    if not source:
        return None
    spec = parse_rbd_url(source)
    if spec.pool != market.name or spec.namespace != market.access.namespace \
            or not apps.is_app_snapshot(spec):
        raise ActionFailed(f"{spec} is not an app of this market (pool {market.name}"
                           + (f", namespace {market.access.namespace}"
                              if market.access.namespace else "") + "): not removed",
                           hint="remove it by hand if it is really an app")
    return spec._replace(snap=None)


def delete(call: Call) -> None:
    import rbd

    settings = market_settings(call)
    app_id = int(call.args["id"])
    with rbd_pool(settings, call.deadline, call.subject) as market, \
            ceph_errors("removing the app", call.subject):
        spec = _app_spec(call, market)
        if spec is None:  # an import that failed: what it left, if anything
            n = sweep(market, app_id, _market_ids(call), finished=True)
            log.info(f"app {app_id} has no SOURCE: removed {n} image(s) an import left")
            return
        try:
            with open_image(market.ioctx, spec.name) as image:
                if ownership.read(image).get("kind") != "app":
                    raise ActionFailed(f"{spec} is not stamped as a one-drivers app: not "
                                       "removed", hint="remove it by hand if it is really an app")
                busy = apps.APP_SNAP in {s["name"] for s in image.list_snaps()} and \
                    children(image, apps.APP_SNAP)
        except rbd.ImageNotFound:
            log.info(f"{spec} is already gone")
            return
        if busy:
            rbd.RBD().trash_move(market.ioctx, spec.name, 0)
            log.info(f"{spec} has datastore images cloned from it: hidden in the RBD trash "
                     "until they are gone (collected by the market's monitor)")
            return
        _remove(market, spec.name)


def _remove(market: Pool, name: str, image_id: str | None = None) -> bool:
    """Unprotect and remove the app snapshot, then the image (by name, or by trash id);
    False when a clone appeared meanwhile (the image stays, or stays in the trash)."""
    import rbd

    image = rbd.Image(market.ioctx, name if image_id is None else None, image_id=image_id)
    try:
        for snap in image.list_snaps():
            if children(image, snap["name"]):
                return False
            if image.is_protected_snap(snap["name"]):
                image.unprotect_snap(snap["name"])
            image.remove_snap(snap["name"])
    finally:
        image.close()
    faults.point("market:snapshot-removed")
    try:
        if image_id is None:
            rbd.RBD().remove(market.ioctx, name)
        else:
            rbd.RBD().trash_remove(market.ioctx, image_id, True)
    except rbd.ImageNotFound:
        pass
    log.info(f"removed the app image {market.name}/{name}")
    return True


def collect_hidden(market: Pool) -> int:
    """Remove the apps hidden in the trash by delete whose last clone has gone."""
    import rbd

    removed = 0
    for entry in rbd.RBD().trash_list(market.ioctx):
        if entry.get("source", "USER") != "USER" or not apps.is_app_name(entry["name"]):
            continue
        with contextlib.suppress(rbd.ImageNotFound, rbd.ImageBusy):
            if _remove(market, entry["name"], image_id=entry["id"]):
                removed += 1
    return removed


def monitor(call: Call) -> str:
    from one_drivers.datastore.rbd.monitor import capacity

    settings = market_settings(call)
    with rbd_pool(settings, call.deadline, call.subject) as market:
        df = market.session.mon_command({"prefix": "df", "detail": "detail"},
                                        "the pool usage query")
        out = capacity(df, market.name, market.access.data_pool).render()
        with ceph_errors("collecting deleted apps", call.subject):
            collect_hidden(market)
        if settings.bool("LIST_APPS", False):
            with ceph_errors("listing the apps", call.subject):
                host = settings.get("EXPORT_HOST") or socket.getfqdn()
                out += "".join(f'APP="{line}"\n' for line in _listed(market, host))
    return out


def _listed(market: Pool, host: str) -> list[str]:
    import rbd

    lines = []
    for name in sorted(rbd.RBD().list(market.ioctx)):
        if not apps.is_app_name(name):
            continue
        try:
            with open_image(market.ioctx, name, read_only=True) as image:
                if ownership.read(image).get("kind") != "app":
                    continue
                entry = apps.read_entry(image)
        except rbd.ImageNotFound:  # removed while listing
            continue
        spec = ImageSpec(market.name, name, namespace=market.access.namespace)
        entry["SOURCE"] = apps.source_url(host, spec)
        lines.append(base64.b64encode(apps.template_line(entry).encode()).decode())
    return lines


