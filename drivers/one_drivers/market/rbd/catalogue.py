"""``one-drivers market import-file MARKET FILE|URL``: an appliance put into an rbd market
without an OpenNebula image to make it from (air-gapped sites carry catalogues on disks).

The file (raw or qcow2, compressed or not, local or http(s)://) goes through the same import
as a datastore's ``cp``, with its rules: local paths under RESTRICTED_DIRS refused unless under
SAFE_DIRS, images whose header names other files (backing files, external data) refused,
qcow2 converted once into the market's pool; then the app is finished as the market's
``import`` finishes one (catalogue entry, protected ``@app`` snapshot, stamp, rename). With
LIST_APPS=yes on the market, its monitor lists the app and oned registers it in every zone.
"""

from __future__ import annotations

import secrets
import socket
import time
from typing import NamedTuple

from one_drivers.ceph import ownership
from one_drivers.core.config import Settings, config_path, load_file
from one_drivers.core.errors import BadInput
from one_drivers.core.registry import get_driver
from one_drivers.core.retry import Deadline
from one_drivers.core.xmlview import Template, XmlView, parse_xml

MIB = 1 << 20


class Appliance(NamedTuple):
    name: str
    version: str = ""
    description: str = ""
    publisher: str = ""
    tags: str = ""
    vmtemplate64: str = ""


def market_settings(market: XmlView, remotes: str | None) -> Settings:
    """Driver defaults < driver configuration < the market's template; a file's import rules
    (RESTRICTED_DIRS, SAFE_DIRS) are the rbd datastore driver's unless the market sets them."""
    if market.opt("MARKET_MAD") != "rbd":
        raise BadInput(f"marketplace {market.opt('ID')} is a {market.opt('MARKET_MAD')!r} "
                       "market, not an rbd one")
    layers = [get_driver("datastore", "rbd").default_values(),
              get_driver("market", "rbd").default_values(),
              load_file(config_path("market", "rbd", remotes))]
    return Settings(layers, subject=f"marketplace {market.opt('ID')}").over(
        market.child("TEMPLATE", Template, required=False))


def fetch_market(market_id: int, timeout: float) -> XmlView:
    from one_drivers.core.oned import Oned

    oned = Oned(timeout=timeout)
    text = oned.call("one.market.info", oned.session, market_id, True)
    return XmlView(parse_xml(text, what=f"oned's answer for marketplace {market_id}",
                             root="MARKETPLACE"))


def import_file(market: XmlView, path: str, app: Appliance, settings: Settings,
                deadline: Deadline) -> dict[str, str]:
    """The app made in the market's pool; its SOURCE, MD5, SIZE."""
    from one_drivers.ceph.build import build_image
    from one_drivers.ceph.naming import ImageSpec
    from one_drivers.ceph.pool import rbd_pool
    from one_drivers.ceph.rbd_ops import ceph_errors, open_image
    from one_drivers.datastore.rbd.cp import ImportRequest, import_source
    from one_drivers.datastore.rbd.export import md5_of
    from one_drivers.datastore.rbd.sources import Requester
    from one_drivers.market.rbd import apps

    subject = settings.subject
    ids = {"market": market.opt("ID") or "", "zone": market.opt("ZONE_ID") or "0"}
    entry = {"NAME": app.name, "VERSION": app.version, "DESCRIPTION": app.description,
             "PUBLISHER": app.publisher, "TAGS": app.tags, "VMTEMPLATE64": app.vmtemplate64,
             "TYPE": "IMAGE", "FORMAT": "raw", "ORIGIN_ID": "-1",
             "REGTIME": str(int(time.time()))}
    operator = Requester(0, 0, app.name, None)  # an administrator's command on the front-end
    from one_drivers.market.rbd.actions import sweep

    with rbd_pool(settings, deadline, subject, creating=True) as pool:
        with ceph_errors("removing what interrupted file imports left", subject):
            sweep(pool, 0, {**ids, "source": "file"})
        dst = ImageSpec(pool.name, apps.image_name(0, secrets.token_hex(4)),
                        namespace=pool.access.namespace)

        def make(staging: str, stamp: dict[str, str]) -> None:
            import_source(pool, staging, stamp, ImportRequest(path, None, None, operator, 0),
                          settings, deadline, subject)
            with open_image(pool.ioctx, staging) as image:
                entry["SIZE"] = str(-(-image.size() // MIB))
                entry["MD5"] = md5_of(image, f"{pool.name}/{staging}")
                apps.write_entry(image, {k: v for k, v in entry.items() if v})
                image.create_snap(apps.APP_SNAP)
                image.protect_snap(apps.APP_SNAP)

        with ceph_errors(f"making the app image {dst}", subject):
            build_image(pool, dst, meta=ownership.stamp("app", app=0, source="file", **ids),
                        identity=("app", "market", "zone"), subject=subject,
                        seconds=deadline.remaining(), make=make)
    host = settings.get("EXPORT_HOST") or socket.getfqdn()
    return {"SOURCE": apps.source_url(host, dst), "MD5": entry["MD5"], "SIZE": entry["SIZE"]}
