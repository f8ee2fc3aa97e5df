"""The ``rbdbackup`` backup datastore driver: VM disk backups as RBD images in a backup pool.

See :mod:`one_drivers.ceph.backups` for the layout: every backup of a chain is a snapshot of one
image per disk, an increment writes only what changed (librbd's diff, streamed), nothing is
staged on any host.
"""

from one_drivers.core.registry import Driver

_M = "one_drivers.datastore.rbdbackup"

DRIVER = Driver(
    family="datastore",
    name="rbdbackup",
    description="VM disk backups as RBD images (full and incremental, librbd diffs)",
    actions={
        "backup": f"{_M}.backup:backup",
        "increment_flatten": f"{_M}.backup:increment_flatten",
        "rm": f"{_M}.backup:rm",
        "stat": f"{_M}.backup:stat",
        "backup_cancel": f"{_M}.running:backup_cancel",
        "restore": f"{_M}.restore:restore",
        "ls": f"{_M}.restore:ls",
        "monitor": "one_drivers.datastore.rbd.monitor:monitor",
    },
    defaults={
        "POOL_NAME": ("one-backups", "RBD pool holding the backups (datastore POOL_NAME wins)"),
        "CEPH_CONF": ("/etc/ceph/ceph.conf", "ceph.conf of the backup cluster"),
        "CEPH_USER": ("", "cephx user of the backup cluster (without 'client.')"),
        "CEPH_KEY": ("", "keyring or keyfile of CEPH_USER"),
        "EC_POOL_NAME": ("", "erasure-coded data pool for backup images"),
        "BACKUP_RUN_DIR": ("~/.one-drivers/backups", "where running backups are recorded (private "
                                                      "to the driver's user), for backup_cancel"),
        "ONED_TIMEOUT": ("15", "seconds a document lookup in oned may take"),
        "ACTION_TIMEOUT": ("86400", "seconds an action may take in total (a full backup of a "
                                    "large disk is long)"),
        "CEPH_CALL_TIMEOUT": ("60", "seconds a single Ceph call may take"),
    },
    oned_conf={"PERSISTENT_ONLY": "NO"},
)
