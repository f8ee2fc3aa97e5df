"""Transfer manager (TM) drivers: ``remotes/tm/<driver>/<action>``."""
