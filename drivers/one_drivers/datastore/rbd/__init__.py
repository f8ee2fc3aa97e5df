"""The ``rbd`` datastore driver: OpenNebula images as Ceph RBD images, through librbd."""

from one_drivers.core.registry import Driver

DRIVER = Driver(
    family="datastore",
    name="rbd",
    description="Ceph RBD image datastore (librados/librbd)",
    actions={
        "monitor": "one_drivers.datastore.rbd.monitor:monitor",
    },
    defaults={
        "POOL_NAME": ("one", "RBD pool holding the images (datastore POOL_NAME overrides)"),
        "CEPH_CONF": ("/etc/ceph/ceph.conf", "ceph.conf used to find the monitors"),
        "CEPH_USER": ("", "cephx user (without 'client.'); empty means client.admin"),
        "CEPH_KEY": ("", "keyring or keyfile of CEPH_USER; empty means ceph.conf's keyring"),
        "ACTION_TIMEOUT": ("600", "seconds an action may take in total"),
        "MONITOR_TIMEOUT": ("60", "seconds the monitor action may take"),
        "CEPH_CALL_TIMEOUT": ("30", "seconds a single Ceph call may take"),
    },
    oned_conf={
        "REQUIRED_ATTRS": "DISK_TYPE",
        "PERSISTENT_ONLY": "NO",
    },
)
