"""The ``rbd`` datastore driver: OpenNebula images as Ceph RBD images, through librbd."""

from one_drivers.core.registry import Driver

DRIVER = Driver(
    family="datastore",
    name="rbd",
    description="Ceph RBD image datastore (librados/librbd)",
    actions={
        "cp": "one_drivers.datastore.rbd.cp:cp",
        "mkfs": "one_drivers.datastore.rbd.mkfs:mkfs",
        "clone": "one_drivers.datastore.rbd.clone:clone",
        "rm": "one_drivers.datastore.rbd.rm:rm",
        "stat": "one_drivers.datastore.rbd.stat:stat",
        "monitor": "one_drivers.datastore.rbd.monitor:monitor",
        "snap_revert": "one_drivers.datastore.rbd.snapshots:snap_revert",
        "snap_delete": "one_drivers.datastore.rbd.snapshots:snap_delete",
        "snap_flatten": "one_drivers.datastore.rbd.snapshots:snap_flatten",
        "export": "one_drivers.datastore.rbd.export:export",
    },
    defaults={
        "POOL_NAME": ("one", "RBD pool holding the images (datastore POOL_NAME overrides)"),
        "CEPH_CONF": ("/etc/ceph/ceph.conf", "ceph.conf used to find the monitors"),
        "CEPH_USER": ("", "cephx user (without 'client.'); empty means client.admin"),
        "CEPH_KEY": ("", "keyring or keyfile of CEPH_USER; empty means ceph.conf's keyring"),
        "EC_POOL_NAME": ("", "erasure-coded data pool for new images (metadata in POOL_NAME)"),
        "STAGING_DIR": ("/var/tmp", "where images needing qemu-img are staged (bounded, removed)"),
        "RESTRICTED_DIRS": ("/", "cp refuses local paths under these..."),
        "SAFE_DIRS": ("/var/tmp", "...unless they are also under one of these"),
        "NO_DECOMPRESS": ("no", "yes: import gzip/bzip2/xz files as they are"),
        "LIMIT_TRANSFER_BW": ("", "cap on download speed, bytes/s (K, M, G suffixes)"),
        "SUPPORTED_FS": ("ext2,ext3,ext4,xfs", "file systems mkfs may create"),
        "RBD_FORMAT": ("2", "format of new images: 2 (format 1 cannot be made by this Ceph)"),
        "CEPH_TRASH": ("no", "yes: rm moves images to the RBD trash instead of deleting them"),
        "TRASH_DEFERMENT": ("86400", "seconds a trashed image is kept before trash-purge"),
        "CLONE_MAX_DEPTH": ("5", "clone chains deeper than this are flattened at once"),
        "EXPORT_HOST": ("", "host name put in export URLs (default: this host's FQDN)"),
        "CEPH_ACCESS": ("local", "local: this host is a Ceph client; bridge: run actions on "
                                 "a BRIDGE_LIST host over ssh"),
        "BRIDGE_LIST": ("", "bridge hosts (the datastore's BRIDGE_LIST overrides)"),
        "BRIDGE_PYTHON": ("", "one-drivers' interpreter on the bridges (default: this one)"),
        "ACTION_TIMEOUT": ("3600", "seconds an action may take in total (cp of large images)"),
        "STAT_TIMEOUT": ("80", "seconds stat may take (oned waits 90 s at most)"),
        "MONITOR_TIMEOUT": ("60", "seconds the monitor action may take"),
        "CEPH_CALL_TIMEOUT": ("30", "seconds a single Ceph call may take"),
    },
    router="one_drivers.datastore.rbd.bridge:route",
    oned_conf={
        "REQUIRED_ATTRS": "DISK_TYPE",
        "PERSISTENT_ONLY": "NO",
        "MARKETPLACE_ACTIONS": "export",
    },
)
