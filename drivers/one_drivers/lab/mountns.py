"""Run a program with private bind mounts: ``python -m one_drivers.lab.mountns [--reap]
SRC=DST... -- ARGV``.

Started under ``unshare --mount --propagation private`` so the binds exist only for that program
and its children (libvirtd and the QEMUs it starts). Python 3.11 has no os.unshare/mount, hence
ctypes.

``--reap`` keeps this process as the program's parent and a child subreaper that reaps every
orphan, as a host's init does. The lab's PID 1 does not: a QEMU that exited stayed a zombie, and
libvirt, seeing it still "alive", took ~1.7 s to finish every destroy.
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


PR_SET_CHILD_SUBREAPER = 36


def reap_while(program: list[str]) -> int:
    """Run ``program`` as our child, forward SIGTERM/SIGINT to it, reap every descendant that
    ends; return its exit status once it ends."""
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        os.execvp(program[0], program)  # noqa: S606 - argv list, no shell
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if done == pid:
            return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> None:
    reap = bool(argv) and argv[0] == "--reap"
    if reap:
        argv = argv[1:]
    sep = argv.index("--")
    for spec in argv[:sep]:
        src, _, dst = spec.partition("=")
        bind(src, dst)
    program = argv[sep + 1:]
    if reap:
        sys.exit(reap_while(program))
    os.execvp(program[0], program)  # noqa: S606 - argv list, no shell


if __name__ == "__main__":
    main(sys.argv[1:])
