"""The ``ovsdb`` VNM driver: Open vSwitch through OVSDB (ovsdbapp) and OpenFlow bundles."""

from one_drivers.core.registry import Driver

_M = "one_drivers.vnm.ovsdb"

DRIVER = Driver(
    family="vnm",
    name="ovsdb",
    description="Open vSwitch ports, VLANs, anti-spoofing and security groups (OVSDB, OpenFlow)",
    actions={
        "pre": f"{_M}.actions:pre",
        "post": f"{_M}.actions:post",
        "clean": f"{_M}.actions:clean",
        "update_sg": f"{_M}.actions:update_sg",
        "update_nic": f"{_M}.actions:update_nic",
        "vnet_create": f"{_M}.vnets:vnet_create",
        "vnet_delete": f"{_M}.vnets:vnet_delete",
    },
    defaults={
        "OVSDB": ("", "OVSDB endpoint (default: ONE_DRIVERS_OVSDB or "
                      "unix:/var/run/openvswitch/db.sock)"),
        "OVS_RUNDIR": ("", "where the bridges' OpenFlow sockets are (default: the directory of a "
                           "unix OVSDB socket)"),
        "DATAPATH_TYPE": ("", "datapath of the bridges we create: system, or netdev for the "
                              "userspace datapath (default: ONE_DRIVERS_OVS_DATAPATH_TYPE or "
                              "system)"),
        "OVS_BRIDGE_CONF": ("", "Bridge columns set on every bridge used, k=v,k2=v2 (the NIC's "
                                "OVS_BRIDGE_CONF wins)"),
        "SUDO": ("yes", "yes: an action that cannot write the OVSDB socket re-runs itself once "
                        "under `sudo -n` (the Ansible role installs the sudoers rule)"),
        "SUDO_COMMAND": ("", "the privileged entry `one-drivers install-sudo` wrote (default: "
                             "<venv>/libexec/one-drivers-vnm-privileged); root reads its own "
                             "settings from /etc/one-drivers/vnm-ovsdb.conf"),
        "KEEP_EMPTY_BRIDGE": ("no", "yes: keep bridges we created when their last VM port goes"),
        "STATE_DIR": ("", "where each VM's network document is kept for `one-drivers ovs "
                          "reconcile` (default: ONE_DRIVERS_VNM_STATE_DIR or "
                          "/var/lib/one/one-drivers/vnm, /var/lib/one-drivers/vnm for root)"),
        "OVSDB_TIMEOUT": ("10", "seconds an OVSDB connection or transaction may take"),
        "OPENFLOW_TIMEOUT": ("10", "seconds an OpenFlow bundle may take"),
        "HOOK_TIMEOUT": ("60", "seconds each <action>.d hook may take"),
        "ACTION_TIMEOUT": ("120", "seconds an action may take in total"),
    },
    oned_conf={"BRIDGE_TYPE": "openvswitch"},
    # as oneadmin, the action re-executes itself once under sudo when OVSDB is root's
    router=f"{_M}.privilege:route",
)
