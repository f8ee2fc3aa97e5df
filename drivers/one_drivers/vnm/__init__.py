"""Virtual network (VNM) drivers."""
