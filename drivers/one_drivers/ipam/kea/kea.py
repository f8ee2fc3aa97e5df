"""Kea's DHCPv4 server through its control agent's REST API (``kea-ctrl-agent``).

Subnets are changed only through the API: ``config-get``, the change, ``config-set`` (Kea applies
a whole configuration or none of it) and ``config-write`` (Kea writes its own file, the one it
was started with: no path of ours). Leases with the ``lease_cmds`` hook. A subnet or a lease the
driver made carries ``user-context: {"one-drivers": {...}}``: that is how it knows what it owns,
and it changes or removes nothing without it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from one_drivers.core.config import Settings
from one_drivers.core.errors import ActionFailed, BackendUnavailable, BadInput
from one_drivers.core.http import exchange
from one_drivers.core.retry import Deadline

OWNER = "one-drivers"
# Kea's result codes (src/lib/cc/command_interpreter.h)
SUCCESS, ERROR, UNSUPPORTED, EMPTY, CONFLICT = 0, 1, 2, 3, 4
INFINITE = 4294967295


class Kea:
    """One control agent, every call inside the action's deadline."""

    def __init__(self, settings: Settings, deadline: Deadline) -> None:
        self.url = settings.get("KEA_URL") or "http://127.0.0.1:8000/"
        self.timeout = settings.float("KEA_TIMEOUT", 5)
        self.deadline = deadline
        self.headers = {"Content-Type": "application/json"}
        credentials = settings.get("KEA_CREDENTIALS")
        if credentials:  # "user:password" in a file only root can change; never in argv or logs
            from one_drivers.core.safefs import read_trusted_file

            secret = (read_trusted_file(credentials) or b"").strip()
            if b":" not in secret:
                raise BadInput(f"KEA_CREDENTIALS {credentials} holds no user:password")
            self.headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                *, accept: tuple[int, ...] = (SUCCESS,)) -> tuple[int, Any]:
        """(result, arguments) of ``name`` sent to dhcp4; a result not in ``accept`` fails."""
        body: dict[str, Any] = {"command": name, "service": ["dhcp4"]}
        if arguments is not None:
            body["arguments"] = arguments
        status, payload = exchange(
            "POST", self.url, None, json.dumps(body).encode(), headers=self.headers,
            timeout=self.deadline.cap(self.timeout, f"asking Kea to {name}"), name="Kea",
            hint="check KEA_URL and that kea-ctrl-agent and kea-dhcp4 run")
        if status == 401:
            raise BackendUnavailable("Kea's control agent refused our credentials",
                                     hint="check KEA_CREDENTIALS")
        try:
            answer = json.loads(payload)
            if isinstance(answer, list):
                answer = answer[0]
            result = int(answer["result"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendUnavailable(f"Kea's control agent answered HTTP {status} to {name} "
                                     "with no result") from None
        if result not in accept:
            text = str(answer.get("text", ""))[:300]
            # the agent without its server: "unable to forward command to the dhcp4 service"
            if result == ERROR and "forward command" in text.lower():
                raise BackendUnavailable(f"Kea's DHCPv4 server did not answer {name}: {text}",
                                         hint="check that kea-dhcp4 runs")
            raise ActionFailed(f"Kea refused {name}: {text}")
        return result, answer.get("arguments")

    # -- configuration --------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        _, arguments = self.command("config-get")
        if not isinstance(arguments, dict) or "Dhcp4" not in arguments:
            raise BackendUnavailable("Kea's config-get answer has no Dhcp4 configuration")
        arguments.pop("hash", None)
        return arguments

    def apply(self, config: dict[str, Any], before: dict[str, Any]) -> None:
        """Set ``config`` and have Kea write it to its file; if the write fails, ``before`` is
        set again (Kea must not run a configuration its file would lose at restart)."""
        self.command("config-set", config)
        try:
            self.command("config-write", {})
        except (ActionFailed, BackendUnavailable):
            self.command("config-set", before)
            raise

    # -- leases ---------------------------------------------------------------------------------

    def lease(self, ip: str) -> dict[str, Any] | None:
        result, arguments = self.command("lease4-get", {"ip-address": ip}, accept=(SUCCESS, EMPTY))
        return arguments if result == SUCCESS and isinstance(arguments, dict) else None

    def leases(self, subnet_id: int) -> list[dict[str, Any]]:
        result, arguments = self.command("lease4-get-all", {"subnets": [subnet_id]},
                                         accept=(SUCCESS, EMPTY))
        if result != SUCCESS or not isinstance(arguments, dict):
            return []
        return list(arguments.get("leases") or [])

    def add_lease(self, lease: dict[str, Any]) -> bool:
        """True when added; False when the address has a lease already."""
        result, _ = self.command("lease4-add", lease, accept=(SUCCESS, ERROR, CONFLICT))
        if result == SUCCESS:
            return True
        if self.lease(lease["ip-address"]) is not None:
            return False
        raise ActionFailed(f"Kea refused lease4-add for {lease['ip-address']}")

    def delete_lease(self, ip: str) -> None:
        self.command("lease4-del", {"ip-address": ip}, accept=(SUCCESS, EMPTY))


def subnets(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every subnet of the configuration, shared networks' included."""
    dhcp4 = config["Dhcp4"]
    found = list(dhcp4.get("subnet4") or [])
    for shared in dhcp4.get("shared-networks") or []:
        found.extend(shared.get("subnet4") or [])
    return found


def ours(item: dict[str, Any]) -> dict[str, Any] | None:
    """The driver's mark on a subnet or a lease (None: not made by us)."""
    context = item.get("user-context")
    mark = context.get(OWNER) if isinstance(context, dict) else None
    return mark if isinstance(mark, dict) else None
