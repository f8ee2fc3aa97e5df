"""The Ceph layer shared by the DS and TM drivers: sessions, naming, RBD primitives."""
