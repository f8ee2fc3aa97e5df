"""Views of the documents of each driver family (contract sections 2-10).

Only what drivers read is modelled as properties; anything else is reachable through
``view.template.get(...)`` or ``view.text(...)`` with the same path-aware errors.
"""

from __future__ import annotations

from collections.abc import Iterator

from one_drivers.core.xmlview import Template, XmlView, _WithTemplate

# -- datastore family -------------------------------------------------------------------------

DS_TYPES = {0: "IMAGE_DS", 1: "SYSTEM_DS", 2: "FILE_DS", 3: "BACKUP_DS"}
IMAGE_TYPES = {0: "OS", 1: "CDROM", 2: "DATABLOCK", 3: "KERNEL", 4: "RAMDISK", 5: "CONTEXT",
               6: "BACKUP"}


class Image(_WithTemplate):
    @property
    def id(self) -> int:
        return self.int("ID")

    @property
    def name(self) -> str:
        return self.text("NAME", "")

    @property
    def source(self) -> str | None:
        return self.opt("SOURCE")

    @property
    def path(self) -> str | None:
        return self.opt("PATH")

    @property
    def format(self) -> str:
        return self.text("FORMAT", "raw")

    @property
    def fs(self) -> str | None:
        return self.opt("FS")

    @property
    def size_mb(self) -> int:
        return self.int("SIZE")

    @property
    def type(self) -> str:
        code = self.int("TYPE", 0)
        return IMAGE_TYPES.get(code, str(code))

    @property
    def persistent(self) -> bool:
        return self.bool("PERSISTENT", False)

    @property
    def target_snapshot(self) -> int:
        return self.int("TARGET_SNAPSHOT")

    @property
    def snapshot_ids(self) -> list[int]:
        return [s.int("ID") for s in self.children("SNAPSHOTS/SNAPSHOT", XmlView)]


class Datastore(_WithTemplate):
    @property
    def id(self) -> int:
        return self.int("ID")

    @property
    def name(self) -> str:
        return self.text("NAME", "")

    @property
    def ds_mad(self) -> str | None:
        return self.opt("DS_MAD")

    @property
    def tm_mad(self) -> str | None:
        return self.opt("TM_MAD")

    @property
    def type(self) -> str:
        code = self.int("TYPE", 0)
        return DS_TYPES.get(code, str(code))

    @property
    def base_path(self) -> str | None:
        return self.opt("BASE_PATH")


class DsActionData(XmlView):
    """``DS_DRIVER_ACTION_DATA``: IMAGE (absent for monitor) and DATASTORE, plus extra elements."""

    ROOT = "DS_DRIVER_ACTION_DATA"

    @property
    def image(self) -> Image:
        return self.child("IMAGE", Image)

    @property
    def datastore(self) -> Datastore:
        return self.child("DATASTORE", Datastore)

    @property
    def datastore_location(self) -> str:
        return self.text("DATASTORE_LOCATION", "/var/lib/one/datastores")

    @property
    def monitor_vm_disks(self) -> bool:
        return self.bool("MONITOR_VM_DISKS", False)


# -- the VM document --------------------------------------------------------------------------


class Disk(Template):
    """``TEMPLATE/DISK``: attributes inherited from the datastore are on the disk itself."""

    @property
    def disk_id(self) -> int:
        return self.int("DISK_ID")

    @property
    def image_id(self) -> int | None:
        return self.int("IMAGE_ID") if self.has("IMAGE_ID") else None

    @property
    def datastore_id(self) -> int | None:
        return self.int("DATASTORE_ID") if self.has("DATASTORE_ID") else None

    @property
    def source(self) -> str | None:
        return self.opt("SOURCE")

    @property
    def clone(self) -> bool:
        return self.bool("CLONE", False)

    @property
    def persistent(self) -> bool:
        return self.bool("PERSISTENT", False)

    @property
    def type(self) -> str:
        return self.text("TYPE", "FILE").upper()

    @property
    def size_mb(self) -> int | None:
        return self.int("SIZE") if self.has("SIZE") else None

    @property
    def target(self) -> str | None:
        return self.opt("TARGET")


class Nic(Template):
    @property
    def nic_id(self) -> int:
        return self.int("NIC_ID")

    @property
    def network_id(self) -> int | None:
        return self.int("NETWORK_ID") if self.has("NETWORK_ID") else None

    @property
    def vn_mad(self) -> str | None:
        return self.opt("VN_MAD")

    @property
    def bridge(self) -> str | None:
        return self.opt("BRIDGE")

    @property
    def mac(self) -> str:
        return self.text("MAC")

    @property
    def target(self) -> str | None:
        return self.opt("TARGET")

    @property
    def attach(self) -> bool:
        return self.bool("ATTACH", False)


class History(XmlView):
    @property
    def hostname(self) -> str:
        return self.text("HOSTNAME")

    @property
    def host_id(self) -> int:
        return self.int("HID")

    @property
    def ds_id(self) -> int:
        return self.int("DS_ID")

    @property
    def vm_mad(self) -> str | None:
        return self.opt("VM_MAD")

    @property
    def tm_mad(self) -> str | None:
        return self.opt("TM_MAD")


class VM(_WithTemplate):
    """The VM document (``onevm show -x`` shape), as VNM, TM migrate and VMM actions receive it."""

    ROOT = "VM"

    @property
    def id(self) -> int:
        return self.int("ID")

    @property
    def name(self) -> str:
        return self.text("NAME", "")

    @property
    def deploy_id(self) -> str | None:
        return self.opt("DEPLOY_ID")

    @property
    def state(self) -> int | None:
        return self.int("STATE") if self.has("STATE") else None

    @property
    def lcm_state(self) -> int | None:
        return self.int("LCM_STATE") if self.has("LCM_STATE") else None

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

    @property
    def id(self) -> int:
        return self.int("ID")

    @property
    def name(self) -> str:
        return self.text("NAME", "")

    @property
    def bridge(self) -> str | None:
        return self.opt("BRIDGE")

    @property
    def vn_mad(self) -> str | None:
        return self.opt("VN_MAD")

    @property
    def vlan_id(self) -> str | None:
        return self.opt("VLAN_ID")


# -- other families ---------------------------------------------------------------------------


class VmmActionData(XmlView):
    """``VMM_DRIVER_ACTION_DATA`` (contract 5.1)."""

    ROOT = "VMM_DRIVER_ACTION_DATA"

    @property
    def host(self) -> str:
        return self.text("HOST")

    @property
    def migr_host(self) -> str | None:
        return self.opt("MIGR_HOST")

    @property
    def deploy_id(self) -> str | None:
        return self.opt("DEPLOY_ID")

    @property
    def checkpoint_file(self) -> str | None:
        return self.opt("CHECKPOINT_FILE")

    @property
    def tm_command(self) -> str | None:
        return self.opt("TM_COMMAND")

    @property
    def vm(self) -> VM:
        return self.child("VM", VM)

    @property
    def datastore(self) -> Datastore:
        return self.child("DATASTORE", Datastore, required=False)


class AuthN(XmlView):
    ROOT = "AUTHN"

    @property
    def username(self) -> str:
        return self.text("USERNAME")

    @property
    def password(self) -> str:
        return self.text("PASSWORD", "")

    @property
    def secret(self) -> str:
        return self.text("SECRET", "")


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

    @property
    def host_id(self) -> int:
        return self.int("HOST_ID")
