"""The ``libvirt`` monitoring (IM) driver: host and VM state for monitord, in bulk."""

from one_drivers.core.registry import Driver

_M = "one_drivers.im.libvirt"

DRIVER = Driver(
    family="im",
    name="libvirt",
    description="host and VM monitoring from libvirt bulk statistics",
    actions={
        "run_monitord_client": f"{_M}.control:run_monitord_client",
        "stop_monitord_client": f"{_M}.control:stop_monitord_client",
    },
    defaults={
        "LIBVIRT_URI": ("", "libvirt on this host (default: LIBVIRT_DEFAULT_URI or "
                            "qemu:///system)"),
        "STATE_DIR": ("", "the client's state, pid and log (default: ONE_DRIVERS_IM_STATE_DIR "
                          "or ~/.one-drivers/im; owned by the driver user, 0700, checked)"),
        "PCI_FILTER": ("", "PCI classes reported in SYSTEM_HOST, comma-separated prefixes like "
                           "0300,0302 (* for all; empty: none)"),
        "FORECAST_PERIOD": ("300", "seconds ahead MONITOR_HOST/MONITOR_VM *_FORECAST keys look, "
                                   "from the last hour's trend (0: no forecasts)"),
        "GUEST_AGENT_MONITOR": ("yes", "MONITOR_VM carries OS_* and GUEST_IP(_ADDRESSES) from each "
                                       "VM's guest agent, when it has one connected"),
        "STATE_RESEND_AFTER": ("35", "seconds after which a VM state change is sent once more "
                                     "(oned ignores a VM's state for 30 s after an action on it)"),
        "LIBVIRT_TIMEOUT": ("30", "seconds connecting to libvirt may take"),
        "ACTION_TIMEOUT": ("60", "seconds starting or stopping the client may take"),
    },
    oned_conf={"EXECUTABLE": "one_im_ssh", "ARGUMENTS": "-r 3 -t 15 -w 90 libvirt",
               "THREADS": "0"},
)
