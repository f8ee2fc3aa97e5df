"""BRIDGE_LIST mode: when the front-end has no Ceph client access (CEPH_ACCESS=bridge), the same
action runs on a bridge host over ssh.

Hosts are tried round-robin from ``IMAGE_ID % len(BRIDGE_LIST)``; a host ssh cannot reach is
skipped. The bridge gets the call verbatim (argv, the base64 document) and answers as the action
would here: its INFO lines are relayed, its exit code and last line become ours. A ``cp`` of a file
on the front-end sends the file after the document, checked against RESTRICTED_DIRS here.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from one_drivers.core import relay
from one_drivers.core.contract import Call
from one_drivers.core.errors import MissingAttribute
from one_drivers.core.runner import FRAMED_STDIN
from one_drivers.datastore.rbd.common import ds_settings
from one_drivers.datastore.rbd.sources import GRANTED_SOURCE


def route(call: Call, action: Callable[[Call], str | None]) -> str | None:
    settings = ds_settings(call)
    if settings.get("CEPH_ACCESS", "local") != "bridge" or relay.on_far_side():
        return action(call)
    hosts = (settings.get("BRIDGE_LIST") or "").split()
    if not hosts:
        raise MissingAttribute("BRIDGE_LIST", subject=call.subject,
                               hint="CEPH_ACCESS=bridge needs bridge hosts in the datastore")
    if call.action == "stat" and (_local_path(call) or _is_http(call)):
        return action(call)  # nothing of Ceph: answer here
    # the program started over ssh: only the driver's own configuration may choose it
    python = call.settings.get("BRIDGE_PYTHON") or sys.executable
    granted = _granted_source(call)
    local_file = _local_source(call)
    start = call.doc.image.id if call.doc.elem.find("IMAGE") is not None else 0

    def attempt(host: str) -> str | None:
        if local_file is not None:
            os.lseek(local_file, 0, os.SEEK_SET)
        return _run_on(host, python, call, local_file, granted)

    try:
        return relay.first_reachable(hosts, start, attempt)
    finally:
        if local_file is not None:
            os.close(local_file)


def _is_http(call: Call) -> bool:
    path: str | None = (call.doc.image.opt("PATH")
                        if call.doc.elem.find("IMAGE") is not None else None)
    return path is not None and urllib.parse.urlsplit(path).scheme in ("http", "https")


def _local_path(call: Call) -> Path | None:
    if call.action not in ("cp", "stat"):
        return None
    path: str = call.doc.image.text("PATH")
    scheme = urllib.parse.urlsplit(path).scheme
    if scheme not in ("", "file"):
        return None
    return Path(urllib.parse.urlsplit(path).path if scheme else path)


def _local_source(call: Call) -> int | None:
    """The front-end file a bridge ``cp`` imports, opened once and checked here (the file is
    here, so is the check); its descriptor is what is sent."""
    local = _local_path(call)
    if local is None:
        return None
    from one_drivers.datastore.rbd.sources import open_local

    return open_local(local, ds_settings(call))


def _granted_source(call: Call) -> str | None:
    """An ``rbd://`` PATH granted by a driver to this image, checked here (the grant key is the
    front-end's, not the bridge's): the bridge is told it was, for that source only."""
    if call.action not in ("cp", "stat") or call.doc.elem.find("IMAGE") is None:
        return None
    from one_drivers.ceph import grants
    from one_drivers.datastore.rbd.sources import Requester

    image = call.doc.image
    path = image.opt("PATH") or ""
    requester = Requester.of(image)
    if path.lower().startswith("rbd://") and grants.valid(requester.grant, path, requester.name):
        return path
    return None


def _run_on(host: str, python: str, call: Call, local_file: int | None,
            granted: str | None = None) -> str | None:
    """Run the call on ``host``; None when ssh cannot reach it. A front-end file travels after
    the document's line (framed stdin)."""
    framed = local_file is not None
    payload = call.extras["stdin"].rstrip(b"\n") + (b"\n" if framed else b"")
    env = {FRAMED_STDIN: "1"} if framed else {}
    if granted:
        env[GRANTED_SOURCE] = granted
    return relay.run_on(host, python, call, payload, send_file=local_file, env=env or None)
