"""The probe groups, from libvirt in bulk: one ``getAllDomainStats`` call per period serves both
STATE_VM and MONITOR_VM whatever the number of VMs (upstream runs virsh per domain), and the host's
own figures come from a handful of node calls. Output is OpenNebula template text."""

from __future__ import annotations

import base64
import os
import platform
import re
import socket
import time
import xml.etree.ElementTree as ET
from typing import Any, NamedTuple

from one_drivers import __version__
from one_drivers.core.oned_conf import ONE_EMULATOR

VM_NAME = re.compile(r"^one-(\d+)$")

# libvirt VIR_DOMAIN_* states and pause reasons -> OpenNebula (upstream's lib/kvm.rb mapping)
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)
# paused by libvirt on the way somewhere: migration, save, dump, from snapshot, shutting down,
# snapshot, starting up, post-copy; user: suspended; the rest (unknown, I/O error, watchdog,
# crashed, post-copy failed, API error) is a failure
PAUSED_RUNNING = {2, 3, 4, 7, 8, 9, 11, 12}
PAUSED_USER = 1


def one_state(state: int, reason: int) -> str:
    if state in (RUNNING, BLOCKED, SHUTDOWN, NOSTATE):
        return "RUNNING"
    if state == SHUTOFF:
        return "POWEROFF"
    if state == CRASHED:
        return "FAILURE"
    if state == PMSUSPENDED:
        return "SUSPENDED"
    if state == PAUSED:
        if reason == PAUSED_USER:
            return "SUSPENDED"
        if reason in PAUSED_RUNNING:
            return "RUNNING"
        return "FAILURE"  # I/O error, watchdog, crashed, unknown...
    return "UNKNOWN"


class Domain(NamedTuple):
    vm_id: int  # -1: a wild VM (not created by OpenNebula)
    uuid: str
    name: str
    state: str
    stats: dict[str, Any]
    handle: Any = None  # the libvirt domain (for guest agent questions)


STATS = (1 | 2 | 4 | 8 | 16 | 32)  # STATE, CPU_TOTAL, BALLOON, VCPU, INTERFACE, BLOCK


def domains(conn: Any) -> list[Domain]:
    """Every domain with its stats: one libvirt call."""
    out = []
    for dom, stats in conn.getAllDomainStats(STATS, 0):
        name, uuid = dom.name(), dom.UUIDString()  # cached in the object: no round trip
        match = VM_NAME.match(name)
        state = one_state(int(stats.get("state.state", 0)), int(stats.get("state.reason", 0)))
        out.append(Domain(int(match.group(1)) if match else -1, uuid, name, state, stats, dom))
    return out


# a domain's name is anyone's text (wild VMs): nothing in it may close the value or the vector
_UNSAFE = re.compile(r'["\\\[\]\x00-\x1f\x7f]')


def quoted(value: object) -> str:
    """A value for a monitoring message, in double quotes, with every character that could end
    it or start a new key (quotes, backslashes, brackets, newlines) replaced by ``_``."""
    return '"' + _UNSAFE.sub("_", str(value)) + '"'


def _vm_line(dom: Domain, **extra: str) -> str:
    fields = [f"ID={quoted(dom.vm_id)}", f"DEPLOY_ID={quoted(dom.uuid)}"]
    fields += [f"{k}={quoted(v)}" for k, v in extra.items()]
    return f"VM = [ {', '.join(fields)} ]"


def state_vm(doms: list[Domain], known: dict[str, dict[str, Any]], *, sync: bool
             ) -> tuple[str, dict[str, dict[str, Any]]]:
    """STATE_VM text: the VMs whose state changed (and those that vanished, as POWEROFF), or
    every VM with SYNC_STATE=yes; and the new ``known`` map (uuid -> id, state)."""
    now = {d.uuid: {"id": d.vm_id, "state": d.state} for d in doms}
    lines = ["SYNC_STATE=yes", "MISSING_STATE=POWEROFF"] if sync else []
    for dom in doms:
        if sync or known.get(dom.uuid, {}).get("state") != dom.state:
            lines.append(_vm_line(dom, VM_NAME=dom.name, STATE=dom.state))
    if not sync:
        for uuid, old in known.items():
            if uuid not in now and old.get("state") != "POWEROFF":
                lines.append(f'VM = [ ID="{old["id"]}", DEPLOY_ID="{uuid}", STATE="POWEROFF" ]')
    return "\n".join(lines), now


def guest_agent_keys(dom: Domain) -> dict[str, str]:
    """What the guest agent says, as upstream's probes name it: OS_ID, OS_TYPE, OS_VERSION,
    OS_MACHINE and the guest's addresses (GUEST_IP, the first IPv4 or else the first one, and
    GUEST_IP_ADDRESSES), from one ``guestInfo`` call; nothing for a domain without a connected
    agent (libvirt answers that at once, without asking the guest)."""
    import libvirt

    if dom.handle is None or dom.state != "RUNNING":
        return {}
    types = libvirt.VIR_DOMAIN_GUEST_INFO_OS | libvirt.VIR_DOMAIN_GUEST_INFO_INTERFACES
    try:
        info = dom.handle.guestInfo(types, 0)
    except libvirt.libvirtError:
        return {}
    os_id = str(info.get("os.id") or "unknown")
    keys = {"OS_ID": os_id, "OS_TYPE": "mswindows" if os_id == "mswindows" else "posix",
            "OS_VERSION": str(info.get("os.version-id") or "unknown"),
            "OS_MACHINE": str(info.get("os.machine") or "unknown")}
    addresses: list[tuple[str, str]] = []
    for n in range(int(info.get("if.count", 0))):
        if info.get(f"if.{n}.name") == "lo":
            continue
        for m in range(int(info.get(f"if.{n}.addr.count", 0))):
            kind, addr = info.get(f"if.{n}.addr.{m}.type"), info.get(f"if.{n}.addr.{m}.addr")
            if kind in ("ipv4", "ipv6") and addr and addr not in ("127.0.0.1", "::1"):
                addresses.append((kind, str(addr)))
    if addresses:
        keys["GUEST_IP"] = next((a for k, a in addresses if k == "ipv4"), addresses[0][1])
        keys["GUEST_IP_ADDRESSES"] = ",".join(a for _, a in addresses)
    return keys


def monitor_vm(doms: list[Domain], cpu_before: dict[str, list[float]], now: float,
               disk_sizes: dict[int, dict[int, int]] | None = None, *,
               guest_agent: bool = False) -> tuple[str, dict[str, list[float]]]:
    """MONITOR_VM text and the CPU samples to diff against next time; ``disk_sizes``: MB used
    by the disk files of VMs on local system datastores (:func:`local_disk_sizes`);
    ``guest_agent``: add what each VM's guest agent says (:func:`guest_agent_keys`)."""
    lines = []
    samples: dict[str, list[float]] = {}
    for dom in doms:
        s = dom.stats
        cpu_ns = float(s.get("cpu.time", 0))
        samples[dom.uuid] = [cpu_ns, now]
        before = cpu_before.get(dom.uuid)
        cpu = 0.0
        if before and now > before[1]:
            cpu = max(0.0, (cpu_ns - before[0]) / ((now - before[1]) * 1e9) * 100)
        net = {k: 0 for k in ("rx.bytes", "tx.bytes")}
        for i in range(int(s.get("net.count", 0))):
            for k in net:
                net[k] += int(s.get(f"net.{i}.{k}", 0))
        blk = {k: 0 for k in ("rd.bytes", "wr.bytes", "rd.reqs", "wr.reqs")}
        for i in range(int(s.get("block.count", 0))):
            for k in blk:
                blk[k] += int(s.get(f"block.{i}.{k}", 0))
        memory = int(s.get("balloon.rss", 0) or s.get("balloon.current", 0))
        monitor = "\n".join([f'CPU="{cpu:.2f}"', f'MEMORY="{memory}"',
                             f'NETRX="{net["rx.bytes"]}"', f'NETTX="{net["tx.bytes"]}"',
                             f'DISKRDBYTES="{blk["rd.bytes"]}"', f'DISKWRBYTES="{blk["wr.bytes"]}"',
                             f'DISKRDIOPS="{blk["rd.reqs"]}"', f'DISKWRIOPS="{blk["wr.reqs"]}"'])
        for disk, size in sorted((disk_sizes or {}).get(dom.vm_id, {}).items()):
            monitor += f"\nDISK_SIZE=[ID={disk}, SIZE={size}]"
        if guest_agent:  # the guest's own words: quoted like a wild name
            monitor += "".join(f"\n{k}={quoted(v)}" for k, v in guest_agent_keys(dom).items())
        lines.append(_vm_line(dom, MONITOR=base64.b64encode(monitor.encode()).decode()))
    return "\n".join(lines), samples


def import_template(dom: Domain, arch: str) -> str:
    """What ``onehost importvm`` makes of a wild VM: an OpenNebula template (base64) with its
    size and the domain it adopts."""
    vcpus = int(dom.stats.get("vcpu.current") or dom.stats.get("vcpu.maximum") or 1)
    memory_kib = int(dom.stats.get("balloon.maximum") or dom.stats.get("balloon.current") or 0)
    name = dom.name.replace('"', "")
    text = "\n".join([f'NAME="{name}"', f'CPU="{vcpus}"', f'VCPU="{vcpus}"',
                      f'MEMORY="{memory_kib // 1024}"', 'HYPERVISOR="kvm"',
                      f'IMPORT_VM_ID="{dom.uuid}"', f'OS=[ ARCH="{arch}" ]'])
    return base64.b64encode(text.encode()).decode()


def cgroups_version(root: str = "/sys/fs/cgroup") -> int:
    """2 on the unified hierarchy (oned scales CPU shares by it), else 1."""
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def _usage_mb(path: str) -> tuple[int, int, int]:
    """Used, total and available MiB of the file system holding ``path`` (as df reports)."""
    st = os.statvfs(path)
    mib = 1024 * 1024
    return ((st.f_blocks - st.f_bfree) * st.f_frsize // mib, st.f_blocks * st.f_frsize // mib,
            st.f_bavail * st.f_frsize // mib)


DISK_FILE = re.compile(r"^disk\.(\d+)$")


def _marked(location: str) -> list[os.DirEntry[str]]:
    """The system datastores in ``location`` a TM marked for local monitoring (``.monitor``)."""
    return sorted((e for e in os.scandir(location) if e.name.isdigit() and e.is_dir()
                   and os.path.exists(os.path.join(e.path, ".monitor"))), key=lambda e: e.name)


def local_disk_sizes(location: str) -> dict[int, dict[int, int]]:
    """MB allocated to each VM's disk files in the marked local system datastores, as
    ``{vm: {disk: MB}}`` (the ``.ssh`` TM variants keep disks there as sparse files)."""
    sizes: dict[int, dict[int, int]] = {}
    try:
        for ds in _marked(location):
            for vm in os.scandir(ds.path):
                if not (vm.name.isdigit() and vm.is_dir()):
                    continue
                for f in os.scandir(vm.path):
                    match = DISK_FILE.match(f.name)
                    if match and f.is_file(follow_symlinks=False):
                        used = f.stat(follow_symlinks=False).st_blocks * 512 // (1024 * 1024)
                        sizes.setdefault(int(vm.name), {})[int(match[1])] = used
    except OSError:  # a VM directory that went meanwhile: the next period sees the rest
        pass
    return sizes


def local_datastores(location: str) -> list[str]:
    """The space of the datastore location, and of each system datastore in it that a TM marked
    for local monitoring (a ``.monitor`` file, as the ssh TM leaves): what oned uses to place VMs
    on a host's local system datastore."""
    try:
        used, total, free = _usage_mb(location)
        marked = _marked(location)
    except OSError:
        return []
    lines = [f"DS_LOCATION_USED_MB={used}", f"DS_LOCATION_TOTAL_MB={total}",
             f"DS_LOCATION_FREE_MB={free}"]
    for entry in marked:
        used, total, free = _usage_mb(entry.path)
        lines.append(f"DS=[ ID={entry.name}, USED_MB={used}, TOTAL_MB={total}, FREE_MB={free} ]")
    return lines


def system_host(conn: Any, doms: list[Domain], pci_filter: str = "",
                ds_location: str = "", one_version: str = "") -> str:
    """SYSTEM_HOST: what the host is (changes rarely). VERSION is OpenNebula's, of the remotes
    the host runs (their VERSION file, as upstream's probe sends it: oned compares it with its
    own to tell hosts whose remotes are out of date); ours goes as ONE_DRIVERS_VERSION."""
    _model, mem_kib, cpus, mhz, *_topology = conn.getInfo()
    caps = ET.fromstring(conn.getCapabilities())  # noqa: S314 - libvirt's own output
    arch = caps.findtext("host/cpu/arch") or platform.machine()
    lines = ["HYPERVISOR=kvm", f"TOTALCPU={cpus * 100}", f"CPUSPEED={mhz}",
             f"TOTALMEMORY={_meminfo().get('MemTotal', mem_kib * 1024 // 1024)}",
             f'ARCH="{arch}"', f'MODELNAME="{_cpu_model_name()}"',
             f'HOSTNAME="{socket.gethostname()}"', f'ONE_DRIVERS_VERSION="{__version__}"',
             f'KVM_CPU_MODEL="{caps.findtext("host/cpu/model") or ""}"',
             f"CGROUPS_VERSION={cgroups_version()}"]
    try:
        names = conn.getCPUModelNames(arch, 0) or []
    except Exception:  # not every arch has a model list
        names = []
    lines.append(f'KVM_CPU_MODELS="{" ".join(names)}"')
    machines = sorted({m.text or "" for m in caps.iterfind("guest/arch/machine")} - {""})
    lines.append(f'KVM_MACHINES="{" ".join(machines)}"')
    features = [f.get("name") or "" for f in caps.iterfind("host/cpu/feature")]
    lines.append(f'KVM_CPU_FEATURES="{",".join(features)}"')
    if one_version:
        lines.append(f"VERSION={quoted(one_version)}")
    lines += emulator(caps, arch)
    lines += numa_topology(caps)
    if pci_filter:
        lines += _pci(conn, pci_filter)
    if ds_location:
        lines += local_datastores(ds_location)
    for dom in doms:
        if dom.vm_id == -1:
            lines.append(f'VM=[ ID="-1", DEPLOY_ID={quoted(dom.uuid)}, '
                         f'VM_NAME={quoted(dom.name)}, STATE={quoted(dom.state)}, '
                         f'IMPORT_TEMPLATE="{import_template(dom, arch)}" ]')
    return "\n".join(lines)




def emulator(caps: ET.Element, arch: str, default: str = ONE_EMULATOR) -> list[str]:
    """EMULATOR for the host's template when OpenNebula's default is not on this host (a plain
    Debian host has no node package): libvirt's own emulator for the host's arch, so oned
    writes a path that exists. Nothing when the default is there."""
    if os.access(default, os.X_OK):
        return []
    for guest in caps.iterfind("guest"):
        if guest.findtext("os_type") == "hvm" and guest.find(f"arch[@name='{arch}']") is not None:
            path = guest.findtext("arch/emulator") or ""
            if path and os.access(path, os.X_OK):
                return [f"EMULATOR={quoted(path)}"]
    return []


def _pci(conn: Any, pci_filter: str) -> list[str]:
    """PCI devices (as OpenNebula's PCI attributes) whose class starts with one of the filter's
    prefixes, e.g. ``0300`` for VGA controllers (``*``: all)."""
    wanted = [p.strip().lower() for p in pci_filter.split(",") if p.strip()]
    out = []
    for dev in conn.listAllDevices(2):  # VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
        cap = ET.fromstring(dev.XMLDesc(0)).find("capability")  # noqa: S314
        if cap is None:
            continue
        klass = (cap.findtext("class") or "").lower().removeprefix("0x")[:4]
        if "*" not in wanted and not any(klass.startswith(w) for w in wanted):
            continue
        nums = {k: int(cap.findtext(k) or "0", 0) for k in ("domain", "bus", "slot", "function")}
        short = f"{nums['bus']:02x}:{nums['slot']:02x}.{nums['function']:x}"
        vendor, product = cap.find("vendor"), cap.find("product")
        vid = (vendor.get("id") if vendor is not None else "") or ""
        pid = (product.get("id") if product is not None else "") or ""
        vid, pid = vid.removeprefix("0x"), pid.removeprefix("0x")
        out.append(f'PCI=[ ADDRESS="{nums["domain"]:04x}:{short}", SHORT_ADDRESS="{short}", '
                   f'DOMAIN="{nums["domain"]:04x}", BUS="{nums["bus"]:02x}", '
                   f'SLOT="{nums["slot"]:02x}", FUNCTION="{nums["function"]:x}", '
                   f'CLASS="{klass}", VENDOR="{vid}", DEVICE="{pid}", '
                   f'TYPE="{vid}:{pid}:{klass}", '
                   f'DEVICE_NAME="{(product.text or "") if product is not None else ""}" ]')
    return out


def _base_page_kib() -> int:
    return os.sysconf("SC_PAGE_SIZE") // 1024


def numa_topology(caps: ET.Element) -> list[str]:
    """SYSTEM_HOST's NUMA nodes as oned reads them: ``CORE`` (its CPUs: the hardware threads),
    ``MEMORY_NODE`` (KiB, and the node ids nearest first), ``HUGEPAGE`` (not the base page)."""
    lines = []
    base = _base_page_kib()
    for cell in caps.iterfind("host/topology/cells/cell"):
        node = cell.get("id") or "0"
        cores: dict[tuple[str, str, str], list[int]] = {}
        for cpu in cell.iterfind("cpus/cpu"):
            key = (cpu.get("socket_id") or "", cpu.get("die_id") or "",
                   cpu.get("core_id") or cpu.get("id") or "")
            cores.setdefault(key, []).append(int(cpu.get("id") or 0))
        core_ids = [key[2] for key in cores]
        unique = len(set(core_ids)) == len(core_ids)  # else (several sockets): first CPU's id
        for key, cpus in sorted(cores.items(), key=lambda kv: min(kv[1])):
            core = key[2] if unique else str(min(cpus))
            lines.append(f'CORE=[ NODE_ID="{node}", ID="{core}", '
                         f'CPUS="{",".join(map(str, sorted(cpus)))}" ]')
        distances = sorted((int(s.get("value") or 0), int(s.get("id") or 0))
                           for s in cell.iterfind("distances/sibling"))
        nearest = " ".join(str(n) for _, n in distances) or node
        lines.append(f'MEMORY_NODE=[ NODE_ID="{node}", TOTAL="{cell.findtext("memory") or 0}", '
                     f'DISTANCE="{nearest}" ]')
        for pages in cell.iterfind("pages"):
            if int(pages.get("size") or 0) != base:
                lines.append(f'HUGEPAGE=[ NODE_ID="{node}", SIZE="{pages.get("size")}", '
                             f'PAGES="{pages.text or 0}" ]')
    return lines


def numa_usage(conn: Any, caps: ET.Element) -> list[str]:
    """MONITOR_HOST's NUMA usage: free and used memory per node (KiB), free huge pages."""
    lines = []
    base = _base_page_kib()
    for cell in caps.iterfind("host/topology/cells/cell"):
        node = int(cell.get("id") or 0)
        total = int(cell.findtext("memory") or 0)
        free = conn.getCellsFreeMemory(node, 1)[0] // 1024
        lines.append(f'MEMORY_NODE=[ NODE_ID="{node}", FREE="{free}", USED="{total - free}" ]')
        sizes = [size for p in cell.iterfind("pages") if (size := int(p.get("size") or 0)) != base]
        if sizes:
            for size, count in sorted(conn.getFreePages(sizes, node, 1).get(node, {}).items()):
                lines.append(f'HUGEPAGE=[ NODE_ID="{node}", SIZE="{size}", FREE="{count}" ]')
    return lines


def monitor_host(conn: Any, cpu_before: list[float] | None, now: float
                 ) -> tuple[str, list[float]]:
    """MONITOR_HOST: usage, with CPU from the node's counters since the last sample."""
    mem = conn.getMemoryStats(-1, 0)  # KiB: total, free, buffers, cached
    free = int(mem.get("free", 0)) + int(mem.get("buffers", 0)) + int(mem.get("cached", 0))
    cpu = conn.getCPUStats(-1, 0)  # ns: kernel, user, idle, iowait
    busy = float(cpu.get("kernel", 0) + cpu.get("user", 0))
    idle = float(cpu.get("idle", 0) + cpu.get("iowait", 0))
    ncpu = conn.getInfo()[2]
    used_cpu = 0.0
    if cpu_before:
        d_busy, d_idle = busy - cpu_before[0], idle - cpu_before[1]
        if d_busy + d_idle > 0:
            used_cpu = d_busy / (d_busy + d_idle) * ncpu * 100
    rx = tx = 0
    for line in _read("/proc/net/dev").splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() != "lo" and len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    total = int(mem.get("total", 0))
    lines = ["HYPERVISOR=kvm", f"USEDMEMORY={total - free}", f"FREEMEMORY={free}",
             f"USEDCPU={used_cpu:.0f}", f"FREECPU={max(0.0, ncpu * 100 - used_cpu):.0f}",
             f"NETRX={rx}", f"NETTX={tx}"]
    lines += numa_usage(conn, ET.fromstring(conn.getCapabilities()))  # noqa: S314 - libvirt's
    return "\n".join(lines), [busy, idle, now]


def beacon() -> str:
    return f"TIMESTAMP={int(time.time())}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def _meminfo() -> dict[str, int]:
    out = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().split()[:1]:
            out[key] = int(rest.split()[0])
    return out


def _cpu_model_name() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip().replace('"', "")
    return platform.processor() or os.uname().machine


def exec_vm(conn: Any, timeout: int = 5) -> str:
    """EXEC_VM: the commands ``onevm exec`` started that have ended, as OpenNebula keeps them in
    QEMU_GA_EXEC (STATUS, RETURN_CODE, base64 STDOUT/STDERR); each is reported once, then
    forgotten on the domain. A guest that lost track of it (its agent restarted) reports ERROR."""
    import json

    import libvirt
    import libvirt_qemu

    from one_drivers.vmm.libvirt.guest_agent import record_exec, running_exec

    lines = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        match = VM_NAME.match(dom.name())
        pid = running_exec(dom) if match else None
        if match is None or pid is None:
            continue
        request = json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}})
        try:
            status = json.loads(libvirt_qemu.qemuAgentCommand(dom, request, timeout, 0))["return"]
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                                        libvirt.VIR_ERR_OPERATION_TIMEOUT):
                continue  # busy or rebooting: asked again next period
            status = {"exited": True, "exitcode": -1,
                      "err-data": base64.b64encode(str(exc).encode()).decode()}
            fields = {"STATUS": "ERROR"}
        else:
            if not status.get("exited"):
                continue
            fields = {"STATUS": "DONE"}
        code = status.get("exitcode")
        if code is None and status.get("signal") is not None:
            code = 128 + int(status["signal"])  # as a shell reports a killed command
        fields.update(RETURN_CODE=str(code if code is not None else -1),
                      STDOUT=status.get("out-data", ""), STDERR=status.get("err-data", ""))
        lines.append(f"VM = [ ID={quoted(match.group(1))}, PID={quoted(pid)}, "
                     + ", ".join(f"{k}={quoted(v)}" for k, v in fields.items()) + " ]")
        record_exec(dom, None)
    return "\n".join(lines)
