"""The invocation contract of every family, as OpenNebula calls each action."""

import base64
import io

import pytest

from one_drivers.core.contract import CONTRACT, HostPath, parse_argv, parse_call, signature_for
from one_drivers.core.documents import VM, AuthN, DsActionData, MarketActionData, VmmActionData
from one_drivers.core.errors import BadInput, UsageError

DS = "<DS_DRIVER_ACTION_DATA><DATASTORE><ID>1</ID></DATASTORE></DS_DRIVER_ACTION_DATA>"


def stdin(data: str | bytes) -> io.BytesIO:
    return io.BytesIO(data.encode() if isinstance(data, str) else data)


def b64(text: str) -> io.BytesIO:
    return stdin(base64.b64encode(text.encode()))


def test_every_family_is_covered():
    assert set(CONTRACT) == {"datastore", "tm", "vmm", "vnm", "market", "auth", "ipam", "im"}


def test_datastore_id_in_argv_base64_on_stdin():
    call = parse_call("datastore", "rbd", "cp", ["7"], b64(DS))
    assert call.args == {"id": 7}
    assert isinstance(call.doc, DsActionData)
    assert call.subject == "image 7"
    assert parse_call("datastore", "rbd", "monitor", ["1"], b64(DS)).subject == "datastore 1"


def test_tm_clone_positional_hostpaths_no_stdin():
    call = parse_call("tm", "rbd", "clone",
                      ["fe:one/one-7", "node1:/var/lib/one//datastores/0/42/disk.0", "42", "100"],
                      None)
    assert call.args["src"] == HostPath("fe", "one/one-7")
    assert call.args["dst"].disk_index == 0
    assert call.args["dst"].vm_dir == "/var/lib/one//datastores/0/42"
    assert call.args["vmid"] == 42 and call.doc is None
    assert call.subject == "VM 42 disk 0"


def test_tm_ssh_variant_shares_the_signature():
    assert signature_for("tm", "clone.ssh") is signature_for("tm", "clone")


def test_tm_context_has_variadic_files_in_the_middle():
    args = parse_argv(signature_for("tm", "context"),
                      ["/vms/42/context.sh", "/f1:t1", "/f2", "node1:/d/0/42/disk.2", "42", "0"],
                      "tm/rbd/context")
    assert args["files"] == ["/vms/42/context.sh", "/f1:t1", "/f2"]
    assert args["dst"] == HostPath("node1", "/d/0/42/disk.2")
    assert args["vmid"] == 42


def test_tm_premigrate_reads_base64_vm_and_optional_caller():
    call = parse_call("tm", "rbd", "premigrate", ["n1", "n2", "/d/0/42", "42", "0"],
                      b64("<VM><ID>42</ID></VM>"))
    assert isinstance(call.doc, VM) and call.args["caller"] is None
    call = parse_call("tm", "rbd", "postmigrate", ["n1", "n2", "/d/0/42", "42", "0", "ceph"],
                      b64("<VM><ID>42</ID></VM>"))
    assert call.args["caller"] == "ceph"


def test_tm_backup_accepts_plain_or_base64_vm():
    argv = ["n1:/d/0/42", "0:1", "uuid", "-", "42", "0"]
    plain = parse_call("tm", "rbd", "prebackup", argv, stdin("<VM><ID>42</ID></VM>"))
    encoded = parse_call("tm", "rbd", "prebackup", argv, b64("<VM><ID>42</ID></VM>"))
    assert plain.doc.id == encoded.doc.id == 42


def test_vmm_appends_vmid_and_host():
    data = "<VMM_DRIVER_ACTION_DATA><HOST>n1</HOST><VM><ID>42</ID></VM></VMM_DRIVER_ACTION_DATA>"
    call = parse_call("vmm", "libvirt", "shutdown", ["uuid-1", "n1", "42", "n1"], stdin(data))
    assert call.args == {"deploy_id": "uuid-1", "host": "n1", "vmid": 42, "vmm_host": "n1"}
    assert isinstance(call.doc, VmmActionData) and call.doc.vm.id == 42
    assert call.subject == "VM 42"


def test_vmm_deploy_keeps_the_domain_xml_verbatim():
    domain = "<domain type='kvm'><name>one-42</name></domain>"
    call = parse_call("vmm", "libvirt", "deploy", ["/d/0/42/deployment.0", "n1", "42", "n1"],
                      stdin(domain))
    assert call.raw_stdin == domain and call.doc is None
    with pytest.raises(BadInput, match="expected <domain>"):
        parse_call("vmm", "libvirt", "deploy", ["/f", "n1", "42", "n1"], stdin("<VM/>"))


def test_vnm_actions_per_action_argv():
    vm = "<VM><ID>42</ID><TEMPLATE><NIC><NIC_ID>0</NIC_ID></NIC></TEMPLATE></VM>"
    assert parse_call("vnm", "ovsdb", "pre", [], b64(vm)).args == {}
    post = parse_call("vnm", "ovsdb", "post", ["uuid-1", "n1"], b64(vm))
    assert post.args == {"deploy_id": "uuid-1", "host": "n1"} and post.subject == "VM 42"
    assert parse_call("vnm", "ovsdb", "update_nic", ["uuid-1", "5"], b64(vm)).args["vn_id"] == 5
    vnet = parse_call("vnm", "ovsdb", "vnet_create", ["5"], b64("<VNET><ID>5</ID></VNET>"))
    assert vnet.subject == "virtual network 5"
    with pytest.raises(UsageError, match="expects arguments DEPLOY_ID HOST, got 1"):
        parse_call("vnm", "ovsdb", "post", ["uuid-1"], b64(vm))


def test_market_document_is_argv1_not_stdin():
    doc = base64.b64encode(b"<MARKET_DRIVER_ACTION_DATA><MARKETPLACE><ID>3</ID></MARKETPLACE>"
                           b"</MARKET_DRIVER_ACTION_DATA>").decode()
    call = parse_call("market", "rbd", "monitor", [doc, "3"], None)
    assert isinstance(call.doc, MarketActionData)
    assert call.doc.marketplace.get("ID") == "3"


def test_auth_reads_authn_from_stdin():
    call = parse_call("auth", "x", "authenticate", [],
                      stdin("<AUTHN><USERNAME>alice</USERNAME><SECRET>s</SECRET></AUTHN>"))
    assert isinstance(call.doc, AuthN) and call.doc.username == "alice"
    assert call.subject == "user alice"


def test_ipam_and_im():
    ipam = parse_call("ipam", "x", "get_address", ["9"],
                      b64("<IPAM_DRIVER_ACTION_DATA><AR/></IPAM_DRIVER_ACTION_DATA>"))
    assert ipam.subject == "IPAM request 9"
    im = parse_call("im", "libvirt", "run_monitord_client", ["libvirt", "3", "node1"],
                    stdin("<MONITOR_CONFIGURATION><HOST_ID>3</HOST_ID></MONITOR_CONFIGURATION>"))
    assert im.doc.host_id == 3 and im.subject == "host 3"


@pytest.mark.parametrize(
    ("family", "action", "argv", "message"),
    [
        ("tm", "clone", ["fe:one/one-7", "node1:/d/disk.0", "x", "1"], "VMID is 'x'"),
        ("tm", "clone", ["fe", "node1:/d/disk.0", "1", "1"], "expected HOST:PATH"),
        ("tm", "delete", ["node1:/d/disk.0"], "expects arguments DST VMID DSID, got 1"),
        ("datastore", "cp", [], "expects arguments ID, got 0"),
        ("datastore", "cp", ["1", "2"], "got 2"),
    ],
)
def test_bad_argv(family, action, argv, message):
    with pytest.raises((BadInput, UsageError), match=message):
        parse_call(family, "rbd", action, argv, b64(DS))


def test_unknown_family_and_action_are_usage_errors():
    with pytest.raises(UsageError, match="unknown driver family"):
        signature_for("storage", "cp")
    with pytest.raises(UsageError, match="OpenNebula has no datastore action 'copy'"):
        signature_for("datastore", "copy")


def test_bad_stdin_error_names_the_subject():
    with pytest.raises(BadInput) as err:
        parse_call("datastore", "rbd", "cp", ["7"], stdin("<not base64>"))
    assert str(err.value).startswith("image 7: datastore/rbd/cp stdin is not valid base64")
    with pytest.raises(BadInput, match="root element <VM>"):
        parse_call("datastore", "rbd", "cp", ["7"], b64("<VM/>"))
