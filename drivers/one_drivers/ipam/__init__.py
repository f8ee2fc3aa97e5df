"""IPAM drivers: oned's address ranges managed by an external address service."""
