"""The deployment file oned writes for a KVM host, prepared for libvirt.

oned generates the libvirt domain (``<name>one-<vmid></name>``, RBD network disks, OVS
``<virtualport>`` NICs, the context CD-ROM, ``one:`` metadata). Before it is created:

- the domain type is set from DOMAIN_TYPE when configured (``qemu`` for TCG hosts);
- every RBD disk lists every monitor of the cluster (upstream writes one: OpenNebula/one#1955),
  from the host's ceph.conf;
- deploy tweaks run: executables in DEPLOY_TWEAKS_DIR (domain XML on stdin, the new XML on stdout)
  and Python entry points in DEPLOY_TWEAKS (``module:function``, called with the root element).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import xml.etree.ElementTree as ET

from one_drivers.core.config import Settings
from one_drivers.core.errors import ActionFailed, BackendTimeout, BadInput
from one_drivers.core.oned_conf import ONE_EMULATOR
from one_drivers.core.xmlview import parse_xml

ONE_NS = "http://opennebula.org/xmlns/libvirt/1.0"
# keep oned's prefixes when the domain is written back (ElementTree would say ns0:)
ET.register_namespace("one", ONE_NS)
ET.register_namespace("qemu", "http://libvirt.org/schemas/domain/qemu/1.0")
_ADDR = re.compile(r"^(?:v[12]:)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/\[\]]+)(?::(?P<port>\d+))?")


def ceph_monitors(conf_path: str) -> list[tuple[str, str]]:
    """(host, port) of every monitor in ceph.conf's ``mon_host`` (v1 addresses, which QEMU's
    librbd can reach with any Ceph release; default port 6789)."""
    try:
        with open(conf_path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return []
    value = ""
    for line in text.splitlines():
        key, sep, rest = line.partition("=")
        if sep and key.strip().replace(" ", "_").lower() in ("mon_host", "mon_hosts"):
            value = rest.split("#", 1)[0].split(";", 1)[0].strip()
            break
    monitors: list[tuple[str, str]] = []
    for group in re.split(r"[\s,]+(?![^\[]*\])", value):
        group = group.strip()
        if not group:
            continue
        addrs = group[1:-1].split(",") if group.startswith("[") and "v" in group[:3] else [group]
        v1 = [a for a in addrs if a.startswith("v1:")] or [a for a in addrs
                                                             if not a.startswith("v2:")]
        for addr in v1[:1]:
            m = _ADDR.match(addr)
            if m:
                monitors.append((m.group("host"), m.group("port") or "6789"))
    return monitors


def prepare(domain_xml: str, settings: Settings) -> ET.Element:
    root = parse_xml(domain_xml, what="the deployment file", root="domain")
    domain_type = settings.get("DOMAIN_TYPE")
    if domain_type:
        if domain_type not in ("kvm", "qemu"):
            raise BadInput(f"DOMAIN_TYPE={domain_type!r} is not kvm or qemu")
        root.set("type", domain_type)
    monitors = ceph_monitors(settings.get("CEPH_CONF") or "/etc/ceph/ceph.conf")
    if monitors:
        for source in root.iterfind("devices/disk/source[@protocol='rbd']"):
            listed = {(h.get("name"), h.get("port") or "6789") for h in source.iter("host")}
            if set(monitors) - listed:
                for host in list(source.iter("host")):
                    source.remove(host)
                for name, port in monitors:
                    ET.SubElement(source, "host", name=name, port=port)
    return tweak(root, settings)




def check_emulator(root: ET.Element) -> None:
    """The emulator oned wrote must exist here: libvirt's own error ("Cannot check QEMU binary")
    does not say what to do about it."""
    path = (root.findtext("devices/emulator") or "").strip()
    if not path or os.access(path, os.X_OK):
        return
    if path == ONE_EMULATOR:
        hint = ("OpenNebula's default emulator comes with its node package: run the one-drivers "
                "libvirt_host role (it links it to QEMU), or set EMULATOR in the host or VM "
                "template (the libvirt IM reports the host's own when the default is missing)")
    else:
        hint = "install QEMU there, or correct EMULATOR in the host or VM template"
    raise ActionFailed(f"the emulator {path} named in the deployment file is not on this host",
                       hint=hint)


def tweak(root: ET.Element, settings: Settings) -> ET.Element:
    for entry in (settings.get("DEPLOY_TWEAKS") or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        module_name, _, fn_name = entry.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), fn_name or "tweak")
        except (ImportError, AttributeError) as exc:
            raise ActionFailed(f"deploy tweak {entry!r} cannot be loaded ({exc})") from None
        result = fn(root)
        if isinstance(result, ET.Element):
            root = result
    directory = settings.get("DEPLOY_TWEAKS_DIR") or ""
    if directory and os.path.isdir(directory):
        timeout = settings.float("DEPLOY_TWEAKS_TIMEOUT", 30)
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                continue
            try:
                proc = subprocess.run([path], input=ET.tostring(root), capture_output=True,
                                      timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise BackendTimeout(f"deploy tweak {name} took over {timeout:g} s") from None
            if proc.returncode != 0:
                last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                raise ActionFailed(f"deploy tweak {name} failed (exit {proc.returncode}): {last}")
            root = parse_xml(proc.stdout, what=f"the domain XML deploy tweak {name} wrote",
                             root="domain")
    return root


def system_datastore_dir(root: ET.Element) -> str | None:
    """``one:system_datastore`` from the domain's metadata: the VM's directory on the host."""
    found = root.find(f"metadata/{{{ONE_NS}}}vm/{{{ONE_NS}}}system_datastore")
    return found.text.strip() if found is not None and found.text else None
