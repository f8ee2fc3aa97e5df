"""ovsdbapp's ``__init__`` sets ``__version__`` through ``pbr.version``, which imports
importlib.metadata and scans the installed distributions: ~18 ms of every VNM action (a fifth of
it) for a string nobody reads. While ovsdbapp is imported, ``pbr.version`` is a stand-in whose
``VersionInfo(...).version_string()`` answers "unknown"; anything else asked of it, or any import
after that moment, gets the real module."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager


class _VersionInfo:
    def __init__(self, package: str) -> None:
        self.package = package

    def version_string(self) -> str:
        return "unknown"


@contextmanager
def without_pbr_version_lookup() -> Iterator[None]:
    if "pbr.version" in sys.modules:  # already imported for real: nothing to save
        yield
        return
    import pbr  # type: ignore[import-untyped]  # the package itself is empty and cheap

    stand_in = types.ModuleType("pbr.version")
    stand_in.VersionInfo = _VersionInfo  # type: ignore[attr-defined]
    sys.modules["pbr.version"] = stand_in
    pbr.version = stand_in
    try:
        yield
    finally:
        if sys.modules.get("pbr.version") is stand_in:
            del sys.modules["pbr.version"]
            del pbr.version
