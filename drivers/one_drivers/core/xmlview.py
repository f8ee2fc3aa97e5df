"""Typed, read-only views of the XML documents OpenNebula hands to drivers.

A view wraps an ElementTree element and knows where it sits in the document, so a missing attribute
is reported with its full path (``DS_DRIVER_ACTION_DATA/DATASTORE/TEMPLATE/POOL_NAME``). Views never
change the document. Parsing is done once, at the entry point.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from one_drivers.core.errors import BadInput, MissingAttribute

_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off", ""}

V = TypeVar("V", bound="XmlView")


class _Missing:
    pass


_MISSING = _Missing()


def decode_base64(data: str | bytes, *, what: str) -> bytes:
    """Strict base64 (multi-line input allowed, as Ruby's encode64 produces)."""
    raw = data.encode() if isinstance(data, str) else data
    compact = b"".join(raw.split())
    if not compact:
        raise BadInput(f"{what} is empty", hint="OpenNebula sends base64-encoded XML here")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"{what} is not valid base64 ({exc})",
                       hint="OpenNebula sends the driver action document base64-encoded") from None


def parse_xml(data: str | bytes, *, what: str,
              root: str | tuple[str, ...] | None = None) -> ET.Element:
    """Parse a document and check its root element."""
    text = data.strip() if isinstance(data, bytes | str) else data
    if not text:
        raise BadInput(f"{what} is empty", hint=f"expected a <{_roots(root)}> document")
    try:
        elem = ET.fromstring(text)  # noqa: S314 - input comes from oned, not the network
    except ET.ParseError as exc:
        raise BadInput(f"{what} is not well-formed XML ({exc})") from None
    if root is not None:
        allowed = (root,) if isinstance(root, str) else root
        if elem.tag not in allowed:
            raise BadInput(f"{what} has root element <{elem.tag}>, expected <{_roots(root)}>")
    return elem


def _roots(root: str | tuple[str, ...] | None) -> str:
    if root is None:
        return "XML"
    return root if isinstance(root, str) else "> or <".join(root)


def escape(text: str) -> str:
    """XML text escaping (``xml.sax.saxutils`` would import urllib.request, ~14 ms)."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def to_bool(value: str, *, where: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BadInput(f"{where} is {value!r}, expected YES or NO")


def to_int(value: str, *, where: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise BadInput(f"{where} is {value!r}, expected an integer") from None


class XmlView:
    """Read-only access to one element, with path-aware errors."""

    def __init__(self, elem: ET.Element, path: str | None = None, subject: str = "") -> None:
        self.elem = elem
        self.xpath = path or elem.tag
        self.subject = subject

    # -- raw lookups -------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return self.opt(name) is not None

    def opt(self, name: str) -> str | None:
        """Text of a child (``A/B`` paths allowed); None when absent or empty."""
        child = self.elem.find(name)
        if child is None or child.text is None:
            return None
        text = child.text.strip()
        return text or None

    @overload
    def text(self, name: str) -> str: ...
    @overload
    def text(self, name: str, default: str) -> str: ...
    @overload
    def text(self, name: str, default: None) -> str | None: ...
    def text(self, name: str, default: str | _Missing | None = _MISSING) -> str | None:
        value = self.opt(name)
        if value is not None:
            return value
        if isinstance(default, _Missing):
            raise MissingAttribute(f"{self.xpath}/{name}", subject=self.subject)
        return default

    def int(self, name: str, default: int | _Missing = _MISSING) -> int:
        value = self.opt(name)
        if value is None:
            if isinstance(default, _Missing):
                raise MissingAttribute(f"{self.xpath}/{name}", subject=self.subject)
            return default
        return to_int(value, where=f"{self.xpath}/{name}")

    def bool(self, name: str, default: builtins.bool | _Missing = _MISSING) -> builtins.bool:
        value = self.opt(name)
        if value is None:
            if isinstance(default, _Missing):
                raise MissingAttribute(f"{self.xpath}/{name}", subject=self.subject)
            return default
        return to_bool(value, where=f"{self.xpath}/{name}")

    def child(self, name: str, cls: type[V], *, required: builtins.bool = True) -> V:
        elem = self.elem.find(name)
        if elem is None:
            if required:
                raise MissingAttribute(f"{self.xpath}/{name}", subject=self.subject)
            elem = ET.Element(name.rsplit("/", 1)[-1])
        return cls(elem, f"{self.xpath}/{name}", self.subject)

    def children(self, name: str, cls: type[V]) -> Iterator[V]:
        for i, elem in enumerate(self.elem.findall(name)):
            yield cls(elem, f"{self.xpath}/{name}[{i}]", self.subject)


class Template(XmlView):
    """An OpenNebula TEMPLATE: upper-case attribute names, vector attributes as child elements."""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.opt(name.upper()) or default

    def vectors(self, name: str) -> Iterator[Template]:
        return self.children(name.upper(), Template)

    def with_values(self: V, values: dict[str, str]) -> V:
        """A copy with ``values`` replacing single attributes (an empty value removes one);
        the document itself is never changed."""
        import copy

        elem = copy.deepcopy(self.elem)
        for name, value in values.items():
            for old in elem.findall(name.upper()):
                elem.remove(old)
            if value != "":
                ET.SubElement(elem, name.upper()).text = value
        return type(self)(elem, self.xpath, self.subject)

    def as_dict(self) -> dict[str, str]:
        """Single-valued attributes only (vectors are skipped)."""
        out: dict[str, str] = {}
        for child in self.elem:
            if len(child) == 0 and child.text is not None and child.text.strip():
                out[child.tag] = child.text.strip()
        return out


class _WithTemplate(XmlView):
    @property
    def template(self) -> Template:
        return self.child("TEMPLATE", Template, required=False)


# -- declarative fields: ``id = integer("ID")`` instead of a property per attribute -----------

T = TypeVar("T")


class Field(Generic[T]):
    """A read-only attribute of a view, computed from one child element on each access."""

    def __init__(self, tag: str, read: Callable[[XmlView, str], T]) -> None:
        self.tag = tag
        self.read = read

    @overload
    def __get__(self, obj: None, owner: type) -> Field[T]: ...
    @overload
    def __get__(self, obj: XmlView, owner: type) -> T: ...
    def __get__(self, obj: XmlView | None, owner: type) -> Field[T] | T:
        return self if obj is None else self.read(obj, self.tag)


def text(tag: str) -> Field[str]:
    """Required text: a missing or empty element is a MissingAttribute error."""
    return Field(tag, lambda v, t: v.text(t))


def text_or(tag: str, default: str) -> Field[str]:
    return Field(tag, lambda v, t: v.text(t, default))


def optional(tag: str) -> Field[str | None]:
    return Field(tag, lambda v, t: v.opt(t))


def integer(tag: str) -> Field[int]:
    return Field(tag, lambda v, t: v.int(t))


def optional_int(tag: str) -> Field[int | None]:
    return Field(tag, lambda v, t: v.int(t) if v.has(t) else None)


def flag(tag: str, default: bool) -> Field[bool]:
    return Field(tag, lambda v, t: v.bool(t, default))
