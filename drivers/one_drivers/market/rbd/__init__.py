"""The ``rbd`` marketplace driver: apps as RBD images in a market pool.

An app is an image ``one-app-<app id>-<nonce>`` with a protected snapshot ``app`` that its SOURCE
(``rbd://<host>/<pool>/<image>@app``) names, and the app's catalogue entry in its image-meta.
Creating an app from an ``rbd`` datastore image copies the image's data inside Ceph (allocated
extents only, no staging, no download); exporting it into an ``rbd`` datastore on the same
cluster is a copy-on-write clone of that snapshot (DS ``cp``), whatever its size.
"""

from one_drivers.core.registry import Driver

_M = "one_drivers.market.rbd.actions"

DRIVER = Driver(
    family="market",
    name="rbd",
    description="marketplace apps as RBD images (copied inside Ceph, exported by clone)",
    actions={
        "import": f"{_M}:import_app",
        "delete": f"{_M}:delete",
        "monitor": f"{_M}:monitor",
    },
    defaults={
        "POOL_NAME": ("one-market", "RBD pool holding the apps (the market's POOL_NAME wins)"),
        "CEPH_CONF": ("/etc/ceph/ceph.conf", "ceph.conf of the market's cluster"),
        "CEPH_USER": ("", "cephx user of the market (without 'client.')"),
        "CEPH_KEY": ("", "keyring or keyfile of CEPH_USER"),
        "NAMESPACE": ("", "a RADOS namespace of POOL_NAME holding the apps (created beforehand)"),
        "EC_POOL_NAME": ("", "erasure-coded data pool for the apps' data"),
        "EXPORT_HOST": ("", "host name in the apps' rbd:// SOURCE (default: this host's)"),
        "LIST_APPS": ("no", "yes: monitor lists every app of the pool (a catalogue shared by "
                            "zones; listed apps are oneadmin's in each zone, as in upstream's "
                            "public markets)"),
        "CEPH_ACCESS": ("local", "bridge: actions run on a BRIDGE_LIST host over ssh (the "
                                 "market's template sets it, with BRIDGE_LIST)"),
        "BRIDGE_PYTHON": ("", "the interpreter bridges run the driver with (default: this one)"),
        "ACTION_TIMEOUT": ("3600", "seconds an action may take in total (copying a large image)"),
        "CEPH_CALL_TIMEOUT": ("60", "seconds a single Ceph call may take"),
    },
    router="one_drivers.market.rbd.bridge:route",
    oned_conf={"REQUIRED_ATTRS": "POOL_NAME", "APP_ACTIONS": "create, delete, monitor"},
)
