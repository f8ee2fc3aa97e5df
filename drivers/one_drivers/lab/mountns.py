"""Run a program with private bind mounts: ``python -m one_drivers.lab.mountns SRC=DST... -- ARGV``.

Started under ``unshare --mount --propagation private`` so the binds exist only for that program
and its children (libvirtd and the QEMUs it starts). Python 3.11 has no os.unshare/mount, hence
ctypes.
"""

from __future__ import annotations

import ctypes
import os
import sys

MS_BIND = 4096


def bind(src: str, dst: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(src.encode(), dst.encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind mount {src} on {dst}: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    sep = argv.index("--")
    for spec in argv[:sep]:
        src, _, dst = spec.partition("=")
        bind(src, dst)
    program = argv[sep + 1:]
    os.execvp(program[0], program)  # noqa: S606 - argv list, no shell


if __name__ == "__main__":
    main(sys.argv[1:])
