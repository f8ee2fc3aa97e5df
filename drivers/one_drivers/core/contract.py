"""How OpenNebula invokes each driver family: argv and stdin, as data.

This table is the one place that encodes the contract (``opennebula-driver-contract.md`` 1.3 and
the family sections). A driver only names its actions; the signature comes from here, so every
driver of a family parses its input the same way and errors read the same.
"""

from __future__ import annotations

from typing import IO, Any, NamedTuple

from one_drivers.core import documents as docs
from one_drivers.core.config import Settings
from one_drivers.core.errors import BadInput, DriverError, UsageError
from one_drivers.core.retry import Deadline
from one_drivers.core.xmlview import XmlView, decode_base64, parse_xml, to_int

DEFAULT_ACTION_TIMEOUT = 300.0


class Stdin:
    """What an action reads on stdin (plain constants: enum costs start-up time)."""

    NONE = "none"  # stdin is not read at all
    BASE64_XML = "base64 XML"  # DS, IPAM, VNM, TM migrate: a base64 document
    XML = "XML"  # VMM (decoded action data), auth, IM configuration
    DOMAIN_XML = "libvirt domain XML"  # VMM deploy: kept verbatim for libvirt
    ANY_XML = "XML or base64 XML"  # TM backup actions: both shapes are seen in the wild
    XML_PARTS = "XML elements, one after another"  # backup ls: a VM and an IMAGE, no root


# NamedTuples, not dataclasses: importing dataclasses costs ~6 ms of every action's start-up.
class HostPath(NamedTuple):
    """``host:path`` as TM arguments carry it."""

    host: str
    path: str

    def __str__(self) -> str:
        return f"{self.host}:{self.path}"

    @property
    def disk_index(self) -> int | None:
        """The ``<i>`` of a ``.../disk.<i>`` path, None for a VM directory."""
        name = self.path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("disk.") and name[5:].isdigit():
            return int(name[5:])
        return None

    @property
    def vm_dir(self) -> str:
        return self.path.rsplit("/", 1)[0] if self.disk_index is not None else self.path


class Param(NamedTuple):
    name: str
    kind: str = "str"  # str | int | hostpath | base64xml
    variadic: bool = False
    optional: bool = False


class Signature(NamedTuple):
    params: tuple[Param, ...] = ()
    stdin: str = Stdin.NONE
    document: type[XmlView] | None = None  # view class for the stdin (or argv) document
    vmm_trailer: bool = False  # VMM: `<vmid> <host>` appended by one_vmm_exec
    doc_param: str | None = None  # market: the document travels in this argv parameter

    def usage(self) -> str:
        names = []
        for p in self.params:
            n = p.name.upper()
            names.append(f"[{n}...]" if p.variadic else f"[{n}]" if p.optional else n)
        if self.vmm_trailer:
            names += ["VMID", "HOST"]
        return " ".join(names)


class Call:
    """One parsed invocation, handed to the action function."""

    def __init__(self, family: str, driver: str, action: str, args: dict[str, Any]) -> None:
        self.extras: dict[str, Any] = {}  # the runner's: raw argv and stdin, a data stream
        self.family = family
        self.driver = driver
        self.action = action
        self.args = args
        self.doc: Any = None  # the typed view of the document, when the action has one
        self.raw_stdin: str | None = None  # verbatim document (VMM deploy's domain XML, a VM)
        self.subject = ""
        # defaults + the driver config file; actions layer their template on top (runner sets)
        self.settings = Settings([])
        self.deadline = Deadline(DEFAULT_ACTION_TIMEOUT)


def _p(*spec: str) -> tuple[Param, ...]:
    """Compact param spec: ``name``, ``name:int``, ``name:hostpath``, ``*name``, ``?name:int``."""
    out = []
    for s in spec:
        variadic, optional = s.startswith("*"), s.startswith("?")
        s = s.lstrip("*?")
        name, _, kind = s.partition(":")
        out.append(Param(name, kind or "str", variadic, optional))
    return tuple(out)


_DS = Signature(_p("id:int"), Stdin.BASE64_XML, docs.DsActionData)
_IPAM = Signature(_p("request_id:int"), Stdin.BASE64_XML, docs.IpamActionData)
_VNM_VM = Stdin.BASE64_XML
_TM_DISK_SNAP = _p("disk:hostpath", "snap_id:int", "vmid:int", "dsid:int")
_TM_MIGRATE = Signature(
    _p("src_host", "dst_host", "vm_dir", "vmid:int", "dsid:int", "?caller"),
    Stdin.BASE64_XML,
    docs.VM,
)
_TM_BACKUP = Signature(
    _p("vm_dir:hostpath", "disks", "deploy_id", "bj_id", "vmid:int", "dsid:int"),
    Stdin.ANY_XML,
    docs.VM,
)
_VMM_XML = Stdin.XML
_PROBE = Signature(_p("im_mad", "host_id:int", "hostname"), Stdin.XML, docs.MonitorConfiguration)

CONTRACT: dict[str, dict[str, Signature]] = {
    "datastore": {
        **{name: _DS
           for name in ("cp", "mkfs", "clone", "rm", "stat", "monitor", "snap_delete",
                        "snap_revert", "snap_flatten", "export", "increment_flatten",
                        "restore")},
        # backup datastores: run by the VMM MAD with the TM's BACKUP line, stdin plain XML
        "backup": Signature(_p("vm_dir:hostpath", "disks", "deploy_id", "bj_id", "vmid:int",
                               "dsid:int"), Stdin.ANY_XML, docs.DsActionData),
        "backup_cancel": Signature(_p("vm_dir:hostpath", "deploy_id"), Stdin.ANY_XML, docs.VM),
        # upstream's TM restore: `ls -i <increment>`, the VM and the backup IMAGE on stdin
        "ls": Signature(_p("*options"), Stdin.XML_PARTS),
    },
    "tm": {
        "clone": Signature(_p("src:hostpath", "dst:hostpath", "vmid:int", "dsid:int")),
        "ln": Signature(_p("src:hostpath", "dst:hostpath", "vmid:int", "dsid:int")),
        "mkswap": Signature(_p("size_mb:int", "dst:hostpath", "vmid:int", "dsid:int")),
        "mkimage": Signature(_p("size_mb:int", "format", "dst:hostpath", "vmid:int", "dsid:int")),
        "context": Signature(_p("*files", "dst:hostpath", "vmid:int", "dsid:int")),
        "mv": Signature(_p("src:hostpath", "dst:hostpath", "vmid:int", "dsid:int")),
        "mvds": Signature(_p("src:hostpath", "source", "vmid:int", "dsid:int")),
        "cpds": Signature(_p("src:hostpath", "new_source", "snap_id:int", "vmid:int", "dsid:int")),
        "delete": Signature(_p("dst:hostpath", "vmid:int", "dsid:int")),
        "resize": Signature(_p("disk:hostpath", "size_mb:int", "vmid:int", "?dsid:int")),
        "snap_create": Signature(_TM_DISK_SNAP),
        "snap_create_live": Signature(_TM_DISK_SNAP),
        "snap_revert": Signature(_TM_DISK_SNAP),
        "snap_delete": Signature(_TM_DISK_SNAP),
        "premigrate": _TM_MIGRATE,
        "postmigrate": _TM_MIGRATE,
        "failmigrate": _TM_MIGRATE,
        "prebackup": _TM_BACKUP,
        "prebackup_live": _TM_BACKUP,
        "postbackup": _TM_BACKUP,
        "postbackup_live": _TM_BACKUP,
        "restore": Signature(_p("vm_dir:hostpath", "vmid:int", "backup_image_id:int",
                                "increment_id:int", "disk_id:int")),
        "monitor": _DS,  # system datastore monitor: called by the DS MAD with the DS protocol
    },
    "vmm": {
        "deploy": Signature(_p("deployment_file", "host"), Stdin.DOMAIN_XML, vmm_trailer=True),
        "shutdown": Signature(_p("deploy_id", "host"), _VMM_XML, docs.VmmActionData, True),
        "cancel": Signature(_p("deploy_id", "host"), _VMM_XML, docs.VmmActionData, True),
        "reboot": Signature(_p("deploy_id", "host"), _VMM_XML, docs.VmmActionData, True),
        "reset": Signature(_p("deploy_id", "host"), _VMM_XML, docs.VmmActionData, True),
        "save": Signature(_p("deploy_id", "checkpoint_file", "host"), _VMM_XML,
                          docs.VmmActionData, True),
        "restore": Signature(_p("checkpoint_file", "host", "deploy_id"), _VMM_XML,
                             docs.VmmActionData, True),
        "migrate": Signature(_p("deploy_id", "dst_host", "src_host"), _VMM_XML,
                             docs.VmmActionData, True),
        "attach_disk": Signature(_p("deploy_id", "disk_path", "target", "target_index:int",
                                    "message"), _VMM_XML, docs.VmmActionData, True),
        "detach_disk": Signature(_p("deploy_id", "disk_path", "target", "target_index:int"),
                                 _VMM_XML, docs.VmmActionData, True),
        "attach_nic": Signature(_p("deploy_id", "mac", "bridge", "model", "vn_mad", "target"),
                                _VMM_XML, docs.VmmActionData, True),
        "detach_nic": Signature(_p("deploy_id", "mac"), _VMM_XML, docs.VmmActionData, True),
        "prereconfigure": Signature(_p("deploy_id", "target"), _VMM_XML, docs.VmmActionData, True),
        "reconfigure": Signature(_p("deploy_id", "target", "iso_path"), _VMM_XML,
                                 docs.VmmActionData, True),
        "resize": Signature(_p("deploy_id"), _VMM_XML, docs.VmmActionData, True),
        "resize_disk": Signature(_p("deploy_id", "disk_id:int", "size_mb:int", "message", "host"),
                                 _VMM_XML, docs.VmmActionData, True),
        "snapshot_create": Signature(_p("deploy_id", "snap_id"), _VMM_XML, docs.VmmActionData,
                                     True),
        "snapshot_revert": Signature(_p("deploy_id", "snapshot"), _VMM_XML, docs.VmmActionData,
                                     True),
        "snapshot_delete": Signature(_p("deploy_id", "snapshot"), _VMM_XML, docs.VmmActionData,
                                     True),
        # 7.2: one_vmm_exec passes `<vmid> <host> <command> <stdin>` (no trailer), the command
        # line split by the host's shell: the driver reads QEMU_GA_EXEC from the document
        "exec": Signature(_p("vmid:int", "vmm_host", "*given"), _VMM_XML, docs.VmmActionData),
        "exec_cancel": Signature((), _VMM_XML, docs.VmmActionData, True),
    },
    "vnm": {
        "pre": Signature((), _VNM_VM, docs.VM),
        "post": Signature(_p("deploy_id", "host"), _VNM_VM, docs.VM),
        "clean": Signature(_p("host"), _VNM_VM, docs.VM),
        "update_sg": Signature(_p("deploy_id"), _VNM_VM, docs.VM),
        "update_nic": Signature(_p("deploy_id", "vn_id:int"), _VNM_VM, docs.VM),
        "vnet_create": Signature(_p("vnet_id:int"), Stdin.BASE64_XML, docs.VNet),
        "vnet_delete": Signature(_p("vnet_id:int"), Stdin.BASE64_XML, docs.VNet),
    },
    "market": {
        name: Signature(_p("document:base64xml", "id:int"), Stdin.NONE,
                        docs.MarketActionData, doc_param="document")
        for name in ("import", "delete", "monitor", "export")
    },
    "auth": {
        "authenticate": Signature((), Stdin.XML, docs.AuthN),
    },
    "ipam": {
        name: _IPAM
        for name in ("register_address_range", "unregister_address_range", "get_address",
                     "allocate_address", "free_address")
    },
    "im": {
        "run_monitord_client": _PROBE,
        "stop_monitord_client": _PROBE,
        "probe": _PROBE,
    },
}


def reads_stdin(family: str, action: str) -> bool:
    return signature_for(family, action).stdin is not Stdin.NONE


def signature_for(family: str, action: str) -> Signature:
    """The contract for ``action`` of ``family``; ``.ssh``-style suffixes share the base's."""
    actions = CONTRACT.get(family)
    if actions is None:
        raise UsageError(f"unknown driver family {family!r}",
                         hint=f"use one of {', '.join(sorted(CONTRACT))}")
    base = action.split(".", 1)[0]
    sig = actions.get(base)
    if sig is None:
        raise UsageError(f"OpenNebula has no {family} action {action!r}")
    return sig


# -- parsing -----------------------------------------------------------------------------------


def _convert(param: Param, value: str, where: str) -> Any:
    if param.kind == "int":
        return to_int(value, where=where)
    if param.kind == "hostpath":
        host, sep, path = value.partition(":")
        if not sep or not host or not path:
            raise BadInput(f"{where} is {value!r}, expected HOST:PATH")
        return HostPath(host, path)
    if param.kind == "base64xml":
        return decode_base64(value, what=where)
    return value


def parse_argv(sig: Signature, argv: list[str], label: str) -> dict[str, Any]:
    """Bind argv to the signature's parameters (one variadic allowed, anywhere)."""
    params = list(sig.params)
    if sig.vmm_trailer:
        params += [Param("vmid", "int"), Param("vmm_host")]
    variadic = [i for i, p in enumerate(params) if p.variadic]
    optional = [p for p in params if p.optional]
    fixed = len(params) - len(variadic)
    n = len(argv)
    ok = n >= fixed if variadic else fixed - len(optional) <= n <= fixed
    if not ok:
        raise UsageError(
            f"{label} expects arguments {sig.usage() or '(none)'}, got {n}",
            hint="check the driver name and the oned.conf registration",
        )
    out: dict[str, Any] = {}
    if variadic:
        v = variadic[0]
        head, tail = params[:v], params[v + 1:]
        n_var = n - fixed
        bound = list(zip(head, argv[:v], strict=True))
        out[params[v].name] = [
            _convert(params[v], a, f"{label} argument {params[v].name.upper()}")
            for a in argv[v:v + n_var]
        ]
        bound += list(zip(tail, argv[v + n_var:], strict=True))
    else:
        bound = list(zip(params, argv, strict=False))
        for p in params[len(argv):]:
            out[p.name] = None
    for p, a in bound:
        out[p.name] = _convert(p, a, f"{label} argument {p.name.upper()}")
    return out


def read_document(sig: Signature, stdin: IO[bytes] | None, args: dict[str, Any],
                  label: str) -> tuple[Any, str | None]:
    """Decode and parse the action's document; returns (view, verbatim text)."""
    if sig.doc_param is not None:
        raw: bytes = args[sig.doc_param]
        view_cls = sig.document or XmlView
        elem = parse_xml(raw, what=f"{label} argument {sig.doc_param.upper()}",
                         root=getattr(view_cls, "ROOT", None))
        return view_cls(elem), None
    if sig.stdin is Stdin.NONE:
        return None, None
    data = stdin.read() if stdin is not None else b""
    what = f"{label} stdin"
    root = getattr(sig.document, "ROOT", None)
    plain_xml = sig.stdin is Stdin.ANY_XML and data.lstrip().startswith(b"<")
    if sig.stdin in (Stdin.BASE64_XML, Stdin.ANY_XML) and not plain_xml:
        data = decode_base64(data, what=what)
    if sig.stdin is Stdin.DOMAIN_XML:
        parse_xml(data, what=what, root="domain")
        return None, data.decode("utf-8", "replace")
    if sig.stdin is Stdin.XML_PARTS:
        return XmlView(parse_xml(b"<PARTS>" + data + b"</PARTS>", what=what, root="PARTS")), None
    elem = parse_xml(data, what=what, root=root)
    text = data.decode("utf-8", "replace")  # as oned sent it (a backup keeps the VM's)
    if sig.document is None:
        return XmlView(elem), text
    return sig.document(elem), text


def parse_call(family: str, driver: str, action: str, argv: list[str],
               stdin: IO[bytes] | None) -> Call:
    sig = signature_for(family, action)
    label = f"{family}/{driver}/{action}"
    args = parse_argv(sig, argv, label)
    call = Call(family, driver, action, args)
    call.subject = subject_of(call)  # provisional: VNM and auth name theirs from the document
    try:
        call.doc, call.raw_stdin = read_document(sig, stdin, args, label)
    except DriverError as exc:
        exc.subject = exc.subject or call.subject
        raise
    call.subject = subject_of(call)
    if isinstance(call.doc, XmlView):
        call.doc.subject = call.subject
    return call


def subject_of(call: Call) -> str:
    """The object an error message names first."""
    a = call.args
    if call.family == "datastore":
        if "vmid" in a:  # a backup datastore's backup: about a VM
            return f"VM {a['vmid']} backup"
        if call.action in ("backup_cancel", "ls"):
            return "a VM's backup"
        what = "datastore" if call.action == "monitor" else "image"
        return f"{what} {a['id']}"
    if call.family == "tm":
        if call.action == "monitor":
            return f"datastore {a['id']}"
        subject = f"VM {a['vmid']}"
        for key in ("dst", "src", "disk"):
            hp = a.get(key)
            if isinstance(hp, HostPath) and hp.disk_index is not None:
                return f"{subject} disk {hp.disk_index}"
        return subject
    if call.family == "vmm":
        return f"VM {a['vmid']}"
    if call.family == "vnm":
        if "vnet_id" in a:
            return f"virtual network {a['vnet_id']}"
        vm = call.doc
        vm_id = vm.opt("ID") if isinstance(vm, XmlView) else None
        return f"VM {vm_id}" if vm_id else "VM"
    if call.family == "market":
        return f"marketplace {a['id']}" if call.action == "monitor" else \
            f"marketplace app {a['id']}"
    if call.family == "ipam":
        return f"IPAM request {a['request_id']}"
    if call.family == "auth":
        user = call.doc.opt("USERNAME") if isinstance(call.doc, XmlView) else None
        return f"user {user}" if user else "authentication"
    if call.family == "im":
        return f"host {a['host_id']}"
    return call.family
