"""Virtual machine manager (VMM) drivers."""
