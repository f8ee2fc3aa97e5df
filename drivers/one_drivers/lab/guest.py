"""A tiny bootable guest built locally from Debian packages.

Debian's cloud kernel (downloaded with ``apt-get download``, unpacked, never installed) plus a
busybox-static initramfs with the virtio, CD-ROM and ACPI button modules, and Debian's QEMU guest
agent (also downloaded, with the shared libraries it needs copied from this machine) started on
the ``org.qemu.guest_agent.0`` channel when the domain has one. It boots under TCG to a console
line in a few seconds, answers the ACPI power button, and can carry a raw disk image for RBD
import. Built once and cached under the lab directory (rebuilt when :data:`VERSION` changes).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from one_drivers.lab.proc import LabError, run

KERNEL_META = "linux-image-cloud-amd64"
MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_balloon", "virtio_console",
           "button", "evdev", "ata_piix", "sr_mod", "isofs"]
READY_LINE = "one-lab-guest: ready"
AGENT_PACKAGE = "qemu-guest-agent"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
VERSION = "2"  # of what the guest carries: a cached guest of another version is rebuilt

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
mkdir -p /etc/acpi /mnt
printf '#!/bin/sh\\necho one-lab-guest: power button, shutting down\\nsync\\npoweroff -f\\n' \\
  > /etc/acpi/power
chmod +x /etc/acpi/power
# busybox acpid: an event whose text contains PWRF runs /etc/acpi/power
echo 'PWRF power' > /etc/acpid.conf
# (daemonized, busybox acpid loses the event here: keep it in the foreground, in background)
(acpid -f -d -c /etc/acpi -a /etc/acpid.conf >/dev/console 2>&1 &)
ln -s /bin/busybox /sbin/hwclock  # qemu-ga's guest-set-time runs /sbin/hwclock
for p in /sys/class/virtio-ports/*; do
  if [ "$(cat $p/name 2>/dev/null)" = {AGENT_CHANNEL} ]; then
    (/usr/sbin/qemu-ga -m virtio-serial -p /dev/${{p##*/}} -t /tmp -f /tmp/qemu-ga.pid \
      >/dev/console 2>&1 &)
    echo "one-lab-guest: guest agent on ${{p##*/}}"
  fi
done
ip link set lo up
for n in /sys/class/net/eth*; do [ -e "$n" ] && ip link set "${{n##*/}}" up; done
echo "one-lab-guest: disks: $(ls /sys/block | tr '\\n' ' ')"
echo "one-lab-guest: nics: $(ls /sys/class/net | tr '\\n' ' ')"
echo "{READY_LINE}"
while true; do setsid cttyhack sh; done
"""


class Guest:
    def __init__(self, root: Path) -> None:
        self.dir = root / "guest"
        self.kernel = self.dir / "vmlinuz"
        self.initrd = self.dir / "initrd.gz"

    def env(self) -> dict[str, str]:
        return {"ONE_LAB_GUEST_KERNEL": str(self.kernel), "ONE_LAB_GUEST_INITRD": str(self.initrd),
                "ONE_LAB_GUEST_READY": READY_LINE}

    @property
    def disk(self) -> Path:
        return self.dir / "guest-disk.qcow2"

    def build_disk(self) -> Path:
        """A qcow2 disk image of the guest: an ext4 file system holding its kernel and initrd
        (what a marketplace image is to OpenNebula: a file to import)."""
        if self.disk.exists():
            return self.disk
        self.build()
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            content = Path(tmp) / "content" / "boot"
            content.mkdir(parents=True)
            shutil.copyfile(self.kernel, content / "vmlinuz")
            shutil.copyfile(self.initrd, content / "initrd.gz")
            raw = Path(tmp) / "disk.raw"
            run(["mkfs.ext4", "-q", "-F", "-L", "one-guest", "-d", str(content.parent),
                 str(raw), "128M"], timeout=120)
            qcow = Path(tmp) / "disk.qcow2"
            run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)],
                timeout=120)
            qcow.replace(self.disk)
        return self.disk

    @property
    def version_file(self) -> Path:
        return self.dir / "version"

    def built(self) -> bool:
        return (self.kernel.exists() and self.initrd.exists() and self.version_file.exists()
                and self.version_file.read_text().strip() == VERSION)

    def build(self) -> None:
        if self.built():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            work = Path(tmp)
            deb = self._download_kernel(work)
            unpacked = work / "kernel"
            run(["dpkg-deb", "-x", str(deb), str(unpacked)], timeout=120)
            vmlinuz = next((unpacked / "boot").glob("vmlinuz-*"))
            moddir = next((unpacked / "lib" / "modules").iterdir())
            # the .deb ships no modules.dep: depmod writes it into the unpacked tree only
            run(["depmod", "-b", str(unpacked), moddir.name], timeout=120)
            rootfs = work / "rootfs"
            self._make_rootfs(rootfs, moddir)
            self._add_agent(work, rootfs)
            initrd_tmp = work / "initrd.gz"
            self._pack(rootfs, initrd_tmp)
            shutil.copyfile(vmlinuz, self.kernel.with_suffix(".tmp"))
            self.kernel.with_suffix(".tmp").replace(self.kernel)
            initrd_tmp.replace(self.initrd)
            self.disk.unlink(missing_ok=True)  # made from the old initrd
            self.version_file.write_text(VERSION + "\n")

    def _download_kernel(self, work: Path) -> Path:
        deps = run(["apt-cache", "depends", KERNEL_META], check=False).stdout.decode()
        match = re.search(r"Depends: (linux-image-\S+)", deps)
        if not match:  # package lists not fetched yet on this machine
            run(["apt-get", "update", "-q"], timeout=600)
            deps = run(["apt-cache", "depends", KERNEL_META]).stdout.decode()
            match = re.search(r"Depends: (linux-image-\S+)", deps)
        if not match:
            raise LabError(f"cannot find the kernel package behind {KERNEL_META}; "
                           "run apt-get update")
        run(["apt-get", "download", "-q", match.group(1)], timeout=300, cwd=work)
        return next(work.glob("linux-image-*.deb"))

    @staticmethod
    def _add_agent(work: Path, rootfs: Path) -> None:
        """Debian's qemu-ga and the libraries it links, at their paths (the guest has no
        package manager: the same Debian release's libraries, taken from this machine)."""
        run(["apt-get", "download", "-q", AGENT_PACKAGE], timeout=300, cwd=work)
        deb = next(work.glob(f"{AGENT_PACKAGE}_*.deb"))
        unpacked = work / "agent"
        run(["dpkg-deb", "-x", str(deb), str(unpacked)], timeout=120)
        binary = unpacked / "usr" / "sbin" / "qemu-ga"
        (rootfs / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, rootfs / "usr" / "sbin" / "qemu-ga")
        listed = run(["ldd", str(binary)], timeout=60).stdout.decode()
        libs = re.findall(r"(?:=>\s*)?(/\S+)\s+\(0x", listed)
        if not libs:
            raise LabError(f"ldd found no libraries for {binary}: {listed.strip()}")
        for lib in libs:
            target = rootfs / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lib, target)  # a symlink's target, under the linked name
            target.chmod(0o755)

    def _make_rootfs(self, rootfs: Path, moddir: Path) -> None:
        for sub in ("bin", "sbin", "dev", "proc", "sys", "etc", "lib/modules", "tmp", "root"):
            (rootfs / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
        init = rootfs / "init"
        init.write_text(INIT)
        init.chmod(0o755)
        order = self._module_order(moddir)
        for rel in order:
            shutil.copyfile(moddir / rel, rootfs / "lib" / "modules" / Path(rel).name)
        (rootfs / "etc" / "modules.order").write_text(
            "\n".join(Path(rel).name.removesuffix(".ko") for rel in order) + "\n")

    @staticmethod
    def _module_order(moddir: Path) -> list[str]:
        """Wanted modules with their dependencies, dependencies first (from modules.dep)."""
        deps: dict[str, list[str]] = {}
        by_name: dict[str, str] = {}
        for line in (moddir / "modules.dep").read_text().splitlines():
            mod, _, rest = line.partition(":")
            deps[mod] = rest.split()
            by_name[Path(mod).name.removesuffix(".ko").replace("-", "_")] = mod
        order: list[str] = []

        def visit(mod: str) -> None:
            for dep in deps.get(mod, []):
                visit(dep)
            if mod not in order:
                order.append(mod)

        for name in MODULES:
            if name not in by_name:
                raise LabError(f"guest kernel has no module {name}")
            visit(by_name[name])
        return order

    @staticmethod
    def _pack(rootfs: Path, out: Path) -> None:
        names = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
        proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                              input="\n".join(names).encode(), cwd=rootfs,
                              capture_output=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise LabError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
        with gzip.open(out, "wb", compresslevel=6) as fh:
            fh.write(proc.stdout)
