"""The lab guest's serial console on a unix socket: wait for its boot line, run shell commands
and read their output (the guest runs a busybox shell on ttyS0)."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

from one_drivers.lab.proc import LabError


class GuestConsole:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.log = Path(f"{path}.log")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until ``text`` is in the console log (the whole boot's output)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.log.exists() and text in self.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise LabError(f"the guest did not print {text!r} within {timeout:g} s:\n{tail}")

    def run(self, command: str, timeout: float = 20) -> str:
        """Run ``command`` in the guest's shell; its output, without the echoed command."""
        marker = uuid.uuid4().hex[:8]
        # the echoed line holds BEG""<marker> (quotes, maybe wrapped by the tty), the output
        # BEG<marker>: only the output matches
        line = f'stty -echo; echo BEG""{marker}; {command}; echo END""{marker}\n'
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(self.path)
            sock.sendall(b"\n" + line.encode())
            buf = b""
            end = time.monotonic() + timeout
            while f"END{marker}".encode() not in buf:
                if time.monotonic() > end:
                    raise LabError(f"no answer to {command!r} from the guest console:\n"
                                   f"{buf.decode(errors='replace')[-1000:]}")
                try:
                    buf += sock.recv(65536)
                except TimeoutError:
                    continue
        text = buf.decode(errors="replace").replace("\r", "")
        return text.split(f"BEG{marker}", 1)[-1].split(f"END{marker}", 1)[0].strip()

    def wait_until_output(self, command: str, expected: str, timeout: float = 20,
                          attempt: float = 5) -> bool:
        """Run ``command`` until ``expected`` is a word (or the whole) of its output: hot-plug
        takes the guest a moment, and a console just woken from suspend may lose the start of
        a line (the guest's shell then sees half a command): each attempt is a new line."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                out = self.run(command, timeout=min(attempt, max(0.5, end - time.monotonic())))
            except LabError:
                continue
            if expected == out or expected in out.split():
                return True
            time.sleep(0.5)
        return False
