"""``one-drivers ipam reconcile``: what oned leases, what Kea leases and what PowerDNS names,
compared; with ``--fix`` the difference is repaired, oned being the truth.

oned is read over XML-RPC (every vnet with a ``kea`` AR, and each one's leases). Differences:

- ``missing``: oned leases an address Kea does not -> the lease (and records) are made;
- ``conflict``: Kea leases it to another MAC -> replaced by oned's, when the lease is ours;
  anybody else's is reported and left;
- ``orphan lease``: a lease of ours oned does not have (a call that crashed after leasing, or an
  AR removed with force) -> removed with its records;
- ``orphan subnet``: a subnet of ours no AR names -> its leases, records and the subnet go;
- ``unnamed`` / ``stale record``: a lease without its records / our records without a lease.

Only what carries the driver's mark is changed or removed. Report-only unless ``fix``.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from typing import Any

from one_drivers.core.config import Settings
from one_drivers.core.errors import ActionFailed
from one_drivers.core.oned import Oned
from one_drivers.core.retry import Deadline
from one_drivers.core.xmlview import Template, parse_xml
from one_drivers.ipam.kea.actions import copied, lease_record, locked, remove_subnet
from one_drivers.ipam.kea.kea import Kea, ours, subnets
from one_drivers.ipam.kea.pdns import COMMENT
from one_drivers.ipam.kea.ranges import AddressRange, ip_int, mac_int, mac_text


def oned_ranges(oned: Oned) -> dict[int, tuple[str, AddressRange, dict[str, int]]]:
    """Kea subnet id -> (where, the AR, {ip: mac}) of every kea AR oned has."""
    pool = parse_xml(oned.call("one.vnpool.info", oned.session, -2, -1, -1),
                     what="oned's vnet pool")
    out: dict[int, tuple[str, AddressRange, dict[str, int]]] = {}
    for vnet in pool.iter("VNET"):
        vn_id = int(vnet.findtext("ID") or -1)
        if not any((ar.findtext("IPAM_MAD") or "") == "kea" for ar in vnet.iter("AR")):
            continue
        full = parse_xml(oned.call("one.vn.info", oned.session, vn_id, False),
                         what=f"vnet {vn_id}")
        for ar_el in full.iter("AR"):
            if (ar_el.findtext("IPAM_MAD") or "") != "kea" or not ar_el.findtext("KEA_SUBNET_ID"):
                continue
            ar = AddressRange(Template(_flat(ar_el)))
            leases = {(lease.findtext("IP") or "").strip(): mac_int(lease.findtext("MAC") or "")
                      for lease in ar_el.iter("LEASE") if lease.findtext("IP")}
            out[ar.subnet_id or 0] = (f"vnet {vn_id} AR {ar.ar_id}", ar, leases)
    return out


def _flat(element: ET.Element) -> ET.Element:
    """The AR element without its LEASES (a Template reads direct children only)."""
    copy = ET.Element(element.tag)
    copy.extend(child for child in element if child.tag != "LEASES")
    return copy


def reconcile(settings: Settings, deadline: Deadline, *, fix: bool,
              oned: Oned | None = None) -> list[str]:
    """One line per difference found (and, with ``fix``, what was done about it)."""
    kea = Kea(settings, deadline)
    dns = None
    if settings.get("DNS_ZONES"):
        from one_drivers.ipam.kea.pdns import PowerDns

        dns = PowerDns(settings, deadline)
    wanted = oned_ranges(oned or Oned(timeout=deadline.cap(30, "asking oned")))
    report: list[str] = []

    def note(line: str, done: str) -> None:
        report.append(f"{line}{' -> ' + done if fix else ''}")

    with locked(settings, deadline):
        config = kea.config()
        for subnet in subnets(config):
            mark = ours(subnet)
            if mark is None:
                continue
            sid = int(subnet["id"])
            zone = mark.get("zone")
            held = {lease["ip-address"]: lease for lease in kea.leases(sid)}
            if sid not in wanted:
                note(f"orphan subnet {sid} ({subnet.get('subnet')}, {len(held)} lease(s)): "
                     "no AR in oned names it", "removed")
                if fix:
                    for ip, held_lease in held.items():
                        if ours(held_lease) is not None:
                            _unpublish(dns, ip, zone)
                        kea.delete_lease(ip)
                    before = copied(config)
                    remove_subnet(config, sid)
                    kea.apply(config, before)
                continue
            where, ar, leases = wanted[sid]
            for ip, mac in sorted(leases.items()):
                lease = held.get(ip)
                if lease is None:
                    note(f"missing: {where} leases {ip} to {mac_text(mac)}; Kea does not",
                         "leased")
                    if fix:
                        _lease(kea, settings, ar, ip, mac, zone, dns)
                    continue
                if lease.get("hw-address") != mac_text(mac):
                    mine = ours(lease) is not None
                    note(f"conflict: {where} leases {ip} to {mac_text(mac)}; Kea to "
                         f"{lease.get('hw-address')}{'' if mine else ' (not ours)'}",
                         "replaced" if mine else "left (not ours)")
                    if fix and mine:
                        kea.delete_lease(ip)
                        _lease(kea, settings, ar, ip, mac, zone, dns)
                    continue
                if dns is not None and zone and not _named(dns, ip, zone):
                    note(f"unnamed: {ip} of {where} has no A record in {zone}", "published")
                    if fix:
                        dns.publish(ip_int(ip), zone)
            for ip, kept in sorted(held.items()):
                if ip in leases or ours(kept) is None:
                    continue
                note(f"orphan lease: {ip} ({kept.get('hw-address')}) in Kea subnet {sid}; "
                     f"{where} does not lease it", "removed")
                if fix:
                    _unpublish(dns, ip, zone)
                    kea.delete_lease(ip)
        if dns is not None:
            report.extend(_stale_records(dns, kea, fix))
    return report


def _lease(kea: Kea, settings: Settings, ar: AddressRange, ip: str, mac: int, zone: str | None,
           dns: Any) -> None:
    if not kea.add_lease(lease_record(ar, ip_int(ip), mac, settings)):
        raise ActionFailed(f"Kea leased {ip} to someone else meanwhile")
    if zone and dns is not None:
        dns.publish(ip_int(ip), zone)


def _named(dns: Any, ip: str, zone: str) -> bool:
    from one_drivers.ipam.kea.pdns import host_name

    name = host_name(ip_int(ip), zone, dns.prefix)
    return any(r.get("type") == "A" and r.get("content") == ip for r in dns.records(name))


def _unpublish(dns: Any, ip: str, zone: str | None) -> None:
    if dns is not None and zone:
        with contextlib.suppress(ActionFailed):
            dns.withdraw(ip_int(ip), zone)


def _stale_records(dns: Any, kea: Kea, fix: bool) -> list[str]:
    """A records of ours (named by the driver's pattern, in an allowed zone) whose address Kea
    no longer leases."""
    out = []
    for zone in (z for z in dns.zones if not z.endswith("in-addr.arpa.")):
        for rrset in dns.zone_rrsets(zone):
            if rrset.get("type") != "A" or not any(
                    c.get("content") == COMMENT for c in rrset.get("comments") or []):
                continue
            for record in rrset.get("records") or []:
                ip = record.get("content", "")
                if kea.lease(ip) is None:
                    out.append(f"stale record: {rrset.get('name')} A {ip} has no lease in Kea"
                               + (" -> removed" if fix else ""))
                    if fix:
                        dns.withdraw(ip_int(ip), zone)
    return out

