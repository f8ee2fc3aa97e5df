"""Running the ``kea`` IPAM driver as oned's IPAM MAD does, against the lab's Kea and PowerDNS
(shared by the integration tests and bench/)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from one_drivers.core.xmlview import escape

ACTIONS = ("register_address_range", "unregister_address_range", "get_address",
           "allocate_address", "free_address")


def install(dest: Path, env: dict[str, str], **settings: Any) -> Path:
    """A remotes tree whose kea.conf points at the lab's services (``settings`` on top)."""
    from one_drivers.core.remotes import install as install_remotes

    install_remotes(dest, python=sys.executable)
    values = {"KEA_URL": env["ONE_LAB_KEA_URL"],
              "KEA_CREDENTIALS": env["ONE_LAB_KEA_CREDENTIALS"],
              "PDNS_URL": env["ONE_LAB_PDNS_URL"],
              "PDNS_API_KEY_FILE": env["ONE_LAB_PDNS_KEY_FILE"],
              "DNS_ZONES": env["ONE_LAB_DNS_ZONES"], "STATE_DIR": str(dest / "state"),
              **settings}
    conf = dest / "etc" / "ipam" / "kea" / "kea.conf"
    conf.write_text(conf.read_text() + "".join(f"\n{k}={v}" for k, v in values.items()) + "\n")
    return dest


def ar_xml(ar: dict[str, Any]) -> str:
    return "<AR>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in ar.items()) + "</AR>"


def document(ar: dict[str, Any], address: dict[str, Any] | None = None) -> str:
    addr = ("<ADDRESS>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in address.items())
            + "</ADDRESS>") if address is not None else ""
    return f"<IPAM_DRIVER_ACTION_DATA>{ar_xml(ar)}{addr}</IPAM_DRIVER_ACTION_DATA>"


def run(remotes: Path, action: str, ar: dict[str, Any], address: dict[str, Any] | None = None,
        *, request: int = 7, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One call as one_ipam makes it: ``<action> <request id>``, the document base64 on stdin."""
    data = base64.b64encode(document(ar, address).encode())
    return subprocess.run([str(remotes / "ipam" / "kea" / action), str(request)], input=data,
                          capture_output=True, timeout=timeout, check=False)


def text(proc: subprocess.CompletedProcess[bytes]) -> tuple[str, str]:
    return proc.stdout.decode(), proc.stderr.decode()


def answer(stdout: str, name: str) -> dict[str, str]:
    """The attributes of ``NAME = [ ... ]`` in an answer, as oned's template parser reads them."""
    import re

    body = stdout.split(f"{name} = [", 1)[1].rsplit("]", 1)[0]
    return dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', body))
