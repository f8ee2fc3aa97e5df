"""Build (once) the local base image the Molecule scenarios run: Debian 12 with systemd as PID 1,
from the machine's own apt mirror with debootstrap, imported into podman. No registry needed.

    python3 molecule/images/build.py [--force]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

IMAGE = "localhost/one-drivers-debian12:latest"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "sudo",
            "ca-certificates", "iproute2", "procps", "gnupg"]


def mirror() -> str:
    """The Debian mirror this machine uses (sources.list.d deb822 or one-line format)."""
    for path in [*sorted(Path("/etc/apt/sources.list.d").glob("*")), Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        found = re.search(r"^URIs:\s*(\S+)", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm", text, re.MULTILINE)
        if found:
            return found.group(1)
    return "http://deb.debian.org/debian"


def exists() -> bool:
    return subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode == 0


def build() -> None:
    with tempfile.TemporaryDirectory(prefix="one-drivers-image-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        "bookworm", str(root), mirror()], check=True)
        # the containers use the same mirror as the machine
        (root / "etc/apt/sources.list").write_text(
            f"deb {mirror()} bookworm main\ndeb {mirror()} bookworm-updates main\n")
        (root / "etc/machine-id").write_text("")
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        subprocess.run(["podman", "import", "--change", 'CMD ["/sbin/init"]',
                        "--change", "STOPSIGNAL SIGRTMIN+3", str(tarball), IMAGE], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if it exists")
    args = parser.parse_args()
    if exists() and not args.force:
        print(f"{IMAGE} exists")
        return 0
    build()
    print(f"{IMAGE} built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
