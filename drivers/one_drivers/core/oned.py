"""Reading VM and datastore documents from oned over XML-RPC, in one module.

TM action lines carry no templates: like upstream (which runs ``onevm show -x``, ~240 ms of Ruby
each time) we ask oned, but through its XML-RPC API. ``xmlrpc.client`` costs ~24 ms of imports
(http.client, email) and pyone ~90 ms, more than the whole Ceph work of a clone, so this is a
minimal client on a socket and ElementTree, which the driver has loaded anyway. It speaks exactly
what oned needs: one POST of a ``methodCall`` with string/int/boolean parameters, one response.

Credentials as OpenNebula's own tools find them: ``ONE_AUTH`` (a file holding ``user:password``,
default ``~/.one/one_auth``) and ``ONE_XMLRPC`` (default ``http://localhost:2633/RPC2``). The
session string travels in the request body, never on a command line.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from one_drivers.core.documents import VM, Datastore, Image
from one_drivers.core.errors import (
    ActionFailed,
    BackendUnavailable,
    BadInput,
    NotFound,
    PermissionDenied,
)
from one_drivers.core.http import exchange, split_endpoint  # noqa: F401 - split_endpoint: its old home
from one_drivers.core.xmlview import escape, parse_xml

DEFAULT_ENDPOINT = "http://localhost:2633/RPC2"
# OpenNebula's error codes (include/RequestManager... ErrorCode)
AUTHENTICATION, AUTHORIZATION, NO_EXISTS = 0x0100, 0x0200, 0x0400

Param = str | int | bool


class Oned:
    """``Oned().vm(42)`` / ``Oned().datastore(100)``: one XML-RPC call each, with a timeout."""

    def __init__(self, endpoint: str | None = None, session: str | None = None,
                 timeout: float = 15.0) -> None:
        self.endpoint = endpoint or os.environ.get("ONE_XMLRPC") or DEFAULT_ENDPOINT
        self._session = session
        self.timeout = timeout

    @property
    def session(self) -> str:
        if self._session is None:
            path = os.environ.get("ONE_AUTH") or os.path.expanduser("~/.one/one_auth")
            try:
                with open(path, encoding="utf-8") as fh:
                    self._session = fh.read().strip().splitlines()[0]
            except (OSError, IndexError):
                raise PermissionDenied(f"cannot read oned credentials from {path}",
                                       hint="set ONE_AUTH to a file holding user:password"
                                       ) from None
        return self._session

    def vm(self, vm_id: int) -> VM:
        text = self.call("one.vm.info", self.session, vm_id, True)
        return VM(parse_xml(text, what=f"oned's answer for VM {vm_id}", root="VM"))

    def datastore(self, ds_id: int) -> Datastore:
        text = self.call("one.datastore.info", self.session, ds_id, True)
        return Datastore(parse_xml(text, what=f"oned's answer for datastore {ds_id}",
                                   root="DATASTORE"))

    def image(self, image_id: int) -> Image:
        text = self.call("one.image.info", self.session, image_id, True)
        return Image(parse_xml(text, what=f"oned's answer for image {image_id}", root="IMAGE"))

    # -- the wire ---------------------------------------------------------------------------
    def call(self, method: str, *params: Param) -> str:
        body = request_body(method, params)
        status, payload = self._post(body)
        if status != 200:
            raise BackendUnavailable(f"oned at {self.endpoint} answered HTTP {status} to {method}")
        ok, value, code = parse_response(payload, method)
        if ok:
            return value
        if code in (AUTHENTICATION, AUTHORIZATION):
            raise PermissionDenied(f"oned refused {method}: {value}",
                                   hint="check the credentials in ONE_AUTH")
        if code == NO_EXISTS:
            raise NotFound(f"oned: {value}")
        raise ActionFailed(f"oned failed {method}: {value}")

    def _post(self, body: bytes) -> tuple[int, bytes]:
        return exchange("POST", self.endpoint, None, body,
                        headers={"Content-Type": "text/xml"}, timeout=self.timeout,
                        name="oned", hint="check ONE_XMLRPC and that oned is running")


def request_body(method: str, params: tuple[Param, ...]) -> bytes:
    values = []
    for p in params:
        if isinstance(p, bool):
            values.append(f"<boolean>{int(p)}</boolean>")
        elif isinstance(p, int):
            values.append(f"<int>{p}</int>")
        else:
            values.append(f"<string>{escape(p)}</string>")
    parts = "".join(f"<param><value>{v}</value></param>" for v in values)
    return (f"<?xml version='1.0'?><methodCall><methodName>{escape(method)}</methodName>"
            f"<params>{parts}</params></methodCall>").encode()


def parse_response(payload: bytes, method: str) -> tuple[bool, str, int]:
    """oned answers ``[success, result-or-message, error code, ...]``."""
    try:
        root = ET.fromstring(payload)  # noqa: S314 - oned's answer
    except ET.ParseError as exc:
        raise BadInput(f"oned's answer to {method} is not XML-RPC ({exc})") from None
    fault = root.find("fault")
    if fault is not None:
        raise ActionFailed(f"oned raised an XML-RPC fault for {method}")
    values = root.findall("params/param/value/array/data/value")
    if len(values) < 2:
        raise BadInput(f"oned's answer to {method} has an unexpected shape")
    ok = _scalar(values[0]) in ("1", "true")
    message = _scalar(values[1])
    code = int(_scalar(values[2]) or 0) if len(values) > 2 else 0
    return ok, message, code


def _scalar(value: ET.Element) -> str:
    child = value[0] if len(value) else None
    text = (child.text if child is not None else value.text) or ""
    return text
