"""The ``rbd`` transfer-manager driver: VM disks as Ceph RBD images, through librbd."""

from one_drivers.core.registry import Driver

_M = "one_drivers.tm.rbd"

DRIVER = Driver(
    family="tm",
    name="rbd",
    description="Ceph RBD disks for VMs (librbd); VM directories on hosts over ssh",
    actions={
        "clone": f"{_M}.disks:clone",
        "ln": f"{_M}.disks:ln",
        "mkimage": f"{_M}.disks:mkimage",
        "mkswap": f"{_M}.disks:mkswap",
        "delete": f"{_M}.disks:delete",
        "resize": f"{_M}.disks:resize",
        "mvds": f"{_M}.disks:mvds",
        "cpds": f"{_M}.disks:cpds",
        "snap_create": f"{_M}.snapshots:snap_create",
        "snap_create_live": f"{_M}.snapshots:snap_create_live",
        "snap_revert": f"{_M}.snapshots:snap_revert",
        "snap_delete": f"{_M}.snapshots:snap_delete",
        "context": f"{_M}.vmdir:context",
        "mv": f"{_M}.vmdir:mv",
        "premigrate": f"{_M}.migrate:premigrate",
        "postmigrate": f"{_M}.migrate:postmigrate",
        "failmigrate": f"{_M}.migrate:failmigrate",
        "monitor": f"{_M}.monitor:monitor",
        "prebackup": f"{_M}.backup:prebackup",
        "prebackup_live": f"{_M}.backup:prebackup_live",
        "postbackup": f"{_M}.backup:postbackup",
        "postbackup_live": f"{_M}.backup:postbackup_live",
        "restore": f"{_M}.restore:restore",
        "clone.ssh": f"{_M}.ssh_mode:clone_ssh",
        "ln.ssh": f"{_M}.ssh_mode:ln_ssh",
        "mvds.ssh": f"{_M}.ssh_mode:mvds_ssh",
        "cpds.ssh": f"{_M}.ssh_mode:cpds_ssh",
        "resize.ssh": f"{_M}.ssh_mode:resize_ssh",
        "delete.ssh": f"{_M}.ssh_mode:delete_ssh",
    },
    defaults={
        "POOL_NAME": ("one", "pool for volatile disks (the system datastore's POOL_NAME wins)"),
        "CEPH_CONF": ("/etc/ceph/ceph.conf", "ceph.conf used to find the monitors"),
        "CEPH_USER": ("", "cephx user (the disk's CEPH_USER, inherited from its datastore, wins)"),
        "CEPH_KEY": ("", "keyring or keyfile of CEPH_USER"),
        "CEPH_ACCESS": ("local", "where Ceph is reached: local (this front-end), host (the VM's "
                                 "host, BRIDGE_LIST when there is none) or bridge (BRIDGE_LIST)"),
        "TM_CEPH_ACCESS": ("", "as CEPH_ACCESS, for TM actions only (wins over CEPH_ACCESS)"),
        "BRIDGE_LIST": ("", "hosts for CEPH_ACCESS=bridge (the datastore's BRIDGE_LIST overrides)"),
        "RBD_FORMAT": ("2", "format of new images: 2 (format 1 cannot be made by this Ceph)"),
        "CEPH_TRASH": ("no", "yes: delete moves disks to the RBD trash"),
        "TRASH_DEFERMENT": ("86400", "seconds a trashed disk is kept"),
        "DELETE_MODE": ("now", "now: delete removes disk and snapshots; deferred: it moves them "
                               "to the RBD trash (~10x faster) and trash-purge reclaims them"),
        "CLONE_MAX_DEPTH": ("5", "clone chains deeper than this are flattened at once"),
        "STAGING_DIR": ("/var/tmp", "where file systems for volatile disks are made"),
        "ONED_TIMEOUT": ("15", "seconds a document lookup in oned may take"),
        "SSH_TIMEOUT": ("60", "seconds a command on a host may take"),
        "LIBVIRT_URI": ("", "libvirt on this host (default: LIBVIRT_DEFAULT_URI or system)"),
        "LIBVIRT_REMOTE_URI": ("qemu+ssh://{host}/system", "libvirt on another host"),
        "LIBVIRT_TIMEOUT": ("30", "seconds a libvirt connection may take"),
        "FREEZE_TIMEOUT": ("30", "seconds the guest agent gets to freeze or thaw"),
        "BACKUP_DISKS_AGREE": ("YES", "a live backup of several disks with FS_FREEZE=NONE pauses "
                                      "the guest while the snapshots are taken (milliseconds), "
                                      "so the disks hold one point in time; NO: one by one"),
        "BACKUP_BASE_PATH": ("", "upstream's datastore.conf setting for rsync/restic backup "
                                 "datastores: where the backup files go on hosts (default: "
                                 "the VM directory's backup/)"),
        "HOST_PYTHON": ("", "one-drivers' interpreter on hosts and bridges (default: this one)"),
        "MONITORD_ADDRESS": ("127.0.0.1", "where monitord listens (monitord.conf NETWORK)"),
        "MONITORD_PORT": ("4124", "monitord's UDP port"),
        "ACTION_TIMEOUT": ("1800", "seconds an action may take in total"),
        "CEPH_CALL_TIMEOUT": ("30", "seconds a single Ceph call may take"),
    },
    router="one_drivers.tm.rbd.placement:route",
    oned_conf={
        "LN_TARGET": "NONE",
        "CLONE_TARGET": "SELF",
        "SHARED": "YES",
        "DS_MIGRATE": "NO",
        "DS_LIVE_MIGRATE": "NO",
        "DS_MIGRATE_SNAP": "NO",
        "DRIVER": "raw",
        # reverts roll back in place: every snapshot is independent in Ceph, so oned may let
        # any of them be deleted (upstream's "mixed" made it refuse snapshots with children)
        "ALLOW_ORPHANS": "YES",
        "TM_MAD_SYSTEM": "ssh",
        "LN_TARGET_SSH": "SYSTEM",
        "CLONE_TARGET_SSH": "SYSTEM",
        "DISK_TYPE_SSH": "FILE",
    },
)
