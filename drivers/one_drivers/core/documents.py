"""Views of the documents of each driver family (contract sections 2-10).

Only what drivers read is declared as a field; anything else is reachable through
``view.template.get(...)`` or ``view.text(...)`` with the same path-aware errors.
"""

from __future__ import annotations

from collections.abc import Iterator

from one_drivers.core.xmlview import (
    Field,
    Template,
    XmlView,
    _WithTemplate,
    flag,
    integer,
    optional,
    optional_int,
    text,
    text_or,
)

DS_TYPES = {0: "IMAGE_DS", 1: "SYSTEM_DS", 2: "FILE_DS", 3: "BACKUP_DS"}
IMAGE_TYPES = {0: "OS", 1: "CDROM", 2: "DATABLOCK", 3: "KERNEL", 4: "RAMDISK", 5: "CONTEXT",
               6: "BACKUP"}


def _code(tag: str, names: dict[int, str]) -> Field[str]:
    """An enumerated integer shown by its OpenNebula name (unknown codes as the number)."""
    return Field(tag, lambda v, t: names.get(v.int(t, 0), v.text(t, "0")))


# -- datastore family -------------------------------------------------------------------------


class Image(_WithTemplate):
    id = integer("ID")
    name = text_or("NAME", "")
    source = optional("SOURCE")
    path = optional("PATH")
    format = text_or("FORMAT", "raw")
    fs = optional("FS")
    size_mb = integer("SIZE")
    type = _code("TYPE", IMAGE_TYPES)
    persistent = flag("PERSISTENT", False)
    target_snapshot = integer("TARGET_SNAPSHOT")

    @property
    def snapshot_ids(self) -> list[int]:
        return [s.int("ID") for s in self.children("SNAPSHOTS/SNAPSHOT", XmlView)]


class Datastore(_WithTemplate):
    id = integer("ID")
    name = text_or("NAME", "")
    ds_mad = optional("DS_MAD")
    tm_mad = optional("TM_MAD")
    type = _code("TYPE", DS_TYPES)
    base_path = optional("BASE_PATH")


class DsActionData(XmlView):
    """``DS_DRIVER_ACTION_DATA``: IMAGE (absent for monitor) and DATASTORE, plus extra elements."""

    ROOT = "DS_DRIVER_ACTION_DATA"
    datastore_location = text_or("DATASTORE_LOCATION", "/var/lib/one/datastores")
    monitor_vm_disks = flag("MONITOR_VM_DISKS", False)

    @property
    def image(self) -> Image:
        return self.child("IMAGE", Image)

    @property
    def datastore(self) -> Datastore:
        return self.child("DATASTORE", Datastore)

    @property
    def vm(self) -> VM:
        """The VM a backup datastore action is about (``backup``)."""
        return self.child("VM", VM)


# -- the VM document --------------------------------------------------------------------------


class Disk(Template):
    """``TEMPLATE/DISK``: attributes inherited from the datastore are on the disk itself."""

    disk_id = integer("DISK_ID")
    image_id = optional_int("IMAGE_ID")
    datastore_id = optional_int("DATASTORE_ID")
    source = optional("SOURCE")
    clone = flag("CLONE", False)
    persistent = flag("PERSISTENT", False)
    size_mb = optional_int("SIZE")
    target = optional("TARGET")

    @property
    def type(self) -> str:
        return self.text("TYPE", "FILE").upper()


class Nic(Template):
    nic_id = integer("NIC_ID")
    network_id = optional_int("NETWORK_ID")
    vn_mad = optional("VN_MAD")
    bridge = optional("BRIDGE")
    mac = text("MAC")
    target = optional("TARGET")
    attach = flag("ATTACH", False)


class History(XmlView):
    hostname = text("HOSTNAME")
    host_id = integer("HID")
    ds_id = integer("DS_ID")
    vm_mad = optional("VM_MAD")
    tm_mad = optional("TM_MAD")


class VM(_WithTemplate):
    """The VM document (``onevm show -x`` shape), as VNM, TM migrate and VMM actions receive it."""

    ROOT = "VM"
    id = integer("ID")
    name = text_or("NAME", "")
    deploy_id = optional("DEPLOY_ID")
    state = optional_int("STATE")
    lcm_state = optional_int("LCM_STATE")

    @property
    def user_template(self) -> Template:
        return self.child("USER_TEMPLATE", Template, required=False)

    def disks(self) -> Iterator[Disk]:
        return self.children("TEMPLATE/DISK", Disk)

    def disk(self, disk_id: int) -> Disk | None:
        return next((d for d in self.disks() if d.disk_id == disk_id), None)

    def nics(self) -> Iterator[Nic]:
        return self.children("TEMPLATE/NIC", Nic)

    def nic_aliases(self) -> Iterator[Nic]:
        return self.children("TEMPLATE/NIC_ALIAS", Nic)

    def security_group_rules(self) -> Iterator[Template]:
        return self.children("TEMPLATE/SECURITY_GROUP_RULE", Template)

    def history(self) -> list[History]:
        return list(self.children("HISTORY_RECORDS/HISTORY", History))

    @property
    def last_history(self) -> History | None:
        records = self.history()
        return records[-1] if records else None


class VNet(_WithTemplate):
    """``VNET`` as vnet_create / vnet_delete receive it."""

    ROOT = "VNET"
    id = integer("ID")
    name = text_or("NAME", "")
    bridge = optional("BRIDGE")
    vn_mad = optional("VN_MAD")
    vlan_id = optional("VLAN_ID")


# -- other families ---------------------------------------------------------------------------


class VmmActionData(XmlView):
    """``VMM_DRIVER_ACTION_DATA`` (contract 5.1)."""

    ROOT = "VMM_DRIVER_ACTION_DATA"
    host = text("HOST")
    migr_host = optional("MIGR_HOST")
    deploy_id = optional("DEPLOY_ID")
    checkpoint_file = optional("CHECKPOINT_FILE")
    tm_command = optional("TM_COMMAND")

    @property
    def vm(self) -> VM:
        return self.child("VM", VM)

    @property
    def datastore(self) -> Datastore:
        return self.child("DATASTORE", Datastore, required=False)


class AuthN(XmlView):
    ROOT = "AUTHN"
    username = text("USERNAME")
    password = text_or("PASSWORD", "")
    secret = text_or("SECRET", "")


class MarketActionData(XmlView):
    ROOT = "MARKET_DRIVER_ACTION_DATA"

    @property
    def app(self) -> Template:
        return self.child("MARKETPLACEAPP", Template, required=False)

    @property
    def marketplace(self) -> Template:
        return self.child("MARKETPLACE", Template)


class IpamActionData(XmlView):
    ROOT = "IPAM_DRIVER_ACTION_DATA"

    @property
    def address_range(self) -> Template:
        return self.child("AR", Template)


class MonitorConfiguration(XmlView):
    ROOT = "MONITOR_CONFIGURATION"
    host_id = integer("HOST_ID")

