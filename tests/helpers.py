"""Test helpers: oned-shaped documents and running installed remotes as OpenNebula does."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from one_drivers.lab.documents import ds_doc, elements, lab_ds_template

__all__ = [
    "allocated",
    "ds_doc",
    "elements",
    "lab_ds_template",
    "last_line",
    "rbd_names",
    "read_image",
    "replayable",
    "run_remote",
    "trash_names",
]


def run_remote(remotes: Path, action: str, argv: list[str], stdin: str | bytes, *,
               base64_stdin: bool = True, timeout: float = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    if base64_stdin:
        data = base64.b64encode(data)
    proc = subprocess.run([str(remotes / action), *argv], input=data, capture_output=True,
                          timeout=timeout, check=False, env=env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def rbd_names(ioctx: Any) -> set[str]:
    import rbd

    return set(rbd.RBD().list(ioctx))


def trash_names(ioctx: Any) -> set[str]:
    import rbd

    return {e["name"] for e in rbd.RBD().trash_list(ioctx)}


@contextlib.contextmanager
def admin_pool(env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    """(cluster, ioctx of the lab's pool) as client.admin of the cluster ``env`` describes, to
    check effects in Ceph."""
    import rados

    cluster = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    try:
        ioctx = cluster.open_ioctx(env["ONE_LAB_CEPH_POOL"])
        try:
            yield cluster, ioctx
        finally:
            ioctx.close()
    finally:
        cluster.shutdown()


def read_image(ioctx: Any, name: str, snapshot: str | None = None) -> bytes:
    import rbd

    with rbd.Image(ioctx, name, snapshot=snapshot, read_only=True) as image:
        return bytes(image.read(0, image.size()))


def allocated(ioctx: Any, name: str) -> int:
    """Bytes allocated in the image itself (a clone's parent data not counted)."""
    import rbd

    total = 0

    def count(offset: int, length: int, exists: bool) -> None:
        nonlocal total
        if exists:
            total += length

    with rbd.Image(ioctx, name, read_only=True) as image:
        image.diff_iterate(0, image.size(), None, count, include_parent=False)
    return total


def replayable(machine: type, label: str) -> int:
    """Give a Hypothesis state machine a seed that can be replayed, and say it first: on the
    test's stderr and in the lab directory's ``hypothesis-seeds.log`` (which survives even a
    crash of the process). ``ONE_DRIVERS_HYPOTHESIS_SEED`` replays one."""
    import random
    import sys
    import time

    from hypothesis import seed

    value = int(os.environ.get("ONE_DRIVERS_HYPOTHESIS_SEED") or random.randrange(1 << 32))
    line = (f"{label}: hypothesis seed {value} (replay with "
            f"ONE_DRIVERS_HYPOTHESIS_SEED={value})")
    sys.stderr.write(line + "\n")
    lab = os.environ.get("ONE_DRIVERS_LAB_DIR")
    if lab and os.path.isdir(lab):
        with open(os.path.join(lab, "hypothesis-seeds.log"), "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    seed(value)(machine)
    return value


def purge_image(ioctx: Any, name: str | None = None, *, image_id: str | None = None) -> None:
    """Remove a test's image (by name, or a trashed one by id) with its snapshots, protected
    ones included; gone already is fine."""
    import rbd

    try:
        with rbd.Image(ioctx, name, image_id=image_id) as image:
            for snap in list(image.list_snaps()):
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
        if image_id is None:
            rbd.RBD().remove(ioctx, name)
        else:
            rbd.RBD().trash_remove(ioctx, image_id, True)
    except rbd.Error:
        pass


def id_token(lab_env: dict[str, str], user: str, *, client: str = "opennebula") -> str:
    """An ID token the lab's IdP issues to ``client`` for ``user`` through its token endpoint
    (the password grant; a Demo user's password is its login)."""
    import base64
    import json
    import ssl
    import urllib.parse
    import urllib.request

    key = "CLIENT" if client == "opennebula" else "OTHER_CLIENT"
    secret = lab_env[f"ONE_LAB_IDP_{key}_SECRET"]
    body = urllib.parse.urlencode({"grant_type": "password", "username": user,
                                   "password": user, "scope": "openid profile email"}).encode()
    request = urllib.request.Request(  # noqa: S310 - the lab IdP's https endpoint
        f"{lab_env['ONE_LAB_IDP_ISSUER']}/oauth2/token", data=body)
    request.add_header("Authorization", "Basic " + base64.b64encode(
        f"{client}:{secret}".encode()).decode())
    context = ssl.create_default_context(cafile=lab_env["ONE_LAB_IDP_CA"])
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:  # noqa: S310
        return str(json.load(answer)["id_token"])


def oidc_authenticate(remotes: Path, values: dict[str, str], token: str,
                      user: str) -> subprocess.CompletedProcess[str]:
    """``auth/oidc/authenticate`` as one_auth_mad runs it, with ``values`` as the driver's
    settings (on top of the shipped oidc.conf) and the token as the password."""
    from one_drivers.core.xmlview import escape

    conf = remotes / "etc" / "auth" / "oidc" / "oidc.conf"
    base = conf.read_text().split("\n# test\n")[0]
    conf.write_text(base + "\n# test\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    doc = (f"<AUTHN><USERNAME>{escape(user)}</USERNAME><PASSWORD>-</PASSWORD>"
           f"<SECRET>{escape(token)}</SECRET></AUTHN>")
    return subprocess.run([str(remotes / "auth" / "oidc" / "authenticate")], input=doc,
                          capture_output=True, text=True, timeout=60, check=False)
