import pytest

from one_drivers.core.documents import VM, DsActionData, VNet
from one_drivers.core.errors import BadInput, MissingAttribute
from one_drivers.core.xmlview import Template, decode_base64, parse_xml

DS_DOC = """<DS_DRIVER_ACTION_DATA>
  <IMAGE><ID>7</ID><NAME>alpine</NAME><SOURCE>one/one-7</SOURCE><FORMAT>raw</FORMAT>
    <SIZE>256</SIZE><TYPE>2</TYPE><PERSISTENT>1</PERSISTENT><TARGET_SNAPSHOT>2</TARGET_SNAPSHOT>
    <TEMPLATE><MD5>abc</MD5></TEMPLATE></IMAGE>
  <DATASTORE><ID>100</ID><NAME>ceph</NAME><DS_MAD>rbd</DS_MAD><TYPE>0</TYPE>
    <TEMPLATE><POOL_NAME>one</POOL_NAME><CEPH_TRASH>YES</CEPH_TRASH><EMPTY/></TEMPLATE>
  </DATASTORE>
</DS_DRIVER_ACTION_DATA>"""

VM_DOC = """<VM><ID>42</ID><NAME>web</NAME><DEPLOY_ID>uuid-1</DEPLOY_ID><LCM_STATE>3</LCM_STATE>
  <TEMPLATE>
    <DISK><DISK_ID>0</DISK_ID><IMAGE_ID>7</IMAGE_ID><SOURCE>one/one-7</SOURCE><CLONE>YES</CLONE>
      <TYPE>RBD</TYPE><SIZE>1024</SIZE></DISK>
    <DISK><DISK_ID>1</DISK_ID><TYPE>fs</TYPE></DISK>
    <NIC><NIC_ID>0</NIC_ID><BRIDGE>br0</BRIDGE><MAC>02:00:00:00:00:01</MAC><VN_MAD>ovsdb</VN_MAD>
      <VLAN_ID>10</VLAN_ID></NIC>
    <NIC><NIC_ID>1</NIC_ID><BRIDGE>br1</BRIDGE><MAC>02:00:00:00:00:02</MAC></NIC>
    <SECURITY_GROUP_RULE><PROTOCOL>TCP</PROTOCOL><RULE_TYPE>inbound</RULE_TYPE>
      <RANGE>22</RANGE></SECURITY_GROUP_RULE>
  </TEMPLATE>
  <HISTORY_RECORDS>
    <HISTORY><HOSTNAME>node1</HOSTNAME><HID>1</HID><DS_ID>0</DS_ID><VM_MAD>libvirt</VM_MAD></HISTORY>
    <HISTORY><HOSTNAME>node2</HOSTNAME><HID>2</HID><DS_ID>0</DS_ID></HISTORY>
  </HISTORY_RECORDS>
</VM>"""


def test_decode_base64_accepts_multiline_ruby_style():
    assert decode_base64(b"PEE+\nPC9BPg==\n", what="stdin") == b"<A></A>"


@pytest.mark.parametrize("data", [b"", b"  \n", b"%%%", b"PEE+PC9BPg=", "not base64!"])
def test_decode_base64_rejects_garbage(data):
    with pytest.raises(BadInput) as err:
        decode_base64(data, what="stdin")
    assert "stdin" in str(err.value)
    assert "\n" not in str(err.value)


def test_parse_xml_errors_name_what_and_expected_root():
    with pytest.raises(BadInput, match="not well-formed XML"):
        parse_xml(b"<A>", what="stdin")
    with pytest.raises(BadInput, match=r"root element <VM>, expected <DS_DRIVER_ACTION_DATA>"):
        parse_xml(b"<VM/>", what="stdin", root="DS_DRIVER_ACTION_DATA")
    with pytest.raises(BadInput, match="is empty"):
        parse_xml(b"", what="stdin", root="VM")


def test_ds_action_data_view():
    doc = DsActionData(parse_xml(DS_DOC, what="t"))
    image, ds = doc.image, doc.datastore
    assert (image.id, image.name, image.source, image.size_mb) == (7, "alpine", "one/one-7", 256)
    assert image.type == "DATABLOCK" and image.persistent is True
    assert image.target_snapshot == 2 and image.fs is None
    assert image.template.get("md5") == "abc"
    assert (ds.id, ds.ds_mad, ds.type) == (100, "rbd", "IMAGE_DS")
    assert ds.template.get("POOL_NAME") == "one"
    assert ds.template.bool("CEPH_TRASH", False) is True
    assert ds.template.get("EMPTY", "dflt") == "dflt"  # empty element counts as unset
    assert doc.datastore_location == "/var/lib/one/datastores"


def test_missing_attribute_names_full_path_and_subject():
    doc = DsActionData(parse_xml(DS_DOC, what="t"), subject="image 7")
    with pytest.raises(MissingAttribute) as err:
        doc.datastore.template.text("CEPH_HOST")
    msg = str(err.value)
    assert msg.startswith("image 7: missing required attribute ")
    assert "DS_DRIVER_ACTION_DATA/DATASTORE/TEMPLATE/CEPH_HOST" in msg
    monitor_doc = DsActionData(parse_xml("<DS_DRIVER_ACTION_DATA/>", what="t"))
    with pytest.raises(MissingAttribute, match="DS_DRIVER_ACTION_DATA/IMAGE"):
        _ = monitor_doc.image


def test_bad_integer_and_boolean_are_bad_input():
    doc = DsActionData(parse_xml(DS_DOC.replace("<SIZE>256", "<SIZE>big"), what="t"))
    with pytest.raises(BadInput, match=r"IMAGE/SIZE is 'big', expected an integer"):
        _ = doc.image.size_mb
    tpl = Template(parse_xml("<TEMPLATE><X>maybe</X></TEMPLATE>", what="t"))
    with pytest.raises(BadInput, match="expected YES or NO"):
        tpl.bool("X")


def test_vm_view_disks_nics_history():
    vm = VM(parse_xml(VM_DOC, what="t", root="VM"))
    assert (vm.id, vm.deploy_id, vm.lcm_state) == (42, "uuid-1", 3)
    disks = list(vm.disks())
    assert [d.disk_id for d in disks] == [0, 1]
    assert disks[0].clone and disks[0].type == "RBD" and disks[0].size_mb == 1024
    assert disks[1].type == "FS" and disks[1].image_id is None
    assert vm.disk(1) is disks[1] or vm.disk(1).disk_id == 1
    assert vm.disk(9) is None
    nics = list(vm.nics())
    assert [n.bridge for n in nics] == ["br0", "br1"]
    assert nics[0].get("VLAN_ID") == "10" and nics[1].vn_mad is None
    assert [r.get("RANGE") for r in vm.security_group_rules()] == ["22"]
    assert vm.last_history is not None and vm.last_history.hostname == "node2"
    assert [h.host_id for h in vm.history()] == [1, 2]
    with pytest.raises(MissingAttribute, match=r"TEMPLATE/NIC\[1\]/VLAN_ID"):
        nics[1].text("VLAN_ID")


def test_vnet_view():
    vnet = VNet(parse_xml("<VNET><ID>5</ID><BRIDGE>ovsbr0</BRIDGE><VLAN_ID>7</VLAN_ID>"
                          "<TEMPLATE><MTU>9000</MTU></TEMPLATE></VNET>", what="t"))
    assert (vnet.id, vnet.bridge, vnet.vlan_id) == (5, "ovsbr0", "7")
    assert vnet.template.get("MTU") == "9000"
