import pytest

from one_drivers.core.config import Settings, config_path, parse_rc, render_rc
from one_drivers.core.errors import BadInput, MissingAttribute
from one_drivers.core.xmlview import Template, parse_xml


def test_parse_rc_upstream_style():
    text = '# comment\nPOOL_NAME=one\n  CEPH_TRASH = "yes"\nSTAGING_DIR=\'/var/tmp\'\n\n'
    assert parse_rc(text) == {"POOL_NAME": "one", "CEPH_TRASH": "yes", "STAGING_DIR": "/var/tmp"}


def test_parse_rc_rejects_garbage_with_line_number():
    with pytest.raises(BadInput, match="line 2 is not KEY=value"):
        parse_rc("A=1\nthis is not it\n", source="rbd.conf")


def test_render_rc_round_trips():
    defaults = {"POOL_NAME": ("one", "the pool"), "CEPH_USER": ("", "the user\nsecond line")}
    text = render_rc(defaults, "header")
    assert parse_rc(text) == {"POOL_NAME": "one", "CEPH_USER": ""}
    assert "# the user\n# second line\nCEPH_USER=" in text


def test_layers_most_specific_wins_and_empty_is_unset():
    tpl = Template(parse_xml("<TEMPLATE><POOL_NAME>fast</POOL_NAME><CEPH_USER/></TEMPLATE>",
                             what="t"))
    s = Settings([{"POOL_NAME": "one", "CEPH_USER": "admin", "T": "5"},
                  {"CEPH_USER": "oneadmin"}]).over(tpl)
    assert s.get("POOL_NAME") == "fast"
    assert s.get("CEPH_USER") == "oneadmin"  # the template's empty value does not hide it
    assert s.int("T", 1) == 5 and s.float("T", 1.0) == 5.0
    assert s.bool("MISSING", True) is True


def test_require_names_the_subject():
    with pytest.raises(MissingAttribute, match=r"^image 3: missing required attribute POOL"):
        Settings([{}], subject="image 3").require("POOL")


def test_config_path_mirrors_upstream_layout(tmp_path):
    assert config_path("datastore", "rbd", tmp_path) == str(tmp_path / "etc/datastore/rbd/rbd.conf")
