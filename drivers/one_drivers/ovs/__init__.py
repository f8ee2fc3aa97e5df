"""Open vSwitch for VM NICs: what a NIC asks for (:mod:`spec`, :mod:`secgroups`), the OpenFlow
pipeline that enforces it (:mod:`flows`, applied by :mod:`ofctl` in atomic bundles) and the OVSDB
state (bridges, ports, QoS) written through ovsdbapp in one transaction per action (:mod:`ovsdb`).

Pure modules (spec, secgroups, flows) import nothing heavy and are unit-tested without services.
"""
