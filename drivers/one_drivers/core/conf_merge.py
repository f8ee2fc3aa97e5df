"""Merge our registration into an existing oned.conf / monitord.conf, idempotently, leaving the
operator's other settings (and comments, and layout) exactly as they were.

- Driver lists: our names are added to the ``-d`` (and DATASTORE_MAD's ``-s``) list inside the
  ARGUMENTS of the MAD section; nothing is removed or reordered.
- Single-line attributes (``VNET_RESTRICTED_ATTR = "AR/KEA_SUBNET_ID"``): a line is added for
  each value not set yet.
- Blocks (``TM_MAD_CONF = [ NAME = "rbd", ... ]``, DS_MAD_CONF, VN_MAD_CONF, VM_MAD, IM_MAD): a
  block with our NAME is ours; it is replaced when it differs, appended when missing.

A second run changes nothing. Used by the Ansible role (``one-drivers oned-conf --merge FILE``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from one_drivers.core.atomic import write_atomic
from one_drivers.core.errors import BadInput

# a vector attribute: SECTION = [ ... ] (values are quoted strings, which may hold brackets)
_BLOCK = re.compile(r'^(?P<name>[A-Z_]+)[ \t]*=[ \t]*\[(?P<body>(?:[^\]"]|"[^"]*")*)\]',
                    re.MULTILINE)
_ATTR = re.compile(r'(?P<key>[A-Z_]+)\s*=\s*"(?P<value>[^"]*)"')


def _blocks(text: str, section: str) -> list[re.Match[str]]:
    return [m for m in _BLOCK.finditer(text) if m.group("name") == section
            and not _commented(text, m.start())]


def _commented(text: str, pos: int) -> bool:
    line_start = text.rfind("\n", 0, pos) + 1
    return "#" in text[line_start:pos]


def _attrs(body: str) -> dict[str, str]:
    return {m.group("key"): m.group("value") for m in _ATTR.finditer(body)}


def render_block(section: str, attrs: dict[str, str]) -> str:
    width = max(len(k) for k in attrs)
    body = ",\n".join(f'    {k.ljust(width)} = "{v}"' for k, v in attrs.items())
    return f"{section} = [\n{body}\n]"


def _add_to_list(arguments: str, option: str, names: list[str]) -> str:
    """``-d a,b`` + [c] -> ``-d a,b,c`` (an absent option is appended)."""
    match = re.search(rf"(^|\s){re.escape(option)}\s+(\S+)", arguments)
    if match is None:
        return f"{arguments} {option} {','.join(names)}".strip()
    current = match.group(2).split(",")
    missing = [n for n in names if n not in current]
    if not missing:
        return arguments
    start, end = match.span(2)
    return arguments[:start] + ",".join(current + missing) + arguments[end:]


def _add_to_attribute(body: str, attr: str, names: list[str]) -> str:
    """``AUTHN = "a,b"`` + [c] -> ``AUTHN = "a,b,c"`` (an absent attribute is added)."""
    current = _attrs(body).get(attr)
    if current is None:
        return body.rstrip() + f',\n    {attr} = "{",".join(names)}"\n'
    listed = [n.strip() for n in current.split(",") if n.strip()]
    missing = [n for n in names if n not in listed]
    if not missing:
        return body
    value = ",".join([*listed, *missing])
    return re.sub(rf'({re.escape(attr)}\s*=\s*")[^"]*(")',
                  lambda m: m.group(1) + value + m.group(2), body, count=1)


def _add_attribute_lines(text: str, attributes: dict[str, list[str]]) -> str:
    """``KEY = "value"`` lines (oned.conf's repeatable attributes) for the values not set yet."""
    for key, values in attributes.items():
        present = {m.group(1) for m in re.finditer(rf'^{key}\s*=\s*"([^"]*)"', text, re.MULTILINE)}
        missing = [v for v in values if v not in present]
        if missing:
            lines = "\n".join(f'{key} = "{v}"' for v in missing)
            text = text.rstrip("\n") + f"\n\n# one-drivers: {key}\n{lines}\n"
    return text


def merge_rc(text: str, values: dict[str, list[str]]) -> str:
    """A shell rc file (``vmm_execrc``): each word of ``values[KEY]`` added to ``KEY="a b"``."""
    for key, words in values.items():
        match = re.search(rf'^{key}="([^"]*)"', text, re.MULTILINE)
        if match is None:
            text = text.rstrip("\n") + f'\n{key}="{" ".join(words)}"\n'
            continue
        current = match.group(1).split()
        missing = [w for w in words if w not in current]
        if missing:
            text = (text[:match.start(1)] + " ".join(current + missing)
                    + text[match.end(1):])
    return text


def merge(text: str, registration: dict[str, Any], file: str) -> str:
    """``text`` with everything of ``registration`` (see :mod:`one_drivers.core.oned_conf`) that
    belongs in ``file`` (``oned.conf``, ``monitord.conf`` or ``vmm_execrc``)."""
    if file == "vmm_execrc":
        return merge_rc(text, registration.get("vmm_execrc", {}))
    if file == "oned.conf":
        for mad, entry in registration["driver_lists"].items():
            found = _blocks(text, mad)
            if not found:
                raise BadInput(f"{mad} = [ ... ] is missing from {file}",
                               hint="is this OpenNebula's oned.conf?")
            block = found[0]
            body = block.group("body")
            if not entry["option"].startswith("-"):  # AUTH_MAD's AUTHN: an attribute's list
                text = text[:block.start("body")] + _add_to_attribute(
                    body, entry["option"], entry["drivers"]) + text[block.end("body"):]
                continue
            args = _attrs(body).get("ARGUMENTS", "")
            new_args = _add_to_list(args, entry["option"], entry["drivers"])
            if entry.get("system"):
                new_args = _add_to_list(new_args, "-s", entry["system"])
            if new_args != args:
                new_body = re.sub(r'(ARGUMENTS\s*=\s*")[^"]*(")',
                                  lambda m, a=new_args: m.group(1) + a + m.group(2), body, count=1)
                text = text[:block.start("body")] + new_body + text[block.end("body"):]
    if file == "oned.conf":
        text = _add_attribute_lines(text, registration.get("attributes", {}))
    for blk in registration["blocks"]:
        if blk["file"] != file:
            continue
        section, attrs = blk["section"], blk["attrs"]
        wanted = render_block(section, attrs)
        ours = [m for m in _blocks(text, section)
                if _attrs(m.group("body")).get("NAME") == attrs["NAME"]]
        if ours:
            current = ours[0]
            if _attrs(current.group("body")) != attrs:
                text = text[:current.start()] + wanted + text[current.end():]
        else:
            text = text.rstrip("\n") + f"\n\n# one-drivers: {section} {attrs['NAME']}\n{wanted}\n"
    return text


def merge_file(path: str, registration: dict[str, Any], *, kind: str | None = None,
               check: bool = False) -> bool:
    """Merge in place (atomically, mode kept); True when the file changed (or, with ``check``,
    would change: nothing is written). ``kind``: oned.conf, monitord.conf or vmm_execrc
    (default: the file's name)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    new = merge(text, registration, kind or os.path.basename(path))
    if new == text or check:
        return new != text
    write_atomic(path, new)  # the file's mode is kept
    return True
