"""Catch an RBD image still open when its cluster handle shuts down.

librbd closes such an image against a dead cluster when the garbage collector reaches it, at
whatever Python line happens to be running then: it hangs in ``rbd_close``, aborts on a
destroyed mutex, or segfaults (all three reproduced; #19). Nothing in the bindings links an
``rbd.Image`` to its cluster, so the test process uses subclasses that remember it: every image
opened through ``rbd.Image`` (tests and driver actions run in-process alike) and every
``rados.Rados`` is tracked, and ``shutdown`` records each image of the cluster still open, with
where it was opened. Such an image is given a reference nobody holds, so it is never
deallocated, not even when the interpreter exits: the guard itself never lets it be closed on
the dead cluster.
"""

from __future__ import annotations

import ctypes
import traceback
import weakref
from typing import Any

violations: list[str] = []  # where each image found open at its cluster's shutdown was opened
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    try:
        import rados
        import rbd
    except ImportError:  # no Ceph bindings: nothing can be leaked
        return
    open_images: weakref.WeakSet[Any] = weakref.WeakSet()

    class TrackedImage(rbd.Image):  # type: ignore[misc,name-defined]
        def __init__(self, ioctx: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(ioctx, *args, **kwargs)
            self.tracked_ioctx = ioctx
            self.opened_at = "".join(traceback.format_stack(limit=10)[:-1])
            open_images.add(self)

    class TrackedRados(rados.Rados):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tracked_ioctxs: list[Any] = []

        def open_ioctx(self, *args: Any, **kwargs: Any) -> Any:
            ioctx = super().open_ioctx(*args, **kwargs)
            self.tracked_ioctxs.append(ioctx)
            return ioctx

        def open_ioctx2(self, *args: Any, **kwargs: Any) -> Any:
            ioctx = super().open_ioctx2(*args, **kwargs)
            self.tracked_ioctxs.append(ioctx)
            return ioctx

        def shutdown(self) -> None:
            mine = {id(i) for i in self.tracked_ioctxs}
            for image in list(open_images):
                if id(image.tracked_ioctx) not in mine:
                    continue
                try:
                    image.require_not_closed()
                except Exception:  # noqa: S112 - closed: fine
                    continue
                violations.append(image.opened_at)
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(image))  # never freed
            self.tracked_ioctxs.clear()
            super().shutdown()

    rbd.Image = TrackedImage
    rados.Rados = TrackedRados
    _installed = True


def take_violations() -> list[str]:
    found = list(violations)
    violations.clear()
    return found
