"""The embedded one-machine lab: real Ceph, Open vSwitch, libvirtd + QEMU and sshd on loopback.

Everything lives under one state directory; no systemd; ``down`` stops by recorded PID only.
"""
