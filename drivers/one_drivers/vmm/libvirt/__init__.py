"""The ``libvirt`` VMM driver (TYPE kvm): a VM's life through libvirt-python, no virsh."""

from one_drivers.core.registry import Driver

_M = "one_drivers.vmm.libvirt"

DRIVER = Driver(
    family="vmm",
    name="libvirt",
    description="KVM/QEMU virtual machines through libvirt-python",
    actions={
        "deploy": f"{_M}.lifecycle:deploy",
        "shutdown": f"{_M}.lifecycle:shutdown",
        "cancel": f"{_M}.lifecycle:cancel",
        "reboot": f"{_M}.lifecycle:reboot",
        "reset": f"{_M}.lifecycle:reset",
        "migrate": f"{_M}.migrate:migrate",
        "save": f"{_M}.checkpoint:save",
        "restore": f"{_M}.checkpoint:restore",
        "attach_disk": f"{_M}.hotplug:attach_disk",
        "detach_disk": f"{_M}.hotplug:detach_disk",
        "attach_nic": f"{_M}.hotplug:attach_nic",
        "detach_nic": f"{_M}.hotplug:detach_nic",
        "prereconfigure": f"{_M}.hotplug:prereconfigure",
        "reconfigure": f"{_M}.hotplug:reconfigure",
        "resize": f"{_M}.hotplug:resize",
        "resize_disk": f"{_M}.hotplug:resize_disk",
        "snapshot_create": f"{_M}.snapshots:snapshot_create",
        "snapshot_revert": f"{_M}.snapshots:snapshot_revert",
        "snapshot_delete": f"{_M}.snapshots:snapshot_delete",
        "exec": f"{_M}.guest_agent:exec_",
        "exec_cancel": f"{_M}.guest_agent:exec_cancel",
    },
    defaults={
        "LIBVIRT_URI": ("", "libvirt on this host (default: LIBVIRT_DEFAULT_URI or "
                            "qemu:///system)"),
        "DOMAIN_TYPE": ("", "kvm or qemu (TCG) for every domain; empty keeps the deployment "
                            "file's (default: ONE_DRIVERS_DOMAIN_TYPE)"),
        "CEPH_CONF": ("", "ceph.conf whose monitors RBD disks list (default: CEPH_CONF or "
                          "/etc/ceph/ceph.conf)"),
        "LIBVIRT_REMOTE_URI": ("qemu+ssh://{host}/system", "libvirt on another host (the "
                                                            "migration destination)"),
        "MIGRATE_AUTO_CONVERGE": ("no", "throttle a guest whose memory changes faster than it "
                                        "migrates"),
        "MIGRATE_AUTO_CONVERGE_INITIAL": ("", "initial throttle, percent"),
        "MIGRATE_AUTO_CONVERGE_INCREMENT": ("", "throttle increment, percent"),
        "MIGRATE_COMPRESSED": ("no", "compress the migration stream"),
        "MIGRATE_BANDWIDTH": ("0", "MiB/s the migration may use (0: no limit)"),
        "MIGRATE_MAX_DOWNTIME": ("0", "ms the guest may stand still at the end (0: libvirt's)"),
        "MIGRATE_UNSAFE": ("no", "migrate even when libvirt deems the disk cache unsafe"),
        "MIGRATE_URI": ("", "the migration stream's address, e.g. tcp://{host} (default: "
                            "libvirt's, from the destination's hostname)"),
        "DEPLOY_TWEAKS": ("", "Python entry points module:function rewriting the domain XML "
                              "before deploy, comma-separated"),
        "DEPLOY_TWEAKS_DIR": ("", "a directory of executables rewriting the domain XML (stdin to "
                                  "stdout) before deploy, run in name order"),
        "GUEST_AGENT_TIMEOUT": ("10", "seconds a guest agent command (exec, exec_cancel) may "
                                      "take"),
        "OVMF_NVRAM": ("", "UEFI variable store template for new VMs (default: the VARS file "
                           "that goes with the loader, from Debian's ovmf)"),
        "SYNC_TIME": ("yes", "set the guest's clock through its agent after restore and "
                             "migration"),
        "ACPI_TIMEOUT": ("180", "seconds a guest gets to power off after the ACPI power button "
                                "(upstream's kvmrc SHUTDOWN_TIMEOUT; here SHUTDOWN_TIMEOUT, like "
                                "every <ACTION>_TIMEOUT, limits the whole action)"),
        "EMULATOR": ("", "the EMULATOR your host templates set, if any (for one-drivers doctor; "
                         "empty: oned's default /usr/bin/qemu-kvm-one)"),
        "ACPI_PRESS_INTERVAL": ("5", "seconds between presses of the power button while the "
                                     "guest runs (a guest still booting loses a press)"),
        "CANCEL_NO_ACPI": ("no", "yes: shutdown of a guest without ACPI destroys it at once "
                                 "(it cannot hear the power button), as upstream's kvmrc"),
        "FORCE_DESTROY": ("yes", "destroy a guest that ignored ACPI for ACPI_TIMEOUT"),
        "DETACH_TIMEOUT": ("20", "seconds a guest gets to release a hot-unplugged device"),
        "DEFAULT_ATTACH_CACHE": ("none", "cache of hot-plugged disks without CACHE"),
        "DEFAULT_ATTACH_DISCARD": ("unmap", "discard of hot-plugged disks without DISCARD"),
        "DEFAULT_ATTACH_NIC_FILTER": ("", "libvirt traffic filter for attached NICs with an IP "
                                          "and no FILTER (vmm_exec_kvm.conf's NIC FILTER)"),
        "DEFAULT_ATTACH_VIRTIO_QUEUES": ("", "virtio queues of attached NICs without VIRTIO_QUEUES "
                                             "(a number or auto: one per vCPU)"),
        "DEFAULT_ATTACH_NIC_MODEL": ("virtio", "model of hot-plugged NICs without MODEL"),
        "LIBVIRT_TIMEOUT": ("30", "seconds a single libvirt call may take"),
        "ACTION_TIMEOUT": ("900", "seconds an action may take in total"),
    },
    # -p: actions for one host run in parallel, so a cancel never waits behind a shutdown
    oned_conf={"SUNSTONE_NAME": "KVM (one-drivers libvirt)", "EXECUTABLE": "one_vmm_exec",
               "ARGUMENTS": "-t 15 -r 0 libvirt -p", "DEFAULT": "vmm_exec/vmm_exec_kvm.conf",
               "TYPE": "kvm", "KEEP_SNAPSHOTS": "yes", "LIVE_RESIZE": "yes",
               "SUPPORT_SHAREABLE": "yes"},
)
