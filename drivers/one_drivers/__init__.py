"""one-drivers: OpenNebula drivers for Ceph RBD, Open vSwitch and libvirt.

Nothing is imported here: every driver process starts from this package and must start fast.
"""

__version__ = "0.1.0"
