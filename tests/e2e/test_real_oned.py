"""One cloud, in order, as an operator and a user drive it through OpenNebula's CLI: a host on
our IM, Ceph datastores on our DS/TM, images of every kind, an OVS network, a VM with every kind
of disk and a NIC through its life; afterwards nothing of ours is left in Ceph, OVS or libvirt.
Each step asserts what oned itself shows (states, SOURCE, error messages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.e2e.opennebula import ONE_DRIVERS, OneError, OpenNebula
from tests.helpers import rbd_names, trash_names

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

HOST_ON = "2"  # HOST STATE MONITORED
IMAGE_READY, IMAGE_ERROR = "1", "5"
VM_ACTIVE, LCM_RUNNING = "3", "3"
STATE: dict[str, int] = {}  # ids of what earlier steps made


def text(one: OpenNebula, kind: str, oid: int, path: str) -> str:
    return one.xml(kind, "show", str(oid)).findtext(path) or ""


def test_hosts_are_monitored_by_our_im(one: OpenNebula, lab_env: dict[str, str]) -> None:
    """The lab's two hosts, by address: the VM starts on the first and migrates to the other."""
    for key, env in (("host", "ONE_LAB_SSH_HOST_ADDR"), ("host1", "ONE_LAB_SSH_HOST1_ADDR")):
        STATE[key] = int(one.run(["onehost", "create", lab_env[env], "-i", "libvirt", "-v",
                                  "libvirt"]).strip().rsplit(" ", 1)[-1])
    for hid in (STATE["host"], STATE["host1"]):
        one.wait(lambda hid=hid: text(one, "onehost", hid, "STATE") == HOST_ON,
                 f"host {hid} to be ON", 180,
                 fail=lambda hid=hid: (text(one, "onehost", hid, "TEMPLATE/ERROR") or None)
                 if text(one, "onehost", hid, "STATE") == "3" else None)
        host = one.xml("onehost", "show", str(hid))
        assert host.findtext("TEMPLATE/HYPERVISOR") == "kvm"
        assert host.findtext("TEMPLATE/EMULATOR"), "no qemu-kvm-one here: the IM names QEMU"


def test_ceph_datastores(one: OpenNebula, lab_env: dict[str, str]) -> None:
    attrs = {"POOL_NAME": lab_env["ONE_LAB_CEPH_POOL"], "CEPH_USER": lab_env["ONE_LAB_CEPH_USER"],
             "CEPH_CONF": lab_env["CEPH_CONF"], "CEPH_SECRET": lab_env["ONE_LAB_CEPH_SECRET"],
             "CEPH_KEY": lab_env["ONE_LAB_CEPH_KEYRING"], "BRIDGE_LIST": "localhost",
             "CEPH_HOST": lab_env["ONE_LAB_CEPH_MON"],
             "SAFE_DIRS": "/var/tmp/one-drivers-e2e"}
    ceph = "".join(f'{k}="{v}"\n' for k, v in attrs.items())
    STATE["images"] = one.create("onedatastore", f'NAME="rbd-images"\nDS_MAD="rbd"\n'
                                                  f'TM_MAD="rbd"\nDISK_TYPE="RBD"\n{ceph}')
    # the system datastore's TM actions (volatile disks, the VM directory) run on the VM's host
    # over ssh, the image datastore's (clones, snapshots) on the front-end: both modes
    STATE["system"] = one.create("onedatastore", f'NAME="rbd-system"\nTYPE="SYSTEM_DS"\n'
                                                  f'TM_MAD="rbd"\nDISK_TYPE="RBD"\n{ceph}'
                                                  'TM_CEPH_ACCESS="host"\n')
    for ds in (STATE["images"], STATE["system"]):
        one.wait(lambda ds=ds: int(text(one, "onedatastore", ds, "TOTAL_MB") or 0) > 0,
                 f"datastore {ds} to be monitored", 180)


def test_doctor_on_the_front_end(one: OpenNebula, lab_env: dict[str, str]) -> None:
    """Every datastore on our drivers reaches Ceph as its own user; a datastore whose user does
    not exist is named, with the fix (the positive control)."""
    ok = one.run(["one-drivers", "doctor", "--role", "frontend"])
    assert "all good (remotes, registration, oned, ipam)" in ok, ok
    bad = one.create("onedatastore", f'NAME="bad-user"\nDS_MAD="rbd"\nTM_MAD="rbd"\n'
                                     f'DISK_TYPE="RBD"\nCEPH_USER="nobody"\n'
                                     f'CEPH_CONF="{lab_env["CEPH_CONF"]}"\nCEPH_SECRET="x"\n')
    try:
        with pytest.raises(OneError) as failed:
            one.run(["one-drivers", "doctor", "--role", "frontend", "--timeout", "5"])
        assert f"datastore {bad} (bad-user): Ceph pool one as client.nobody" in str(failed.value)
    finally:
        one.run(["onedatastore", "delete", str(bad)])


def _image(one: OpenNebula, template: str) -> int:
    iid = one.create("oneimage", template, "-d", str(STATE["images"]))
    _wait_image_ready(one, iid)
    return iid


def _wait_image_ready(one: OpenNebula, iid: int) -> None:
    one.wait(lambda: text(one, "oneimage", iid, "STATE") == IMAGE_READY,
             f"image {iid} to be READY", 300,
             fail=lambda: text(one, "oneimage", iid, "TEMPLATE/ERROR") or None
             if text(one, "oneimage", iid, "STATE") == IMAGE_ERROR else None)


def test_images_cp_and_mkfs(one: OpenNebula, lab_env: dict[str, str], ceph_admin) -> None:
    from one_drivers.lab.lab import Lab

    raw = Path("/var/tmp/one-drivers-e2e/guest.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(Lab().guest.build_disk()),
                    str(raw)], check=True, timeout=300)
    STATE["os"] = _image(one, f'NAME="guest"\nPATH="{raw}"\nTYPE="OS"\n')
    STATE["data"] = _image(one, 'NAME="data"\nTYPE="DATABLOCK"\nSIZE="16"\nFS="ext4"\n'
                                'PERSISTENT="YES"\n')
    _, ioctx = ceph_admin
    for key in ("os", "data"):
        source = text(one, "oneimage", STATE[key], "SOURCE")
        assert " " not in source, f"SOURCE is the image only, not {source!r}"
        assert source.split("/", 1)[1] in rbd_names(ioctx)


APP_READY, APP_ERROR = "1", "3"


def test_marketplace_app_from_an_image_and_back(one: OpenNebula, lab_env: dict[str, str],
                                                ceph_admin) -> None:
    """onemarketapp create from the OS image into an rbd market (oned runs our DS export, then
    our market import), the market monitored, onemarketapp export into the image datastore
    (oned runs our DS cp with the app's SOURCE): the exported image is a clone of the app; the
    image and the app deleted, nothing left in the market pool."""
    import rbd

    cluster, ioctx = ceph_admin
    attrs = {"POOL_NAME": lab_env["ONE_LAB_CEPH_MARKET_POOL"],
             "CEPH_USER": lab_env["ONE_LAB_CEPH_USER"], "CEPH_CONF": lab_env["CEPH_CONF"],
             "CEPH_KEY": lab_env["ONE_LAB_CEPH_KEYRING"]}
    market = one.create("onemarket", 'NAME="ceph-apps"\nMARKET_MAD="rbd"\n'
                        + "".join(f'{k}="{v}"\n' for k, v in attrs.items()))
    app = -1
    try:
        one.wait(lambda: int(text(one, "onemarket", market, "TOTAL_MB") or 0) > 0,
                 "the market to be monitored", 180)
        app = one.create("onemarketapp", f'NAME="e2e-app"\nORIGIN_ID="{STATE["os"]}"\n'
                         'TYPE="IMAGE"\nVERSION="1.0"\nDESCRIPTION="the lab guest"\n',
                         "-m", str(market))
        one.wait(lambda: text(one, "onemarketapp", app, "STATE") == APP_READY,
                 "the app to be READY", 300,
                 fail=lambda: one.log_tail(lines=15)
                 if text(one, "onemarketapp", app, "STATE") == APP_ERROR else None)
        source = text(one, "onemarketapp", app, "SOURCE")
        assert source.startswith("rbd://") and source.endswith("@app"), source
        name = source.rsplit("/", 1)[1].split("@")[0]
        assert text(one, "onemarketapp", app, "MD5") and \
            text(one, "onemarketapp", app, "SIZE") == text(one, "oneimage", STATE["os"], "SIZE")
        out = one.run(["onemarketapp", "export", str(app), "e2e-from-app", "-d",
                       str(STATE["images"])])
        exported = int(out.split("IMAGE", 1)[1].split("ID:")[1].split()[0])
        _wait_image_ready(one, exported)
        with rbd.Image(ioctx, f"one-{exported}", read_only=True) as image:
            assert image.parent_info()[:2] == (attrs["POOL_NAME"], name), "a clone of the app"
        one.run(["oneimage", "delete", str(exported)])
        one.wait(lambda: one.cli("oneimage", "show", str(exported)) is None,
                 "the exported image to go", 120)
    finally:
        if app >= 0:
            one.cli("onemarketapp", "delete", str(app))
            one.wait(lambda: one.cli("onemarketapp", "show", str(app)) is None,
                     "the app to go", 120)
        one.run(["onemarket", "delete", str(market)])
    with cluster.open_ioctx(attrs["POOL_NAME"]) as market_pool:
        assert not [n for n in rbd_names(market_pool) | trash_names(market_pool)
                    if n.startswith("one-app-")]


VNET_READY, VNET_ERROR = "1", "5"
VM_POWEROFF, VM_DONE = "8", "6"
# LCM states a VM does not leave without help (PROLOG/BOOT/EPILOG failures, UNKNOWN)
LCM_STUCK = {"14", "16", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47",
             "48", "49", "50"}


def test_ovs_network(one: OpenNebula) -> None:
    vid = one.create("onevnet", 'NAME="e2e-net"\nVN_MAD="ovsdb"\nBRIDGE="e2ebr0"\nVLAN_ID="31"\n'
                                'AR=[ TYPE="IP4", IP="10.31.0.10", SIZE="10" ]\n')
    STATE["vnet"] = vid
    one.wait(lambda: text(one, "onevnet", vid, "STATE") == VNET_READY, "the vnet to be READY",
             60, fail=lambda: f"ERROR: {text(one, 'onevnet', vid, 'TEMPLATE/ERROR')}"
             if text(one, "onevnet", vid, "STATE") == VNET_ERROR else None)


def test_kea_ipam_leases_what_oned_gives_its_nics(one: OpenNebula, lab_env: dict[str, str]
                                                  ) -> None:
    """oned's IPAM MAD runs our kea driver: the AR oned keeps is our answer, each NIC's address
    and MAC (oned's own choice and one asked for) are leased in Kea and named in PowerDNS,
    `ipam reconcile` reads oned's leases as oned writes them, and everything goes with the VMs
    and the vnet."""
    from one_drivers.lab.lab import Lab
    ddi = Lab().ddi

    def leases(subnet: int) -> dict[str, str]:
        found = ddi.kea("lease4-get-all", {"subnets": [subnet]}).get("arguments") or {}
        return {lease["ip-address"]: lease["hw-address"] for lease in found.get("leases", [])}

    vid = one.create("onevnet", 'NAME="e2e-kea"\nVN_MAD="ovsdb"\nBRIDGE="e2ebr1"\n'
                     'AR=[ TYPE="IP4", IPAM_MAD="kea", NETWORK_ADDRESS="10.93.0.0", '
                     'NETWORK_MASK="255.255.255.0", GATEWAY="10.93.0.1", DNS_ZONE="lab.one" ]\n')
    one.wait(lambda: text(one, "onevnet", vid, "STATE") == VNET_READY, "the kea vnet to be READY",
             60, fail=lambda: f"ERROR: {text(one, 'onevnet', vid, 'TEMPLATE/ERROR')}"
             if text(one, "onevnet", vid, "STATE") == VNET_ERROR else None)
    ar = one.xml("onevnet", "show", str(vid)).find("AR_POOL/AR")
    assert ar is not None
    # the range the IPAM chose for the partial AR, and our key, as oned keeps them
    assert (ar.findtext("IP"), ar.findtext("SIZE")) == ("10.93.0.2", "253")
    subnet = int(ar.findtext("KEA_SUBNET_ID") or -1)
    base = 'CPU="0.1"\nMEMORY="64"\n'
    auto = one.create("onevm", base + f'NAME="e2e-kea-a"\nNIC=[ NETWORK_ID="{vid}" ]\n',
                      "--hold")
    chosen = one.create("onevm", base + f'NAME="e2e-kea-b"\nNIC=[ NETWORK_ID="{vid}", '
                        'IP="10.93.0.50" ]\n', "--hold")
    nics = {}
    for vm in (auto, chosen):
        nic = one.xml("onevm", "show", str(vm)).find("TEMPLATE/NIC")
        assert nic is not None
        nics[nic.findtext("IP") or ""] = nic.findtext("MAC") or ""
    assert set(nics) == {"10.93.0.2", "10.93.0.50"}
    assert leases(subnet) == nics, "Kea leases each NIC's address to its MAC"
    dig = ["dig", "+short", "@127.0.0.1", "-p", lab_env["ONE_LAB_DNS_PORT"]]
    named = subprocess.run([*dig, "one-10-93-0-50.lab.one", "A"], capture_output=True,
                           text=True, timeout=20, check=True).stdout.split()
    assert named == ["10.93.0.50"]
    remotes = str(one.location / "var" / "remotes")
    report = one.run([ONE_DRIVERS, "ipam", "reconcile", "--remotes", remotes])
    assert "oned, Kea and PowerDNS agree" in report, report
    for vm in (auto, chosen):
        one.run(["onevm", "recover", "--delete", str(vm)])
    one.wait(lambda: leases(subnet) == {}, "oned to free both addresses in Kea", 60)
    one.run(["onevnet", "delete", str(vid)])
    one.wait(lambda: one.cli("onevnet", "show", str(vid)) is None, "the kea vnet to go", 60)
    config = ddi.kea("config-get")["arguments"]["Dhcp4"]
    assert all(s["id"] != subnet for s in config["subnet4"]), "the Kea subnet went with it"


def _vm_failed(one: OpenNebula, vm: int) -> str | None:
    shown = one.xml("onevm", "show", str(vm))
    if shown.findtext("STATE") == VM_ACTIVE and shown.findtext("LCM_STATE") in LCM_STUCK:
        return (f"LCM_STATE {shown.findtext('LCM_STATE')}: "
                f"{shown.findtext('USER_TEMPLATE/ERROR') or one.log_tail(f'vms/{vm}/vm.log', 15)}")
    return None


def _running(one: OpenNebula, vm: int) -> bool:
    shown = one.xml("onevm", "show", str(vm))
    return (shown.findtext("STATE"), shown.findtext("LCM_STATE")) == (VM_ACTIVE, LCM_RUNNING)


def test_vm_life_cycle(one: OpenNebula, lab_env: dict[str, str]) -> None:
    oned_log = one.location / "var" / "oned.log"
    seen = oned_log.stat().st_size if oned_log.exists() else 0
    vm = one.create("onevm", f'''NAME="e2e-vm"
CPU="0.5"
VCPU="1"
MEMORY="192"
OS=[ KERNEL="{lab_env['ONE_LAB_GUEST_KERNEL']}", INITRD="{lab_env['ONE_LAB_GUEST_INITRD']}",
     KERNEL_CMD="console=ttyS0 panic=-1 quiet" ]
DISK=[ IMAGE_ID="{STATE['os']}" ]
DISK=[ IMAGE_ID="{STATE['data']}" ]
DISK=[ TYPE="fs", SIZE="16", FORMAT="raw" ]
NIC=[ NETWORK_ID="{STATE['vnet']}" ]
CONTEXT=[ NETWORK="YES" ]
SCHED_REQUIREMENTS="ID={STATE['host']}"
SCHED_DS_REQUIREMENTS="ID={STATE['system']}"
''')
    STATE["vm"] = vm
    one.wait(lambda: _running(one, vm), f"VM {vm} to run", 300,
             fail=lambda: _vm_failed(one, vm))
    with oned_log.open("rb") as log:  # oned logs the TM's INFO lines there, with [TrM][I]
        log.seek(seen)
        prolog = log.read().decode(errors="replace")
    host = lab_env["ONE_LAB_SSH_HOST_ADDR"]
    assert f"running mkimage on {host} (CEPH_ACCESS=host)" in prolog, prolog
    assert "running clone on" not in prolog  # the image datastore's: on the front-end


def _state(one: OpenNebula, vm: int) -> tuple[str, str]:
    shown = one.xml("onevm", "show", str(vm))
    return shown.findtext("STATE") or "", shown.findtext("LCM_STATE") or ""


def test_live_disk_snapshot(one: OpenNebula, ceph_admin) -> None:
    import rbd

    vm = STATE["vm"]
    one.run(["onevm", "disk-snapshot-create", str(vm), "0", "e2e-snap"])
    one.wait(lambda: _running(one, vm) and one.xml("onevm", "show", str(vm)).find(
        "SNAPSHOTS[DISK_ID='0']/SNAPSHOT") is not None, "the live disk snapshot", 120,
        fail=lambda: _vm_failed(one, vm))
    _, ioctx = ceph_admin
    with rbd.Image(ioctx, f"one-{STATE['os']}-{vm}-0", read_only=True) as image:
        assert "0" in {s["name"] for s in image.list_snaps()}


def _backup_image(one: OpenNebula, vm: int) -> ET.Element | None:
    ids = [e.text for e in one.xml("onevm", "show", str(vm)).iterfind("BACKUPS/BACKUP_IDS/ID")]
    return one.xml("oneimage", "show", str(ids[-1])) if ids and ids[-1] else None


def test_live_backups_full_then_incremental(one: OpenNebula, lab_env: dict[str, str],
                                            ceph_admin) -> None:
    """onevm backup of the running VM (INCREMENT mode) into an rbdbackup datastore, twice:
    oned keeps one BACKUP image whose increments are our snapshots 0 and 1, and deleting it
    removes the chain from Ceph."""
    import rbd

    attrs = {"POOL_NAME": lab_env["ONE_LAB_CEPH_POOL"], "CEPH_USER": lab_env["ONE_LAB_CEPH_USER"],
             "CEPH_CONF": lab_env["CEPH_CONF"], "CEPH_KEY": lab_env["ONE_LAB_CEPH_KEYRING"]}
    ds = one.create("onedatastore", 'NAME="e2e-backups"\nTYPE="BACKUP_DS"\nDS_MAD="rbdbackup"\n'
                    'TM_MAD="-"\n' + "".join(f'{k}="{v}"\n' for k, v in attrs.items()))
    one.wait(lambda: int(text(one, "onedatastore", ds, "TOTAL_MB") or 0) > 0,
             "the backup datastore to be monitored", 180)
    vm = STATE["vm"]
    _, ioctx = ceph_admin
    # oned refuses INCREMENT mode to a VM with disk snapshots (and disk snapshots to a VM in it)
    one.run(["onevm", "disk-snapshot-delete", str(vm), "0", "0"])
    one.wait(lambda: _running(one, vm) and one.xml("onevm", "show", str(vm)).find(
        "SNAPSHOTS[DISK_ID='0']/SNAPSHOT") is None, "the disk snapshot to go", 120,
        fail=lambda: _vm_failed(one, vm))
    one.run(["onevm", "backupmode", str(vm), "INCREMENT"])
    try:
        for n in (0, 1):
            one.run(["onevm", "backup", str(vm), "-d", str(ds)])

            def done(n: int = n) -> bool:
                image = _backup_image(one, vm)
                return (_running(one, vm) and image is not None
                        and image.findtext("STATE") == IMAGE_READY
                        and len(image.findall("BACKUP_INCREMENTS/INCREMENT")) == n + 1)

            one.wait(done, f"backup {n}", 300, fail=lambda: _vm_failed(one, vm)
                     or one.xml("onevm", "show", str(vm)).findtext("USER_TEMPLATE/ERROR"))
        image = _backup_image(one, vm)
        assert image is not None
        sources = [i.findtext("SOURCE") or "" for i in
                   image.iterfind("BACKUP_INCREMENTS/INCREMENT")]
        assert [s.rsplit("@", 1)[1] for s in sources] == ["0", "1"], sources
        base = sources[0].split("/", 1)[1].split("@")[0]
        for disk in (0, 1):  # the OS clone and the persistent data disk; volatile excluded
            with rbd.Image(ioctx, f"{base}-{disk}", read_only=True) as chain:
                assert {s["name"] for s in chain.list_snaps()} == {"0", "1"}
        with rbd.Image(ioctx, f"one-{STATE['os']}-{vm}-0", read_only=True) as disk0:
            kept = {s["name"] for s in disk0.list_snaps() if s["name"].startswith("one_backup")}
        assert kept == {"one_backup_1"}, "only the next increment's base"
        # onevm restore in place, from the first increment, of the powered-off VM
        from tests.helpers import read_image

        one.run(["onevm", "poweroff", str(vm)])
        one.wait(lambda: _state(one, vm)[0] == VM_POWEROFF, "POWEROFF", 120,
                 fail=lambda: _vm_failed(one, vm))
        one.run(["onevm", "restore", str(vm), str(image.findtext("ID")), "--increment", "0"])
        one.wait(lambda: _state(one, vm) == (VM_POWEROFF, "0") and read_image(
            ioctx, f"one-{STATE['os']}-{vm}-0") == read_image(ioctx, f"{base}-0", "0"),
                 "the in-place restore", 180, fail=lambda: _vm_failed(one, vm) or one.xml(
                     "onevm", "show", str(vm)).findtext("USER_TEMPLATE/ERROR"))
        one.run(["onevm", "resume", str(vm)])
        one.wait(lambda: _running(one, vm), "RUNNING from the restored disks", 180,
                 fail=lambda: _vm_failed(one, vm))
        # oneimage restore: new images in the image datastore and a VM template
        out = one.run(["oneimage", "restore", str(image.findtext("ID")), "-d",
                       str(STATE["images"]), "--increment", "1", "--no_ip"])
        template = one.xml("onetemplate", "list")
        made = [t for t in template.iterfind("VMTEMPLATE")
                if (t.findtext("NAME") or "").endswith(f"-{image.findtext('ID')}-1")]
        assert made, out
        tid = int(made[-1].findtext("ID") or -1)
        disk_images = [int(d.findtext("IMAGE_ID") or -1)
                       for d in made[-1].iterfind("TEMPLATE/DISK") if d.findtext("IMAGE_ID")]
        assert len(disk_images) == 2, out
        for iid in disk_images:
            _wait_image_ready(one, iid)
        restored = text(one, "oneimage", disk_images[0], "SOURCE").split("/", 1)[1]
        assert read_image(ioctx, restored) == read_image(ioctx, f"{base}-0", "1")
        one.run(["onetemplate", "delete", str(tid)])
        for iid in disk_images:
            one.run(["oneimage", "delete", str(iid)])
            one.wait(lambda iid=iid: one.cli("oneimage", "show", str(iid)) is None,
                     f"restored image {iid} to go", 120)
        one.run(["oneimage", "delete", str(image.findtext("ID"))])
        one.wait(lambda: not {n for n in rbd_names(ioctx) if n.startswith(base)},
                 "the backup chain to go from Ceph", 120)
    finally:
        one.cli("onedatastore", "delete", str(ds))


def _backup_into(one: OpenNebula, vm: int, ds: int, what: str) -> str:
    """``onevm backup`` of the VM into datastore ``ds`` (monitored first, as oned needs): the
    id of the new, READY backup image."""
    one.wait(lambda: int(text(one, "onedatastore", ds, "TOTAL_MB") or 0) > 0,
             f"the {what} datastore to be monitored (by upstream's monitor)", 180)

    def ids() -> set[str | None]:
        return {e.text for e in one.xml("onevm", "show", str(vm)).iterfind(
            "BACKUPS/BACKUP_IDS/ID")}

    before = ids()
    one.run(["onevm", "backup", str(vm), "-d", str(ds)])

    def made() -> str | None:
        new = ids() - before
        if not new or not _running(one, vm):
            return None
        image = one.xml("oneimage", "show", str(new.pop()))
        return image.findtext("ID") if image.findtext("STATE") == IMAGE_READY else None

    one.wait(made, f"the {what} backup", 300, fail=lambda: _vm_failed(one, vm)
             or one.xml("onevm", "show", str(vm)).findtext("USER_TEMPLATE/ERROR"))
    iid = made()
    assert iid is not None
    return iid


def test_backup_into_upstreams_rsync_datastore(one: OpenNebula, lab_env: dict[str, str]) -> None:
    """A backup datastore of upstream's own rsync driver (its scripts, unchanged) with our TM:
    prebackup leaves on the VM's host what rsync's backup copies to the backup server (here
    the lab's other address), postbackup removes it; the backup server holds one qcow2 file
    per disk that QEMU reads whole, and the VM document; deleting the backup image removes
    them."""
    vm = STATE["vm"]
    server = lab_env["ONE_LAB_SSH_HOST1_ADDR"]
    ds = one.create("onedatastore", 'NAME="e2e-rsync"\nTYPE="BACKUP_DS"\nDS_MAD="rsync"\n'
                    f'TM_MAD="-"\nRSYNC_HOST="{server}"\nRSYNC_USER="root"\n')
    base = Path(text(one, "onedatastore", ds, "BASE_PATH"))
    try:
        one.run(["onevm", "backupmode", str(vm), "FULL"])
        iid = _backup_into(one, vm, ds, "rsync")
        source = text(one, "oneimage", int(iid), "SOURCE")
        where = base / str(vm) / source
        assert sorted(p.name for p in where.iterdir()) == ["disk.0.0", "disk.1.0", "vm.xml"]
        for disk in ("disk.0.0", "disk.1.0"):
            info = subprocess.run(["qemu-img", "check", "--output=json", str(where / disk)],
                                  capture_output=True, text=True, timeout=120, check=False)
            assert info.returncode == 0 and '"check-errors": 0' in info.stdout, info.stdout
        import base64

        saved = base64.b64decode((where / "vm.xml").read_bytes()).decode()
        assert f"<ID>{vm}</ID>" in saved
        for datastores in (lab_env["ONE_LAB_HOST_DATASTORES"], "/var/lib/one/datastores"):
            assert not (Path(datastores) / str(STATE["system"]) / str(vm) / "backup").exists()
        one.run(["oneimage", "delete", iid])
        one.wait(lambda: not where.exists(), "upstream's rm to remove the files", 120)
    finally:
        one.cli("onedatastore", "delete", str(ds))


def test_backup_into_upstreams_restic_datastore(one: OpenNebula,
                                                lab_env: dict[str, str]) -> None:
    """The same with upstream's restic driver (its scripts unchanged, Debian's restic as the
    binary it ships): restic on the VM's host stores what our prebackup left there in a
    repository on the backup server (sftp); the snapshot holds one qcow2 file per disk that QEMU
    reads whole, and the VM document."""
    vm = STATE["vm"]
    server = lab_env["ONE_LAB_SSH_HOST1_ADDR"]
    password = os.urandom(12).hex()
    ds = one.create("onedatastore", 'NAME="e2e-restic"\nTYPE="BACKUP_DS"\nDS_MAD="restic"\n'
                    f'TM_MAD="-"\nRESTIC_SFTP_SERVER="{server}"\nRESTIC_SFTP_USER="root"\n'
                    f'RESTIC_PASSWORD="{password}"\n')
    base = Path(text(one, "onedatastore", ds, "BASE_PATH"))
    repo = str(base / str(vm))  # restic's repository of this VM, on the backup server
    shutil.rmtree(repo, ignore_errors=True)  # an earlier cloud's (ids start again each run)
    try:
        iid = _backup_into(one, vm, ds, "restic")
        snapshot = text(one, "oneimage", int(iid), "SOURCE")
        env = {**os.environ, "RESTIC_PASSWORD": password}
        listed = subprocess.run(["restic", "-r", repo, "ls", snapshot], capture_output=True,
                                text=True, timeout=120, check=True,
                                env=env).stdout.splitlines()[1:]  # after "snapshot <id> of"
        names = sorted(Path(p).name for p in listed if "/backup/" in p and "." in Path(p).name)
        assert names == ["disk.0.0", "disk.1.0", "vm.xml"], listed
        for disk in ("disk.0.0", "disk.1.0"):
            path = next(p for p in listed if p.endswith(f"/{disk}"))
            out = base / f"{disk}.check"
            with open(out, "wb") as fh:
                subprocess.run(["restic", "-r", repo, "dump", snapshot, path], stdout=fh,
                               timeout=300, check=True, env=env)
            info = subprocess.run(["qemu-img", "check", "--output=json", str(out)],
                                  capture_output=True, text=True, timeout=120, check=False)
            out.unlink()
            assert info.returncode == 0 and '"check-errors": 0' in info.stdout, info.stdout
        for datastores in (lab_env["ONE_LAB_HOST_DATASTORES"], "/var/lib/one/datastores"):
            assert not (Path(datastores) / str(STATE["system"]) / str(vm) / "backup").exists()
        one.run(["oneimage", "delete", iid])
        one.wait(lambda: one.cli("oneimage", "show", iid) is None, "the restic backup to go",
                 120)
    finally:
        one.cli("onedatastore", "delete", str(ds))
        shutil.rmtree(repo, ignore_errors=True)


def test_poweroff_and_resume(one: OpenNebula) -> None:
    vm = STATE["vm"]
    one.run(["onevm", "poweroff", str(vm)])
    one.wait(lambda: _state(one, vm)[0] == VM_POWEROFF, "POWEROFF", 120,
             fail=lambda: _vm_failed(one, vm))
    one.run(["onevm", "resume", str(vm)])
    one.wait(lambda: _running(one, vm), "RUNNING again", 180, fail=lambda: _vm_failed(one, vm))


def _host_id(one: OpenNebula, vm: int) -> int:
    return int(one.xml("onevm", "show", str(vm)).findall("HISTORY_RECORDS/HISTORY")[-1]
               .findtext("HID") or -1)


def _where(lab_env: dict[str, str], vm: int) -> dict[str, set[str]]:
    """What each lab host has of the VM: a running domain, its NIC's port, its VM directory."""
    import libvirt

    out: dict[str, set[str]] = {}
    for host, uri, ovsdb, datastores in (
            ("host", lab_env["ONE_LAB_HOST_LIBVIRT_URI"], lab_env["ONE_LAB_HOST_OVSDB"],
             lab_env["ONE_LAB_HOST_DATASTORES"]),
            ("host1", lab_env["LIBVIRT_DEFAULT_URI"], lab_env["ONE_DRIVERS_OVSDB"],
             "/var/lib/one/datastores")):
        has = set()
        conn = libvirt.open(uri)
        try:
            if any(d.name() == f"one-{vm}" and d.isActive() for d in conn.listAllDomains()):
                has.add("domain")
        finally:
            conn.close()
        if subprocess.run(["ovs-vsctl", f"--db={ovsdb}", "--bare", "--columns=name", "find",
                           "Port", f"name=one-{vm}-0"], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip():
            has.add("port")
        if (Path(datastores) / str(STATE["system"]) / str(vm)).exists():
            has.add("vm dir")
        out[host] = has
    return out


def _error(one: OpenNebula, vm: int) -> str:
    return one.xml("onevm", "show", str(vm)).findtext("USER_TEMPLATE/ERROR") or ""


def _new_error(one: OpenNebula, vm: int, before: str) -> str | None:
    """A failed action that left the VM as it was (a live migration falls back to RUNNING on
    the source) shows only as a new ERROR: the wait ends there, naming it."""
    now = _error(one, vm)
    return now if now != before else None


def test_migrations_live_there_and_cold_back(one: OpenNebula, lab_env: dict[str, str]) -> None:
    """onevm migrate --live to the other host (our VMM migrate over libvirt, our TM
    premigrate/postmigrate moving the VM directory, our VNM pre/post/clean on each side), then
    a cold migration back (save, TM mv, restore): each time the domain, its port and its VM
    directory are on the new host and gone from the old one."""
    vm = STATE["vm"]
    everything = {"domain", "port", "vm dir"}
    assert _where(lab_env, vm) == {"host": everything, "host1": set()}, "positive control"
    started = time.monotonic()
    before = _error(one, vm)
    one.run(["onevm", "migrate", "--live", str(vm), str(STATE["host1"])])
    one.wait(lambda: _running(one, vm) and _host_id(one, vm) == STATE["host1"],
             "the live migration", 300,
             fail=lambda: _vm_failed(one, vm) or _new_error(one, vm, before))
    print(f"\nlive migration took {time.monotonic() - started:.1f} s under oned")
    assert _where(lab_env, vm) == {"host": set(), "host1": everything}
    started = time.monotonic()
    before = _error(one, vm)
    one.run(["onevm", "migrate", str(vm), str(STATE["host"])])
    one.wait(lambda: _running(one, vm) and _host_id(one, vm) == STATE["host"],
             "the cold migration back", 300,
             fail=lambda: _vm_failed(one, vm) or _new_error(one, vm, before))
    print(f"cold migration took {time.monotonic() - started:.1f} s under oned")
    assert _where(lab_env, vm) == {"host": everything, "host1": set()}


def test_terminate_leaves_nothing(one: OpenNebula, lab_env: dict[str, str], ceph_admin) -> None:
    import libvirt

    vm = STATE["vm"]
    started = time.monotonic()
    one.run(["onevm", "terminate", str(vm)])
    one.wait(lambda: _state(one, vm)[0] == VM_DONE, "the VM to be DONE", 300,
             fail=lambda: _vm_failed(one, vm))
    print(f"\nterminate of a running VM took {time.monotonic() - started:.1f} s under oned")
    assert _where(lab_env, vm) == {"host": set(), "host1": set()}
    _, ioctx = ceph_admin
    left = {n for n in rbd_names(ioctx) | trash_names(ioctx)
            if n.endswith((f"-{vm}-0", f"-{vm}-1", f"-{vm}-2")) or n.startswith(f"one-sys-{vm}-")}
    assert left == set(), left
    ports = subprocess.run(["ovs-vsctl", f"--db={lab_env['ONE_LAB_HOST_OVSDB']}", "list-ports",
                            "e2ebr0"], capture_output=True, text=True, timeout=30, check=False)
    assert f"one-{vm}-0" not in ports.stdout.split()
    conn = libvirt.open(lab_env["ONE_LAB_HOST_LIBVIRT_URI"])
    try:
        assert f"one-{vm}" not in {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


def test_images_and_network_are_removed(one: OpenNebula, ceph_admin) -> None:
    _, ioctx = ceph_admin
    for key in ("os", "data"):
        iid = STATE[key]
        one.run(["oneimage", "delete", str(iid)])
        one.wait(lambda iid=iid: one.cli("oneimage", "show", str(iid)) is None,
                 f"image {iid} to go", 120)
        assert f"one-{iid}" not in rbd_names(ioctx) | trash_names(ioctx)
    one.run(["onevnet", "delete", str(STATE["vnet"])])
    one.wait(lambda: one.cli("onevnet", "show", str(STATE["vnet"])) is None, "the vnet to go", 60)
    assert text(one, "onehost", STATE["host"], "STATE") == HOST_ON


def test_deleting_the_hosts_stops_their_monitoring_clients(one: OpenNebula) -> None:
    """onehost delete: oned's STOP_MONITOR runs our stop_monitord_client, which ends the
    client (its pid file goes, then the process)."""
    for hid in (STATE["host"], STATE["host1"]):
        pidfile = one.work / "im" / f"host-{hid}.pid"
        pid = int(pidfile.read_text().split()[0])
        assert Path(f"/proc/{pid}").exists(), "positive control: the client runs"
        one.run(["onehost", "delete", str(hid)])
        one.wait(lambda pid=pid: not Path(f"/proc/{pid}").exists(),
                 "the monitoring client to end", 60)
