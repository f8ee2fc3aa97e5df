"""Configuration layers: defaults in code, then the driver's config file, then the template.

The most specific wins. The config file uses upstream's rc style (``KEY=value``, ``#`` comments,
optional quotes) so operators can read it like ``remotes/etc/datastore/ceph/ceph.conf``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from one_drivers.core.errors import BadInput, MissingAttribute
from one_drivers.core.xmlview import Template, to_bool, to_int

DEFAULT_REMOTES = "/var/lib/one/remotes"


def config_path(family: str, driver: str, remotes: str | os.PathLike[str] | None = None) -> str:
    """``<remotes>/etc/<family>/<driver>/<driver>.conf`` (mirrors upstream's layout)."""
    base = os.fspath(remotes or os.environ.get("ONE_DRIVERS_REMOTES", DEFAULT_REMOTES))
    return os.path.join(base, "etc", family, driver, f"{driver}.conf")


def parse_rc(text: str, *, source: str = "config") -> dict[str, str]:
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise BadInput(f"{source} line {lineno} is not KEY=value: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.upper()] = value
    return values


def load_file(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_rc(fh.read(), source=path)
    except FileNotFoundError:
        return {}


def load_root_file(path: str) -> dict[str, str]:
    """A configuration root reads: only from a file that only root can change."""
    from one_drivers.core.safefs import read_trusted_file

    data = read_trusted_file(path, uid=0)
    return parse_rc(data.decode("utf-8"), source=path) if data else {}


def render_rc(defaults: Mapping[str, tuple[str, str]], header: str) -> str:
    """A config file documenting every default (``KEY -> (value, comment)``)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, (value, comment) in defaults.items():
        lines.append("")
        lines.extend(f"# {c}" for c in comment.splitlines())
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


class Settings:
    """Read-only layered lookup. ``subject`` names the object in errors."""

    def __init__(self, layers: Iterable[Mapping[str, str]], subject: str = "") -> None:
        self._layers = [dict(layer) for layer in layers]  # least specific first
        self.subject = subject

    def over(self, template: Template | Mapping[str, str] | None) -> Settings:
        """A new Settings with ``template`` as the most specific layer."""
        if template is None:
            return self
        layer = template.as_dict() if isinstance(template, Template) else dict(template)
        return Settings([*self._layers, layer], self.subject)

    def flat(self) -> dict[str, str]:
        """Every key with the value :meth:`get` gives it (the most specific layer's)."""
        out: dict[str, str] = {}
        for layer in self._layers:
            out.update({k: v for k, v in layer.items() if v not in (None, "")})
        return out

    def get(self, key: str, default: str | None = None) -> str | None:
        for layer in reversed(self._layers):
            value = layer.get(key.upper())
            if value not in (None, ""):
                return value
        return default

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise MissingAttribute(key, subject=self.subject,
                                   hint="set it in the template or the driver configuration")
        return value

    def int(self, key: str, default: int) -> int:
        value = self.get(key)
        return default if value is None else to_int(value, where=key)

    def float(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise BadInput(f"{key} is {value!r}, expected a number",
                           subject=self.subject) from None

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key)
        return default if value is None else to_bool(value, where=key)
