"""Datastore (DS) drivers: ``remotes/datastore/<driver>/<action>``."""
