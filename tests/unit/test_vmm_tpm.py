"""The deployment file's TPM as the driver serves it (no swtpm is run here)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from one_drivers.core.errors import BadInput
from one_drivers.vmm.libvirt.tpm import Swtpm, adopt, served_by

ONED = ("<domain><devices><tpm model='tpm-tis'><backend type='emulator' version='2.0'/></tpm>"
        "</devices></domain>")


def test_oneds_emulator_backend_becomes_an_external_one_in_the_vms_directory():
    root = ET.fromstring(ONED)
    swtpm = adopt(root, "/var/lib/one//datastores/0/7")
    assert swtpm == Swtpm("/var/lib/one/datastores/0/7/tpm")
    backend = root.find("devices/tpm/backend")
    assert backend.attrib == {"type": "external"}
    assert root.find("devices/tpm").get("model") == "tpm-tis"
    assert backend.find("source").attrib == {
        "type": "unix", "mode": "connect", "path": "/var/lib/one/datastores/0/7/tpm/swtpm.sock"}
    assert served_by(root) == swtpm, "a saved domain names the same swtpm"
    assert "--tpm2" in swtpm.argv() and "--terminate" in swtpm.argv()


def test_no_tpm_or_someone_elses_external_tpm_is_not_ours():
    assert adopt(ET.fromstring("<domain><devices/></domain>"), "/d") is None
    other = ("<domain><devices><tpm model='tpm-crb'><backend type='external'>"
             "<source type='unix' mode='connect' path='/run/their/tpm.sock'/></backend></tpm>"
             "</devices></domain>")
    assert adopt(ET.fromstring(other), "/d") is None


def test_a_socket_path_too_long_for_unix_sockets_or_tpm_1_2_is_refused():
    with pytest.raises(BadInput, match="longer than a unix socket"):
        adopt(ET.fromstring(ONED), "/" + "d" * 100)
    with pytest.raises(BadInput, match=r"only TPM 2\.0"):
        adopt(ET.fromstring(ONED.replace("2.0", "1.2")), "/d")
