"""What an app is in the market pool: its image's name, its snapshot, its SOURCE and its
catalogue entry.

``one-app-<app id>-<nonce>``: the app id is the creating zone's (a shared pool may hold apps of
several zones; the nonce keeps two of them apart); ``@app`` is the protected snapshot the SOURCE
names and datastores clone; the entry (NAME, PUBLISHER, VERSION, ...) is JSON in the image-meta
key ``one_drivers_app``, so any zone reading the pool sees the same catalogue.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from one_drivers.ceph.naming import ImageSpec

APP_SNAP = "app"
ENTRY_KEY = "one_drivers_app"
NAME = re.compile(r"^one-app-(\d+)-([0-9a-f]{8})$")
# the catalogue entry: what oned reads from a listed app (MarketPlaceApp::from_template64)
ENTRY_FIELDS = ("NAME", "SOURCE", "ORIGIN_ID", "IMPORT_ID", "TYPE", "PUBLISHER", "FORMAT",
                "DESCRIPTION", "VERSION", "TAGS", "SIZE", "MD5", "REGTIME", "VMTEMPLATE64",
                "APPTEMPLATE64")


def image_name(app_id: int, nonce: str) -> str:
    return f"one-app-{app_id}-{nonce}"


def is_app_name(name: str) -> bool:
    return NAME.match(name) is not None


def source_url(host: str, spec: ImageSpec) -> str:
    """``rbd://<host>/<pool>[/<namespace>]/<image>@app``."""
    path = "/".join(urllib.parse.quote(part)
                    for part in (spec.pool, spec.namespace, spec.name) if part)
    return f"rbd://{host}/{path}@{APP_SNAP}"


def is_app_snapshot(spec: ImageSpec) -> bool:
    """Whether ``spec`` names an app's snapshot (by name only: the stamp says whose)."""
    return spec.snap == APP_SNAP and is_app_name(spec.name)


def read_entry(image: Any) -> dict[str, str]:
    try:
        entry = json.loads(image.metadata_get(ENTRY_KEY))
    except (KeyError, ValueError):
        return {}
    return {str(k): str(v) for k, v in entry.items()} if isinstance(entry, dict) else {}


def write_entry(image: Any, entry: dict[str, str]) -> None:
    image.metadata_set(ENTRY_KEY, json.dumps(entry, sort_keys=True))


def template_line(entry: dict[str, str]) -> str:
    """The entry as an OpenNebula template (what ``APP="<base64>"`` carries)."""
    lines = []
    for key in ENTRY_FIELDS:
        value = entry.get(key)
        if value:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"
