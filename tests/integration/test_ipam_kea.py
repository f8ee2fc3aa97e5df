"""The ``kea`` IPAM driver against the lab's real Kea (kea-dhcp4 + kea-ctrl-agent, lease_cmds) and
PowerDNS, run as oned's IPAM MAD runs it: ``<action> <request id>``, the base64 document on stdin.
What it made is checked in Kea (its API and the file config-write wrote), in DNS (dig against
pdns_server) and, for DHCP itself, by clients on the lab's DHCP segment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests import ipam
from tests.helpers import last_line
from tests.integration import test_vmm_libvirt as vmm

pytestmark = pytest.mark.lab
vm, guest_raw, vmm_remotes = vmm.vm, vmm.guest_raw, vmm.vmm_remotes


class Ipam:
    """The driver's remotes, a Kea view for checks, and cleanup of what a test registered."""

    def __init__(self, env: dict[str, str], remotes) -> None:
        from one_drivers.lab.lab import Lab

        self.env, self.remotes, self.ddi = env, remotes, Lab().ddi
        self.subnets: set[int] = set()

    def run(self, action: str, ar: dict, address: dict | None = None, remotes=None):
        proc = ipam.run(remotes or self.remotes, action, ar, address)
        out, err = ipam.text(proc)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def register(self, **attrs) -> dict:
        ar = {"TYPE": "IP4", "IPAM_MAD": "kea", "AR_ID": "0", **attrs}
        res = self.run("register_address_range", ar)
        assert res.returncode == 0, res.stderr
        answer = ipam.answer(res.stdout, "AR")
        self.subnets.add(int(answer["KEA_SUBNET_ID"]))
        return {**ar, **answer}

    def config(self) -> dict:
        return self.ddi.kea("config-get")["arguments"]["Dhcp4"]

    def subnet(self, subnet_id: int) -> dict | None:
        return next((s for s in self.config()["subnet4"] if s["id"] == subnet_id), None)

    def leases(self, subnet_id: int) -> dict[str, str]:
        """ip -> MAC of the subnet's leases."""
        answer = self.ddi.kea("lease4-get-all", {"subnets": [subnet_id]})
        return {lease["ip-address"]: lease["hw-address"]
                for lease in (answer.get("arguments") or {}).get("leases", [])}

    def dig(self, name: str, kind: str = "A") -> list[str]:
        argv = ["dig", "+short", "+time=2", "+tries=2", "@127.0.0.1", "-p",
                self.env["ONE_LAB_DNS_PORT"]]
        argv += ["-x", name] if kind == "PTR" else [name, kind]
        return subprocess.run(argv, capture_output=True, text=True, timeout=20,
                              check=True).stdout.split()

    def close(self) -> None:
        """Remove this test's subnets (and their leases): only those it registered."""
        for subnet_id in self.subnets:
            for ip in self.leases(subnet_id):
                self.ddi.kea("lease4-del", {"ip-address": ip})
                self.ddi.pdns("PATCH", "/zones/lab.one.", {"rrsets": [{
                    "name": f"one-{ip.replace('.', '-')}.lab.one.", "type": "A",
                    "changetype": "DELETE"}]})
        config = self.ddi.kea("config-get")["arguments"]
        dhcp4 = config["Dhcp4"]
        dhcp4["subnet4"] = [s for s in dhcp4["subnet4"] if s["id"] not in self.subnets]
        dhcp4["client-classes"] = [c for c in dhcp4.get("client-classes", [])
                                   if c["name"] not in {f"one-drivers-subnet-{i}"
                                                        for i in self.subnets}]
        self.ddi.kea("config-set", config)


@pytest.fixture(scope="module")
def remotes(lab_env, tmp_path_factory):
    return ipam.install(tmp_path_factory.mktemp("ipam-remotes"), lab_env)


@pytest.fixture
def kea(lab_env, remotes):
    k = Ipam(lab_env, remotes)
    yield k
    k.close()


def _net(n: int) -> dict:
    """An AR on network 10.91.<n>.0/24, addresses .10 - .29, MACs 02:00:0a:5b:<n>:0a..."""
    return {"IP": f"10.91.{n}.10", "SIZE": "20", "NETWORK_ADDRESS": f"10.91.{n}.0",
            "NETWORK_MASK": "255.255.255.0", "MAC": f"02:00:0a:5b:{n:02x}:0a"}


def test_register_makes_a_kea_subnet_that_survives_a_restart_and_a_rerun_reuses_it(kea):
    ar = kea.register(NETWORK_ADDRESS="10.91.1.0", NETWORK_MASK="255.255.255.0",
                      GATEWAY="10.91.1.1", DNS="10.91.1.53 10.91.1.54", GUEST_MTU="1400",
                      SEARCH_DOMAIN="lab.one example.org")
    # a partial AR: the IPAM chose the range, the network's hosts without the gateway
    assert (ar["IP"], ar["SIZE"]) == ("10.91.1.2", "253")
    assert ar["IPAM_MAD"] == "kea" and ar["TYPE"] == "IP4"
    assert ar["NETWORK_MASK"] == "255.255.255.0" and ar["GATEWAY"] == "10.91.1.1"
    subnet = kea.subnet(int(ar["KEA_SUBNET_ID"]))
    assert subnet["subnet"] == "10.91.1.0/24"
    assert [p["pool"] for p in subnet["pools"]] == ["10.91.1.2-10.91.1.254"]
    options = {o["name"]: o["data"] for o in subnet["option-data"]}
    assert options["routers"] == "10.91.1.1"
    assert options["domain-name-servers"] == "10.91.1.53, 10.91.1.54"
    assert options["interface-mtu"] == "1400"
    assert options["domain-search"] == "lab.one., example.org."
    # written through Kea's config-write: the file Kea starts from has it
    written = json.loads(Path(kea.env["ONE_LAB_KEA_CONF"]).read_text())
    assert any(s["id"] == int(ar["KEA_SUBNET_ID"]) for s in written["Dhcp4"]["subnet4"])
    again = kea.register(NETWORK_ADDRESS="10.91.1.0", NETWORK_MASK="255.255.255.0",
                         GATEWAY="10.91.1.1")
    assert again["KEA_SUBNET_ID"] == ar["KEA_SUBNET_ID"], "a re-run finds the subnet it made"
    assert sum(s["subnet"] == "10.91.1.0/24" for s in kea.config()["subnet4"]) == 1


@pytest.mark.parametrize(("attrs", "code", "says"), [
    ({"TYPE": "IP6", "IP": "10.91.2.10"}, 3, "IPv4 address ranges"),
    ({"IP": "10.91.3.10"}, 3, "is not inside the hosts of 10.91.2.0/24"),
    ({"GATEWAY": "10.91.2.12"}, 3, "inside the AR's own addresses"),
    ({"NETWORK_MASK": ""}, 3, "no NETWORK_MASK"),
    ({"SIZE": "x"}, 3, "SIZE 'x' is not a number"),
    ({"DNS": "10.91.2.300"}, 3, "is not an IPv4 address"),
    ({"DNS_ZONE": "other.zone"}, 5, "not one of the zones"),
])
def test_register_refuses_bad_input_in_one_line_and_changes_nothing(kea, attrs, code, says):
    before = kea.config()["subnet4"]
    ar = {"TYPE": "IP4", "IPAM_MAD": "kea", **_net(2), **attrs}
    res = kea.run("register_address_range", ar)
    assert res.returncode == code, res.stderr
    assert says in last_line(res.stderr) and res.stdout == ""
    assert kea.config()["subnet4"] == before
    # positive control: the same AR without the fault is registered
    good = kea.register(**_net(2))
    assert kea.subnet(int(good["KEA_SUBNET_ID"])) is not None


def test_a_network_kea_has_already_is_refused(kea):
    kea.register(**_net(3))
    other = {**_net(3), "IP": "10.91.3.100"}
    res = kea.run("register_address_range", {"TYPE": "IP4", "IPAM_MAD": "kea", **other})
    assert res.returncode == 1 and "Kea has subnet 10.91.3.0/24 already" in res.stderr
    wider = {**_net(3), "NETWORK_ADDRESS": "10.91.0.0", "NETWORK_MASK": "255.255.0.0"}
    res = kea.run("register_address_range", {"TYPE": "IP4", "IPAM_MAD": "kea", **wider})
    assert res.returncode == 1 and "overlaps Kea subnet 10.91.3.0/24" in res.stderr


def test_addresses_are_leased_named_and_freed_exactly(kea):
    ar = kea.register(**_net(4), GATEWAY="10.91.4.1", DNS_ZONE="lab.one")
    sid = int(ar["KEA_SUBNET_ID"])
    first = kea.run("get_address", ar, {"SIZE": 1})
    assert first.returncode == 0, first.stderr
    assert ipam.answer(first.stdout, "ADDRESS") == {"IP": "10.91.4.10", "SIZE": "1"}
    # leased to the MAC oned gives index 0 of the AR
    assert kea.leases(sid) == {"10.91.4.10": "02:00:0a:5b:04:0a"}
    second = kea.run("get_address", ar, {"SIZE": 1})
    assert ipam.answer(second.stdout, "ADDRESS")["IP"] == "10.91.4.11"
    # oned's own choice (a NIC with IP=): leased to the MAC oned sends
    chosen = {"IP": "10.91.4.20", "MAC": "02:00:0a:5b:04:14", "SIZE": 1}
    assert kea.run("allocate_address", ar, chosen).returncode == 0
    assert kea.run("allocate_address", ar, chosen).returncode == 0, "a retry converges"
    assert kea.leases(sid)["10.91.4.20"] == "02:00:0a:5b:04:14"
    assert len(kea.leases(sid)) == 3, "never two leases for one retry"
    taken = kea.run("allocate_address", ar, {**chosen, "MAC": "02:00:0a:5b:04:99"})
    assert taken.returncode == 1
    assert "10.91.4.20 is leased in Kea to 02:00:0a:5b:04:14" in last_line(taken.stderr)
    outside = kea.run("allocate_address", ar, {"IP": "10.91.4.40", "MAC": "02:00:0a:5b:04:28"})
    assert outside.returncode == 3 and "outside the AR" in outside.stderr
    assert "10.91.4.40" not in kea.leases(sid)
    # named in PowerDNS: the A record and the PTR in the lab's reverse zone... only for zones
    # the driver may write: 10.91 has no reverse zone there, so no PTR
    assert kea.dig("one-10-91-4-10.lab.one") == ["10.91.4.10"]
    assert kea.dig("one-10-91-4-20.lab.one") == ["10.91.4.20"]
    freed = kea.run("free_address", ar, {"IP": "10.91.4.10", "MAC": "02:00:0a:5b:04:0a",
                                         "SIZE": 1})
    assert freed.returncode == 0, freed.stderr
    assert "10.91.4.10" not in kea.leases(sid) and kea.dig("one-10-91-4-10.lab.one") == []
    assert kea.dig("one-10-91-4-20.lab.one") == ["10.91.4.20"], "the others stay"
    again = kea.run("free_address", ar, {"IP": "10.91.4.10", "MAC": "02:00:0a:5b:04:0a"})
    assert again.returncode == 0, "freeing twice converges"
    # free with a MAC that does not hold the lease: it stays (it is not that NIC's)
    kea.run("free_address", ar, {"IP": "10.91.4.20", "MAC": "02:00:0a:5b:04:15"})
    assert "10.91.4.20" in kea.leases(sid)
    # unregister is refused while Kea holds leases in the subnet...
    held = kea.run("unregister_address_range", ar)
    assert held.returncode == 1 and "still holds 2 lease(s)" in held.stderr
    assert kea.subnet(sid) is not None
    for ip, mac in (("10.91.4.11", "02:00:0a:5b:04:0b"), ("10.91.4.20", "02:00:0a:5b:04:14")):
        assert kea.run("free_address", ar, {"IP": ip, "MAC": mac}).returncode == 0
    # ...and removes the subnet and its fence once they are freed; twice converges
    assert kea.run("unregister_address_range", ar).returncode == 0
    assert kea.subnet(sid) is None
    assert f"one-drivers-subnet-{sid}" not in [c["name"] for c in
                                               kea.config().get("client-classes", [])]
    assert kea.run("unregister_address_range", ar).returncode == 0


def test_a_reservation_gets_a_contiguous_run_past_leased_addresses(kea):
    ar = kea.register(**_net(5))
    sid = int(ar["KEA_SUBNET_ID"])
    assert kea.run("allocate_address", ar, {"IP": "10.91.5.12", "MAC": "02:00:0a:5b:05:0c"}
                   ).returncode == 0
    res = kea.run("get_address", ar, {"SIZE": 3})
    assert ipam.answer(res.stdout, "ADDRESS") == {"IP": "10.91.5.13", "SIZE": "3"}
    assert kea.leases(sid) == {"10.91.5.12": "02:00:0a:5b:05:0c", "10.91.5.13": "02:00:0a:5b:05:0d",
                               "10.91.5.14": "02:00:0a:5b:05:0e", "10.91.5.15": "02:00:0a:5b:05:0f"}
    full = kea.run("get_address", ar, {"SIZE": 17})
    assert full.returncode == 1 and "no 17 free address(es) left" in full.stderr
    assert len(kea.leases(sid)) == 4, "nothing leased by the refused call"


def test_a_subnet_id_that_is_not_the_ars_is_refused(kea):
    victim = kea.register(**_net(6))
    mine = kea.register(**_net(7))
    forged = {**mine, "KEA_SUBNET_ID": victim["KEA_SUBNET_ID"]}
    res = kea.run("get_address", forged, {"SIZE": 1})
    assert res.returncode == 5 and "was not made by the kea IPAM for the AR 10.91.7.10" in \
        res.stderr
    res = kea.run("free_address", forged, {"IP": "10.91.7.10", "MAC": "02:00:0a:5b:07:0a"})
    assert res.returncode == 5
    assert kea.leases(int(victim["KEA_SUBNET_ID"])) == {}
    # positive control: the AR's own subnet id works
    assert kea.run("get_address", mine, {"SIZE": 1}).returncode == 0


def test_strangers_on_the_segment_get_no_address_and_the_vms_nic_gets_its_own(kea, lab_env):
    """DHCP itself: clients in namespaces on a switch with the lab's Kea."""
    from one_drivers.lab.netns import plug, unplug

    segment = lab_env["ONE_LAB_DHCP_SERVER"].rsplit(".", 1)[0]
    ar = kea.register(IP=f"{segment}.10", SIZE="20", NETWORK_ADDRESS=f"{segment}.0",
                      NETWORK_MASK="255.255.255.0", GATEWAY=f"{segment}.1",
                      MAC="02:00:0a:fe:14:0a")
    got = ipam.answer(kea.run("get_address", ar, {"SIZE": 1}).stdout, "ADDRESS")["IP"]
    bridge = f"ik{uuid.uuid4().hex[:6]}"
    subprocess.run(["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge,
                    "datapath_type=netdev", "--", "add-port", bridge,
                    lab_env["ONE_LAB_DHCP_PORT"]], check=True, timeout=30)
    nics = [plug(f"ikv{bridge[2:]}", "02:00:0a:fe:14:0a", []),
            plug(f"iks{bridge[2:]}", "02:00:00:77:00:01", [])]
    try:
        for nic in nics:
            subprocess.run(["ovs-vsctl", "add-port", bridge, nic.target], check=True, timeout=30)
        stranger = nics[1].exec("busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3",
                                "-T", "1", "-s", "/bin/true", timeout=30)
        assert "lease of" not in stranger.stderr + stranger.stdout
        vm = nics[0].exec("busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "2",
                          "-s", "/bin/true", timeout=40)
        assert f"lease of {got} obtained" in vm.stderr + vm.stdout, vm.stderr
        assert len(kea.leases(int(ar["KEA_SUBNET_ID"]))) == 1, "the stranger got nothing"
    finally:
        for nic in nics:
            unplug(nic.target, nic.netns)
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], timeout=30, check=False)


def _get_while_stopped(kea: Ipam, pidfile: str, ar: dict, remotes):
    """(result, seconds, pid) of a get_address while the service of ``pidfile`` is
    SIGSTOPped (hung: its sockets accept, nothing answers)."""
    pid = int(Path(pidfile).read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        res = kea.run("get_address", ar, {"SIZE": 1}, remotes=remotes)
        return res, time.monotonic() - started, pid
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_hung_kea_or_powerdns_fails_within_the_deadline_and_leaves_nothing(kea, lab_env,
                                                                            tmp_path):
    quick = ipam.install(tmp_path / "quick", lab_env, KEA_TIMEOUT="1", PDNS_TIMEOUT="1")
    ar = kea.register(**_net(8), DNS_ZONE="lab.one")
    sid = int(ar["KEA_SUBNET_ID"])
    res, took, _ = _get_while_stopped(kea, lab_env["ONE_LAB_KEA_AGENT_PID"], ar, quick)
    assert res.returncode == 4 and "Kea at" in last_line(res.stderr) and \
        "did not answer within 1 s" in last_line(res.stderr)
    assert took < 10, took
    assert kea.leases(sid) == {}
    # PowerDNS hung after Kea leased: the lease is taken back
    res, _, _ = _get_while_stopped(kea, lab_env["ONE_LAB_PDNS_PID"], ar, quick)
    assert res.returncode == 4 and "PowerDNS" in last_line(res.stderr)
    assert kea.leases(sid) == {}, "nothing half-reserved"
    # positive control: both answering, the same call leases and names
    res = kea.run("get_address", ar, {"SIZE": 1}, remotes=quick)
    assert res.returncode == 0 and kea.leases(sid) == {"10.91.8.10": "02:00:0a:5b:08:0a"}


def test_unreachable_services_and_denied_credentials_fail_in_one_line(kea, lab_env, tmp_path):
    ar = kea.register(**_net(9))
    closed = ipam.install(tmp_path / "closed", lab_env, KEA_URL="http://127.0.0.1:9/")
    res = kea.run("get_address", ar, {"SIZE": 1}, remotes=closed)
    assert res.returncode == 4 and "cannot reach Kea at http://127.0.0.1:9/" in last_line(
        res.stderr)
    wrong = tmp_path / "wrong-credentials"
    wrong.write_text("one-drivers:not-the-password\n")
    denied = ipam.install(tmp_path / "denied", lab_env, KEA_CREDENTIALS=str(wrong))
    res = kea.run("get_address", ar, {"SIZE": 1}, remotes=denied)
    assert res.returncode == 4 and "refused our credentials" in last_line(res.stderr)
    assert "not-the-password" not in res.stderr
    assert kea.leases(int(ar["KEA_SUBNET_ID"])) == {}


def test_the_lab_guest_gets_over_dhcp_exactly_the_address_oned_was_given(kea, lab_env, vm):
    """The issue's end-to-end check: the real guest (QEMU, via the VMM driver) on an ``ovsdb``
    vnet whose AR uses the kea IPAM asks DHCP and gets the address get_address answered oned,
    and DNS names it."""
    import base64

    from one_drivers.lab.documents import vm_doc
    from tests.integration.test_vmm_libvirt import HOST, READY

    segment = lab_env["ONE_LAB_DHCP_SERVER"].rsplit(".", 1)[0]
    ar = kea.register(IP=f"{segment}.10", SIZE="20", NETWORK_ADDRESS=f"{segment}.0",
                      NETWORK_MASK="255.255.255.0", GATEWAY=f"{segment}.1",
                      MAC="02:00:0a:fe:14:0a", DNS_ZONE="lab.one")
    kea.run("allocate_address", ar, {"IP": f"{segment}.10", "MAC": "02:00:0a:fe:14:0a"})
    got = ipam.answer(kea.run("get_address", ar, {"SIZE": 1}).stdout, "ADDRESS")["IP"]
    assert got == f"{segment}.11"
    mac = "02:00:0a:fe:14:0b"  # oned's MAC for the address: the AR's MAC + its index
    bridge, target = f"ik{uuid.uuid4().hex[:6]}", f"one-{vm.id}-0"
    nic = {"NIC_ID": 0, "NETWORK_ID": 1, "VN_MAD": "ovsdb", "BRIDGE": bridge, "MAC": mac,
           "IP": got, "TARGET": target, "FILTER_MAC_SPOOFING": "YES"}
    vnm_doc = base64.b64encode(vm_doc(vm.id, [], nics=[nic]).encode())
    pre = subprocess.run([str(vm.remotes / "vnm" / "ovsdb" / "pre")], input=vnm_doc,
                         capture_output=True, timeout=60, check=False)
    assert pre.returncode == 0, pre.stderr
    try:  # the DHCP server's uplink joins the vnet's bridge, as a physical one would
        subprocess.run(["ovs-vsctl", "add-port", bridge, lab_env["ONE_LAB_DHCP_PORT"]],
                       check=True, timeout=30)
        vm.deploy(nics=[(bridge, mac, target)])
        vm.console.wait_for(READY)
        out = vm.console.run("udhcpc -i eth0 -n -q -t 5 -T 2 -s /bin/true 2>&1", timeout=60)
        assert f"lease of {got} obtained" in out, out
        assert kea.leases(int(ar["KEA_SUBNET_ID"]))[got] == mac
        assert kea.dig(f"one-{got.replace('.', '-')}.lab.one") == [got]
        assert kea.dig(got, "PTR") == [f"one-{got.replace('.', '-')}.lab.one."]
        # and the name goes with the address when oned frees it
        assert kea.run("free_address", ar, {"IP": got, "MAC": mac}).returncode == 0
        assert kea.dig(got, "PTR") == [] and got not in kea.leases(int(ar["KEA_SUBNET_ID"]))
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-port", bridge,
                        lab_env["ONE_LAB_DHCP_PORT"]], timeout=30, check=False)
        vm.close()
        subprocess.run([str(vm.remotes / "vnm" / "ovsdb" / "clean"), HOST], input=vnm_doc,
                       capture_output=True, timeout=60, check=False)
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], timeout=30, check=False)


def _vnet_xml(vn_id: int, ar: dict, leases: list[tuple[str, str, int]]) -> str:
    """oned's one.vn.info answer: the AR as oned keeps it, with its LEASES."""
    body = "".join(f"<{k}>{v}</{k}>" for k, v in ar.items())
    rows = "".join(f"<LEASE><IP><![CDATA[{ip}]]></IP><MAC><![CDATA[{mac}]]></MAC>"
                   f"<VM><![CDATA[{vm}]]></VM></LEASE>" for ip, mac, vm in leases)
    return (f"<VNET><ID>{vn_id}</ID><NAME>kea-net</NAME><AR_POOL><AR>{body}<LEASES>{rows}"
            "</LEASES></AR></AR_POOL></VNET>")


def test_reconcile_reports_then_fixes_what_oned_kea_and_powerdns_disagree_on(kea, lab_env):
    from one_drivers.lab.lab import Lab

    oned = Lab().oned
    ar = kea.register(**_net(10), DNS_ZONE="lab.one")
    sid = int(ar["KEA_SUBNET_ID"])
    gone = kea.register(**_net(11))  # an AR oned removed with force: its subnet stays in Kea
    for ip, mac in (("10.91.10.10", "02:00:0a:5b:0a:0a"), ("10.91.10.11", "02:00:0a:5b:0a:0b"),
                    ("10.91.10.12", "02:00:0a:5b:0a:0c")):
        assert kea.run("allocate_address", ar, {"IP": ip, "MAC": mac}).returncode == 0
    assert kea.run("allocate_address", gone, {"IP": "10.91.11.10"}).returncode == 0
    # .11 leased in Kea to another MAC than oned's (ours, stale); .12 leased in Kea, not in
    # oned (an orphan); .13 in oned, not in Kea (missing); .10 agrees but lost its A record
    kea.ddi.kea("lease4-del", {"ip-address": "10.91.10.11"})
    assert kea.run("allocate_address", ar, {"IP": "10.91.10.11", "MAC": "02:00:0a:5b:0a:99"}
                   ).returncode == 0
    kea.ddi.pdns("PATCH", "/zones/lab.one.", {"rrsets": [
        {"name": "one-10-91-10-10.lab.one.", "type": "A", "changetype": "DELETE"}]})
    oned_leases = [("10.91.10.10", "02:00:0a:5b:0a:0a", 1), ("10.91.10.11", "02:00:0a:5b:0a:0b", 2),
                   ("10.91.10.13", "02:00:0a:5b:0a:0d", 3)]
    oned_ar = {k: v for k, v in ar.items()}
    oned.record("vn", 500, _vnet_xml(500, oned_ar, oned_leases))
    oned.record("vnpool", 0, f"<VNET_POOL>{_vnet_xml(500, oned_ar, [])}</VNET_POOL>")
    cli = [str(Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "one-drivers")]
    argv = [*cli, "ipam", "reconcile", "--remotes", str(kea.remotes)]
    env = {**os.environ, **lab_env}

    def reconcile(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=120,
                              env=env, check=False)

    try:
        report = reconcile()
        assert report.returncode == 1, report.stderr
        lines = report.stdout
        assert "missing: vnet 500 AR 0 leases 10.91.10.13 to 02:00:0a:5b:0a:0d" in lines
        assert "conflict: vnet 500 AR 0 leases 10.91.10.11 to 02:00:0a:5b:0a:0b; Kea to " \
               "02:00:0a:5b:0a:99" in lines
        assert "orphan lease: 10.91.10.12" in lines
        assert f"orphan subnet {gone['KEA_SUBNET_ID']} (10.91.11.0/24, 1 lease(s))" in lines
        assert "unnamed: 10.91.10.10" in lines
        assert "difference(s) found (report only; --fix repairs them)" in lines
        # report-only changed nothing
        assert set(kea.leases(sid)) == {"10.91.10.10", "10.91.10.11", "10.91.10.12"}
        assert kea.subnet(int(gone["KEA_SUBNET_ID"])) is not None
        fixed = reconcile("--fix")
        assert fixed.returncode == 0, fixed.stderr
        assert kea.leases(sid) == {"10.91.10.10": "02:00:0a:5b:0a:0a",
                                   "10.91.10.11": "02:00:0a:5b:0a:0b",
                                   "10.91.10.13": "02:00:0a:5b:0a:0d"}
        assert kea.subnet(int(gone["KEA_SUBNET_ID"])) is None
        assert kea.dig("one-10-91-10-10.lab.one") == ["10.91.10.10"]
        assert kea.dig("one-10-91-10-12.lab.one") == [], "the orphan's record went with it"
        assert kea.dig("one-10-91-10-13.lab.one") == ["10.91.10.13"]
        again = reconcile()
        assert again.returncode == 0 and "oned, Kea and PowerDNS agree" in again.stdout, \
            again.stdout
    finally:
        oned.record("vnpool", 0, "<VNET_POOL/>")
        for ip in list(kea.leases(sid)):
            kea.run("free_address", ar, {"IP": ip, "MAC": kea.leases(sid)[ip]})


def test_a_dhcp_server_stopped_or_gone_behind_its_agent_fails_in_one_line(kea, lab_env, tmp_path):
    """The agent answers, kea-dhcp4 does not: SIGSTOPped (the agent waits on its socket: our
    deadline ends it) and then killed (the agent says so at once). The lab's DHCP is made
    anew afterwards."""
    from one_drivers.lab.proc import read_pid

    quick = ipam.install(tmp_path / "quick", lab_env, KEA_TIMEOUT="2")
    ar = kea.register(**_net(12))
    res, took, pid = _get_while_stopped(kea, lab_env["ONE_LAB_KEA_PID"], ar, quick)
    assert res.returncode == 4 and "did not answer within 2 s" in last_line(res.stderr)
    assert took < 10, took
    assert kea.run("get_address", ar, {"SIZE": 1}, remotes=quick).returncode == 0, \
        "positive control: the same call once it runs again"
    try:
        os.kill(pid, signal.SIGKILL)
        kea.ddi.wait_gone(pid)
        res = kea.run("get_address", ar, {"SIZE": 1}, remotes=quick)
        assert res.returncode == 4, res.stderr
        assert "Kea's DHCPv4 server did not answer config-get" in last_line(res.stderr)
    finally:
        kea.subnets.clear()  # a new Kea has none of them
        kea.ddi.up()
    assert read_pid(Path(lab_env["ONE_LAB_KEA_PID"])) != pid


def test_an_unknown_ar_or_a_broken_document_fails_in_one_line_and_leases_nothing(kea):
    ar = kea.register(**_net(13))
    unknown = {**ar, "KEA_SUBNET_ID": "99999"}
    res = kea.run("get_address", unknown, {"SIZE": 1})
    assert res.returncode == 6 and "Kea has no subnet 99999" in last_line(res.stderr)
    unregistered = {k: v for k, v in ar.items() if k != "KEA_SUBNET_ID"}
    res = kea.run("allocate_address", unregistered, {"IP": "10.91.13.10"})
    assert res.returncode == 3 and "the AR has no KEA_SUBNET_ID" in last_line(res.stderr)
    for stdin in (b"not base64 at all!", b"PElQQU1fRFJJVkVSX0FDVElPTl9EQVRBPg==", b""):
        proc = subprocess.run([str(kea.remotes / "ipam" / "kea" / "get_address"), "7"],
                              input=stdin, capture_output=True, timeout=60, check=False)
        assert proc.returncode == 3, proc.stderr
        assert len(proc.stderr.decode().strip().splitlines()) == 1 and proc.stdout == b""
    assert kea.leases(int(ar["KEA_SUBNET_ID"])) == {}
    # positive control: the AR itself gets an address
    assert kea.run("get_address", ar, {"SIZE": 1}).returncode == 0


def test_calls_running_at_once_never_lease_one_address_twice(kea):
    """oned sends one IPAM call at a time, but `ipam reconcile` or a second front-end tool may
    run beside it: eight get_address at once get eight addresses, each leased once."""
    from concurrent.futures import ThreadPoolExecutor

    ar = kea.register(**_net(14))
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: kea.run("get_address", ar, {"SIZE": 1}), range(8)))
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    got = [ipam.answer(r.stdout, "ADDRESS")["IP"] for r in runs]
    assert len(set(got)) == 8, got
    held = kea.leases(int(ar["KEA_SUBNET_ID"]))
    assert sorted(held) == sorted(got)
    assert held == {f"10.91.14.{10 + n}": f"02:00:0a:5b:0e:{10 + n:02x}" for n in range(8)}
