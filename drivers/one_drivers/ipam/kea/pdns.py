"""PowerDNS's HTTP API: the A and PTR records of the addresses the driver leases.

oned's IPAM messages never name the VM, so an address's name is made from the address itself
(``one-10-0-0-5.<zone>``, HOSTNAME_PREFIX), the way a provider names its hosts; the PTR record
in a reverse zone that PowerDNS serves gives a guest that name (OpenNebula's context packages
set the hostname from it). Only zones listed in DNS_ZONES are ever written; records carry a
comment naming the driver, and a record is removed only while it still holds our address.
"""

from __future__ import annotations

import json
from typing import Any

from one_drivers.core.config import Settings
from one_drivers.core.errors import ActionFailed, BackendUnavailable, BadInput, PermissionDenied
from one_drivers.core.http import exchange
from one_drivers.core.retry import Deadline
from one_drivers.ipam.kea.ranges import domain, ip_text

COMMENT = "one-drivers ipam kea"


def allowed_zones(settings: Settings) -> list[str]:
    return [domain(z, "DNS_ZONES") for z in (settings.get("DNS_ZONES") or "").split()]


def host_name(ip: int, zone: str, prefix: str) -> str:
    return f"{prefix}{ip_text(ip).replace('.', '-')}.{zone}"


def reverse_name(ip: int) -> str:
    return ".".join(reversed(ip_text(ip).split("."))) + ".in-addr.arpa."


class PowerDns:
    def __init__(self, settings: Settings, deadline: Deadline) -> None:
        from one_drivers.core.safefs import read_trusted_file

        self.url = (settings.get("PDNS_URL") or "http://127.0.0.1:8081").rstrip("/")
        self.server = settings.get("PDNS_SERVER") or "localhost"
        self.timeout = settings.float("PDNS_TIMEOUT", 5)
        self.ttl = settings.int("DNS_TTL", 300)
        self.prefix = settings.get("HOSTNAME_PREFIX") or "one-"
        self.zones = allowed_zones(settings)
        self.deadline = deadline
        key_file = settings.get("PDNS_API_KEY_FILE") or "/etc/one/ipam/kea/pdns-api-key"
        key = (read_trusted_file(key_file) or b"").strip()  # only root can change it
        if not key:
            raise BadInput(f"PDNS_API_KEY_FILE {key_file} is missing or empty")
        self.headers = {"X-API-Key": key.decode(), "Content-Type": "application/json"}

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, payload = exchange(
            method, self.url, f"/api/v1/servers/{self.server}{path}",
            None if body is None else json.dumps(body).encode(), headers=self.headers,
            timeout=self.deadline.cap(self.timeout, "asking PowerDNS"), name="PowerDNS",
            hint="check PDNS_URL and that pdns_server runs with its API on")
        if status in (401, 403):
            raise BackendUnavailable("PowerDNS refused our API key", hint="check PDNS_API_KEY_FILE")
        try:
            return status, json.loads(payload) if payload.strip() else None
        except ValueError:
            return status, None

    def check_zone(self, zone: str) -> None:
        """A zone the AR may name: listed in DNS_ZONES and served by PowerDNS."""
        if zone not in self.zones:
            raise PermissionDenied(f"DNS_ZONE {zone} is not one of the zones this driver may "
                                   "write", hint="the operator lists them in DNS_ZONES")
        status, _ = self._call("GET", f"/zones/{zone}?rrsets=false")
        if status == 404 or status == 422:
            raise BadInput(f"PowerDNS serves no zone {zone}")
        if status != 200:
            raise BackendUnavailable(f"PowerDNS answered HTTP {status} about zone {zone}")

    def reverse_zone(self, ip: int) -> str | None:
        """The longest allowed reverse zone the address's PTR name falls in."""
        name = reverse_name(ip)
        found = [z for z in self.zones if z.endswith("in-addr.arpa.")
                 and (name == z or name.endswith("." + z))]
        return max(found, key=len) if found else None

    def _patch(self, zone: str, rrsets: list[dict[str, Any]]) -> None:
        status, answer = self._call("PATCH", f"/zones/{zone}", {"rrsets": rrsets})
        if status not in (200, 204):
            error = answer.get("error") if isinstance(answer, dict) else ""
            raise ActionFailed(f"PowerDNS refused a change of zone {zone} (HTTP {status}"
                               f"{': ' + str(error)[:200] if error else ''})")

    def _rrset(self, name: str, kind: str, content: str | None) -> dict[str, Any]:
        if content is None:
            return {"name": name, "type": kind, "changetype": "DELETE"}
        return {"name": name, "type": kind, "ttl": self.ttl, "changetype": "REPLACE",
                "records": [{"content": content, "disabled": False}],
                "comments": [{"content": COMMENT, "account": "one-drivers"}]}

    def publish(self, ip: int, zone: str) -> None:
        """The address's A record, and its PTR when an allowed reverse zone holds it."""
        name = host_name(ip, zone, self.prefix)
        self._patch(zone, [self._rrset(name, "A", ip_text(ip))])
        reverse = self.reverse_zone(ip)
        if reverse:
            self._patch(reverse, [self._rrset(reverse_name(ip), "PTR", name)])

    def records(self, name: str) -> list[dict[str, Any]]:
        # (the search matches names without their final dot; the exact name is picked below)
        query = name.rstrip(".")
        status, found = self._call("GET", f"/search-data?q={query}&max=20&object_type=record")
        if status != 200 or not isinstance(found, list):
            raise BackendUnavailable(f"PowerDNS answered HTTP {status} to a search for {name}")
        return [r for r in found if r.get("name") == name]

    def zone_rrsets(self, zone: str) -> list[dict[str, Any]]:
        status, found = self._call("GET", f"/zones/{zone}")
        if status != 200 or not isinstance(found, dict):
            raise BackendUnavailable(f"PowerDNS answered HTTP {status} about zone {zone}")
        return list(found.get("rrsets") or [])

    def withdraw(self, ip: int, zone: str) -> None:
        """Remove the address's records, each only while it still says what we wrote."""
        name = host_name(ip, zone, self.prefix)
        if any(r.get("type") == "A" and r.get("content") == ip_text(ip)
               for r in self.records(name)):
            self._patch(zone, [self._rrset(name, "A", None)])
        reverse = self.reverse_zone(ip)
        if reverse:
            ptr = reverse_name(ip)
            if any(r.get("type") == "PTR" and r.get("content") == name for r in self.records(ptr)):
                self._patch(reverse, [self._rrset(ptr, "PTR", None)])
