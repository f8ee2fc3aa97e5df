"""CEPH_ACCESS=bridge in the market's template: the action runs on a BRIDGE_LIST host over ssh,
so a front-end without Ceph access (or that should carry no image data) never touches Ceph:
an app's copy goes from the datastore's pool to the market's through the bridge alone.

Hosts are tried in order from ``app id % len(BRIDGE_LIST)``; one ssh cannot reach is skipped.
The bridge gets the call verbatim (the document is in argv for market actions) through the one
relay path (:mod:`one_drivers.core.relay`); the program it runs is BRIDGE_PYTHON of the
driver's own configuration, never the market's template.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from one_drivers.core import relay
from one_drivers.core.contract import Call
from one_drivers.core.errors import MissingAttribute
from one_drivers.market.rbd.actions import market_settings


def route(call: Call, action: Callable[[Call], str | None]) -> str | None:
    settings = market_settings(call)
    if settings.get("CEPH_ACCESS", "local") != "bridge" or relay.on_far_side():
        return action(call)
    hosts = (settings.get("BRIDGE_LIST") or "").split()
    if not hosts:
        raise MissingAttribute("BRIDGE_LIST", subject=call.subject,
                               hint="CEPH_ACCESS=bridge needs bridge hosts in the market")
    python = call.settings.get("BRIDGE_PYTHON") or sys.executable
    return relay.first_reachable(hosts, int(call.args["id"]),
                                 lambda host: relay.run_on(host, python, call, b""))
