"""Ownership in RBD image-meta: what we created, for whom. GC deletes only what carries it."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

PREFIX = "one_drivers."
OWNER = "one-drivers"


def stamp(kind: str, **fields: object) -> dict[str, str]:
    """The metadata written on an image we create (``kind``: image, clone, volatile, ...)."""
    meta = {"owner": OWNER, "kind": kind, "created": str(int(time.time())),
            "creator": f"{socket.gethostname()}:{os.getpid()}"}
    meta.update({k: str(v) for k, v in fields.items() if v is not None})
    return {PREFIX + k: v for k, v in meta.items()}


def apply(image: Any, meta: dict[str, str]) -> None:
    for key, value in meta.items():
        image.metadata_set(key, value)


def read(image: Any) -> dict[str, str]:
    """Our metadata of an open image (prefix stripped); empty when it is not ours."""
    out: dict[str, str] = {}
    for key, value in image.metadata_list():
        if key.startswith(PREFIX):
            out[key[len(PREFIX):]] = value
    return out if out.get("owner") == OWNER else {}
