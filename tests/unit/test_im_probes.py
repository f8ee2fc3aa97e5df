"""IM pure logic: the state mapping, STATE_VM change detection, MONITOR_VM figures, the wire."""

from __future__ import annotations

import base64

import pytest

from one_drivers.im.libvirt import probes
from one_drivers.im.libvirt.wire import Message, pack, unpack


@pytest.mark.parametrize(("state", "reason", "expected"), [
    (1, 0, "RUNNING"), (2, 0, "RUNNING"), (4, 0, "RUNNING"), (5, 0, "POWEROFF"),
    (6, 0, "FAILURE"), (7, 0, "SUSPENDED"), (3, 1, "SUSPENDED"), (3, 2, "RUNNING"),
    (3, 11, "RUNNING"), (3, 0, "FAILURE"), (3, 5, "FAILURE"), (3, 6, "FAILURE"),
])
def test_libvirt_states_map_as_opennebula_expects(state, reason, expected):
    assert probes.one_state(state, reason) == expected


def dom(vm_id: int, uuid: str, state: str = "RUNNING", **stats: float) -> probes.Domain:
    return probes.Domain(vm_id, uuid, f"one-{vm_id}", state, dict(stats))


def test_state_changes_vanished_vms_and_full_syncs():
    known: dict = {}
    text, known = probes.state_vm([dom(1, "u1"), dom(2, "u2")], known, sync=False)
    assert text.count("VM = [") == 2
    text, known = probes.state_vm([dom(1, "u1"), dom(2, "u2")], known, sync=False)
    assert text == "", "nothing changed: nothing to say"
    text, known = probes.state_vm([dom(1, "u1", "FAILURE")], known, sync=False)
    assert 'DEPLOY_ID="u1", VM_NAME="one-1", STATE="FAILURE"' in text
    assert 'ID="2", DEPLOY_ID="u2", STATE="POWEROFF"' in text, "a vanished VM powered off"
    text, _ = probes.state_vm([dom(1, "u1")], known, sync=True)
    assert text.startswith("SYNC_STATE=yes\nMISSING_STATE=POWEROFF") and "u2" not in text


def test_monitor_vm_sums_devices_and_diffs_cpu():
    stats = {"cpu.time": 3e9, "balloon.rss": 1000, "net.count": 2, "net.0.rx.bytes": 5,
             "net.1.rx.bytes": 7, "net.0.tx.bytes": 1, "block.count": 1, "block.0.rd.bytes": 9,
             "block.0.wr.reqs": 4}
    text, samples = probes.monitor_vm([dom(1, "u1", **stats)], {"u1": [1e9, 100.0]}, 102.0)
    monitor = base64.b64decode(text.split('MONITOR="')[1].split('"')[0]).decode()
    assert 'CPU="100.00"' in monitor, "2 s of CPU in 2 s: one core"
    assert 'NETRX="12"' in monitor and 'NETTX="1"' in monitor and 'MEMORY="1000"' in monitor
    assert 'DISKRDBYTES="9"' in monitor and 'DISKWRIOPS="4"' in monitor
    assert samples == {"u1": [3e9, 102.0]}


def test_wire_round_trip_plain_and_encrypted():
    from cryptography.hazmat.primitives.asymmetric import rsa

    text = "VM = [ ID=\"1\" ]\n" * 200  # longer than one RSA block
    assert unpack(pack(text)) == text
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert unpack(pack(text, key.public_key()), key) == text
    line = Message("BEACON_HOST", False, 3, "TIMESTAMP=1", timestamp=99).line()
    kind, result, host, ts, payload = line.split(" ")
    assert (kind, result, host, ts, unpack(payload)) == ("BEACON_HOST", "FAILURE", "3", "99",
                                                         "TIMESTAMP=1")


TWO_SOCKETS = """<capabilities><host><topology><cells num='2'>
<cell id='0'><memory unit='KiB'>1000</memory>
 <pages unit='KiB' size='4'>250</pages><pages unit='KiB' size='2048'>8</pages>
 <distances><sibling id='0' value='10'/><sibling id='1' value='21'/></distances>
 <cpus num='4'><cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0,2'/>
  <cpu id='2' socket_id='0' die_id='0' core_id='0' siblings='0,2'/>
  <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1,3'/>
  <cpu id='3' socket_id='0' die_id='0' core_id='1' siblings='1,3'/></cpus></cell>
<cell id='1'><memory unit='KiB'>2000</memory>
 <pages unit='KiB' size='4'>500</pages><pages unit='KiB' size='2048'>0</pages>
 <distances><sibling id='0' value='21'/><sibling id='1' value='10'/></distances>
 <cpus num='2'><cpu id='4' socket_id='1' die_id='0' core_id='0' siblings='4'/>
  <cpu id='5' socket_id='2' die_id='0' core_id='0' siblings='5'/></cpus></cell>
</cells></topology></host></capabilities>"""


def test_numa_topology_in_opennebulas_keys():
    import xml.etree.ElementTree as ET

    lines = probes.numa_topology(ET.fromstring(TWO_SOCKETS))
    assert lines == [
        'CORE=[ NODE_ID="0", ID="0", CPUS="0,2" ]', 'CORE=[ NODE_ID="0", ID="1", CPUS="1,3" ]',
        'MEMORY_NODE=[ NODE_ID="0", TOTAL="1000", DISTANCE="0 1" ]',
        'HUGEPAGE=[ NODE_ID="0", SIZE="2048", PAGES="8" ]',  # the base 4 KiB pages are not huge
        # two sockets in one node share core_id 0: each core is named by its first CPU
        'CORE=[ NODE_ID="1", ID="4", CPUS="4" ]', 'CORE=[ NODE_ID="1", ID="5", CPUS="5" ]',
        'MEMORY_NODE=[ NODE_ID="1", TOTAL="2000", DISTANCE="1 0" ]',
        'HUGEPAGE=[ NODE_ID="1", SIZE="2048", PAGES="0" ]',
    ]


def test_numa_usage_per_node():
    import xml.etree.ElementTree as ET

    class Node:  # the two node calls of a libvirt connection, with figures we choose
        def getCellsFreeMemory(self, start: int, count: int) -> list[int]:
            return [[400 * 1024, 1500 * 1024][start]]

        def getFreePages(self, sizes: list[int], start: int, count: int) -> dict:
            return {start: {size: 3 + start for size in sizes}}

    assert probes.numa_usage(Node(), ET.fromstring(TWO_SOCKETS)) == [
        'MEMORY_NODE=[ NODE_ID="0", FREE="400", USED="600" ]',
        'HUGEPAGE=[ NODE_ID="0", SIZE="2048", FREE="3" ]',
        'MEMORY_NODE=[ NODE_ID="1", FREE="1500", USED="500" ]',
        'HUGEPAGE=[ NODE_ID="1", SIZE="2048", FREE="4" ]',
    ]


def test_local_datastores_only_those_a_tm_marked(tmp_path):
    for ds in ("0", "100", "not-a-ds"):
        (tmp_path / ds).mkdir()
    (tmp_path / "0" / ".monitor").write_text("ssh\n")
    (tmp_path / "not-a-ds" / ".monitor").write_text("ssh\n")
    lines = probes.local_datastores(str(tmp_path))
    assert [line.split("=")[0] for line in lines[:3]] == [
        "DS_LOCATION_USED_MB", "DS_LOCATION_TOTAL_MB", "DS_LOCATION_FREE_MB"]
    assert len(lines) == 4 and lines[3].startswith("DS=[ ID=0, USED_MB=")
    total = int(lines[1].split("=")[1])
    assert total > 0 and f"TOTAL_MB={total}," in lines[3]
    assert probes.local_datastores(str(tmp_path / "missing")) == []


def test_cgroups_version_from_the_hierarchy(tmp_path):
    assert probes.cgroups_version(str(tmp_path)) == 1
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert probes.cgroups_version(str(tmp_path)) == 2


def test_disk_sizes_of_vms_on_local_system_datastores(tmp_path):
    vm_dir = tmp_path / "0" / "42"
    vm_dir.mkdir(parents=True)
    (tmp_path / "0" / ".monitor").write_text("ssh\n")
    with open(vm_dir / "disk.0", "wb") as fh:  # 10 MiB apparent, 2 MiB allocated
        fh.write(b"x" * (2 << 20))
        fh.truncate(10 << 20)
    (vm_dir / "disk.1.snap").mkdir()  # not a disk file
    (vm_dir / "deployment.0").write_text("<domain/>")
    (tmp_path / "101" / "43").mkdir(parents=True)  # not marked: not ours to measure
    (tmp_path / "101" / "43" / "disk.0").write_bytes(b"y" * (1 << 20))
    sizes = probes.local_disk_sizes(str(tmp_path))
    assert sizes == {42: {0: 2}}
    text, _ = probes.monitor_vm([dom(42, "u42"), dom(44, "u44")], {}, 1.0, sizes)
    monitors = [base64.b64decode(line.split('MONITOR="')[1].split('"')[0]).decode()
                for line in text.splitlines()]
    assert "DISK_SIZE=[ID=0, SIZE=2]" in monitors[0] and "DISK_SIZE" not in monitors[1]
    assert probes.local_disk_sizes(str(tmp_path / "missing")) == {}


def test_a_wild_vm_can_be_imported():
    wild = probes.Domain(-1, "u-wild", 'web"1', "RUNNING",
                         {"vcpu.current": 2, "balloon.maximum": 524288})
    text = base64.b64decode(probes.import_template(wild, "x86_64")).decode()
    assert text.splitlines() == ['NAME="web1"', 'CPU="2"', 'VCPU="2"', 'MEMORY="512"',
                                 'HYPERVISOR="kvm"', 'IMPORT_VM_ID="u-wild"',
                                 'OS=[ ARCH="x86_64" ]']


def test_a_wild_domain_name_cannot_inject_keys():
    evil = 'wild", ID="7", STATE="a\n] VM=[ ID="8'
    wild = probes.Domain(-1, "u9", evil, "RUNNING", {})
    text, _ = probes.state_vm([wild], {}, sync=True)
    line = text.splitlines()[-1]
    assert line.count('"') == 8, "four values, each opened and closed once"
    assert 'ID="7"' not in text and "\n]" not in text
    assert probes.quoted(evil).startswith('"wild_, ID=_7_')
