"""The action registry: which drivers exist and which actions each implements.

A driver package declares a :class:`Driver` in its ``__init__`` with no backend imports; action
functions are named as ``"module:function"`` strings and imported only when that action runs.
The shims, the oned.conf registration and ``python -m one_drivers`` are all generated from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from one_drivers.core.contract import Call, signature_for
from one_drivers.core.errors import UsageError

# family -> driver name -> package. Adding a driver means adding a line here.
PACKAGES: dict[str, dict[str, str]] = {
    "datastore": {"rbd": "one_drivers.datastore.rbd",
                  "rbdbackup": "one_drivers.datastore.rbdbackup"},
    "tm": {"rbd": "one_drivers.tm.rbd"},
    "vnm": {"ovsdb": "one_drivers.vnm.ovsdb"},
    "vmm": {"libvirt": "one_drivers.vmm.libvirt"},
    "im": {"libvirt": "one_drivers.im.libvirt"},
    "market": {"rbd": "one_drivers.market.rbd"},
    "auth": {"ldap": "one_drivers.auth.ldap", "oidc": "one_drivers.auth.oidc"},
    "ipam": {"kea": "one_drivers.ipam.kea"},
}

ActionFn = Callable[[Call], "str | None"]


class Driver:
    """A driver's declaration (a plain class: dataclasses cost start-up time)."""

    def __init__(
        self,
        *,
        family: str,
        name: str,
        description: str,
        actions: Mapping[str, str],  # action name -> "module:function"
        # KEY -> (default value, comment); written to the driver config file by install-remotes
        defaults: Mapping[str, tuple[str, str]] | None = None,
        # attributes of its oned.conf block (DS_MAD_CONF, TM_MAD_CONF, VN_MAD_CONF, VM_MAD, ...)
        oned_conf: Mapping[str, str] | None = None,
        # "module:function" deciding where an action runs: router(call, action_fn) -> output
        router: str | None = None,
        # oned.conf single-line attributes the driver needs (VNET_RESTRICTED_ATTR -> values)
        restricted: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.family = family
        self.name = name
        self.description = description
        self.actions = dict(actions)
        self.defaults = dict(defaults or {})
        self.oned_conf = dict(oned_conf or {})
        self.router = router
        self.restricted = {k: list(v) for k, v in (restricted or {}).items()}
        for action in self.actions:
            signature_for(family, action)  # an action OpenNebula never calls fails at import

    def __repr__(self) -> str:
        return f"Driver({self.family}/{self.name})"

    def resolve(self, action: str) -> ActionFn:
        target = self.actions.get(action)
        if target is None:
            raise UsageError(
                f"driver {self.family}/{self.name} has no action {action!r}",
                hint=f"it implements: {', '.join(sorted(self.actions))}",
            )
        module_name, _, fn_name = target.partition(":")
        module = importlib.import_module(module_name)
        fn: Any = getattr(module, fn_name)
        return fn  # type: ignore[no-any-return]

    def run(self, action: str, call: Call) -> str | None:
        fn = self.resolve(action)
        if self.router is None:
            return fn(call)
        module_name, _, fn_name = self.router.partition(":")
        route: Any = getattr(importlib.import_module(module_name), fn_name)
        out: str | None = route(call, fn)
        return out

    def default_values(self) -> dict[str, str]:
        return {k: v for k, (v, _) in self.defaults.items()}


def get_driver(family: str, name: str) -> Driver:
    family_pkgs = PACKAGES.get(family)
    if family_pkgs is None:
        raise UsageError(f"unknown driver family {family!r}",
                         hint=f"one-drivers provides: {', '.join(sorted(PACKAGES))}")
    package = family_pkgs.get(name)
    if package is None:
        raise UsageError(f"unknown {family} driver {name!r}",
                         hint=f"one-drivers provides: {', '.join(sorted(family_pkgs))}")
    driver: Driver = importlib.import_module(package).DRIVER
    return driver


def all_drivers() -> list[Driver]:
    return [get_driver(f, n) for f, names in PACKAGES.items() for n in names]
