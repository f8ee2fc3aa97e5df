"""The operator CLI: ``one-drivers install-remotes | oned-conf | lab | demo | market``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

# doctor's check names (doctor.CHECKS, which a unit test holds this to; importing the module
# here would cost every command its start-up)
DOCTOR_CHECKS = ("remotes", "registration", "oned", "ipam", "libvirt", "ovs")


def cmd_install_remotes(args: argparse.Namespace) -> int:
    from one_drivers.core.remotes import install

    report = install(Path(args.dest), python=args.python)
    for path in report.written:
        print(f"wrote {path}")
    for path in report.removed:
        print(f"removed {path}")
    for path in report.kept_config:
        print(f"kept {path} (operator-edited configuration is never overwritten)")
    print(f"{len(report.written)} written, {len(report.unchanged)} unchanged, "
          f"{len(report.removed)} removed")
    return 0


def cmd_oned_conf(args: argparse.Namespace) -> int:
    from one_drivers.core.oned_conf import registration, render, render_json

    if not args.merge:
        sys.stdout.write(render_json() if args.json else render())
        return 0
    from one_drivers.core.conf_merge import merge_file
    from one_drivers.core.errors import DriverError

    for path in args.merge:
        try:
            changed = merge_file(path, registration(), check=args.check)
        except (DriverError, OSError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 1)
        print(f"{path}: {'changed' if changed else 'unchanged'}"
              + (" (check mode: nothing written)" if args.check and changed else ""))
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from one_drivers.lab.lab import Lab
    from one_drivers.lab.proc import LabError

    if args.lab_command in ("ceph-up", "ceph-env"):
        return cmd_lab_ceph(args)
    lab = Lab(Path(args.dir) if args.dir else None)
    if args.lab_command == "env":
        for key, value in lab.env().items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.lab_command == "status":
        status = lab.status()
        print(json.dumps(status, indent=2))
        return 0 if status["healthy"] else 1
    if args.lab_command == "down":
        stopped = lab.down()
        print(f"lab down: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")
        return 0
    t = time.monotonic()
    try:
        timings = lab.up()
    except LabError as exc:
        print(f"lab up failed: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - t
    started = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) or "nothing (all healthy)"
    print(f"lab up in {took:.1f}s (started: {started}); state in {lab.root}")
    print(f"use it with: eval \"$(one-drivers lab env{' --dir ' + args.dir if args.dir else ''})\"")
    return 0


def cmd_lab_ceph(args: argparse.Namespace) -> int:
    """Only the lab's one-node Ceph, listening on ``--address`` (the Molecule scenarios' cluster
    container). Idempotent: a healthy cluster is left as it is."""
    from one_drivers.lab.ceph import CephLab
    from one_drivers.lab.proc import LabError

    ceph = CephLab(Path(args.dir or "/var/tmp/one-drivers-ceph"), args.port_offset,
                   args.address)
    if args.lab_command == "ceph-up" and not (ceph.running() and ceph.healthy()):
        try:
            ceph.up()
            ceph.wait_healthy(timeout=120)
        except LabError as exc:
            print(f"ceph up failed: {exc}", file=sys.stderr)
            return 1
        print("ceph: started")
    elif args.lab_command == "ceph-up":
        print("ceph: already healthy")
    for key, value in ceph.env().items():
        print(f"{key}={value}")
    return 0


def cmd_trash_purge(args: argparse.Namespace) -> int:
    """Purge expired RBD trash entries; errors follow the drivers' contract (one line, codes)."""
    from one_drivers.ceph.pool import rbd_pool
    from one_drivers.ceph.rbd_ops import ceph_errors
    from one_drivers.ceph.trash import purge
    from one_drivers.core.config import Settings, config_path, load_file
    from one_drivers.core.errors import DriverError
    from one_drivers.core.registry import get_driver
    from one_drivers.core.retry import Deadline

    driver = get_driver("datastore", "rbd")
    cli = {k: v for k, v in (("POOL_NAME", args.pool), ("CEPH_CONF", args.conf),
                             ("CEPH_USER", args.user), ("CEPH_KEY", args.keyring)) if v}
    settings = Settings([driver.default_values(),
                         load_file(config_path("datastore", "rbd", args.remotes)), cli],
                        subject=f"pool {args.pool or 'from the rbd driver configuration'}")
    try:
        with rbd_pool(settings, Deadline(args.timeout, "trash-purge"), settings.subject) as pool, \
                ceph_errors("purging the RBD trash", settings.subject):
            counts = purge(pool.ioctx, cluster=pool.cluster)
    except DriverError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    print(f"pool {pool.name}: {counts['removed']} purged, {counts['not_expired']} not expired "
          f"yet, {counts['has_clones']} waiting for their clones")
    return 0


def cmd_run_transfer(args: argparse.Namespace) -> int:
    from one_drivers.core.config import DEFAULT_REMOTES
    from one_drivers.core.errors import DriverError
    from one_drivers.tm.transfer import run_transfer

    try:
        return run_transfer(Path(args.file), Path(args.remotes or DEFAULT_REMOTES),
                            timeout=args.timeout)
    except DriverError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code


def cmd_ovs_reconcile(args: argparse.Namespace) -> int:
    """Re-apply every running VM's NICs and remove what we own that no VM needs."""
    from one_drivers.core.config import Settings, config_path, load_file, load_root_file
    from one_drivers.core.errors import DriverError
    from one_drivers.core.registry import get_driver
    from one_drivers.vnm.ovsdb.host import resolved
    from one_drivers.vnm.ovsdb.privileged import ROOT_CONF
    from one_drivers.vnm.ovsdb.reconcile import reconcile

    driver = get_driver("vnm", "ovsdb")
    try:
        # root (the service) reads only its own configuration, never a remotes tree oneadmin owns
        configured = (load_root_file(args.config or ROOT_CONF) if os.geteuid() == 0
                      else load_file(config_path("vnm", "ovsdb", args.remotes)))
        settings = resolved(Settings([driver.default_values(), configured],
                                     subject="this host's Open vSwitch"))
        report = reconcile(settings, dry_run=args.dry_run, grace=args.grace)
    except DriverError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    for line in report.skipped:
        print(f"skipped {line}", file=sys.stderr)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{'checked' if args.dry_run else 're-applied'} {report.nics} NICs of {report.vms} "
          f"running VMs; {verb} {report.removed_ports} stale ports, flows of "
          f"{report.removed_flows} stale NICs, bridges: {', '.join(report.removed_bridges) or '-'}")
    return 1 if report.skipped else 0


def cmd_ipam_reconcile(args: argparse.Namespace) -> int:
    """Compare oned's leases of kea ARs with Kea and PowerDNS; --fix repairs the difference."""
    from one_drivers.core.config import Settings, config_path, load_file
    from one_drivers.core.errors import DriverError
    from one_drivers.core.registry import get_driver
    from one_drivers.core.retry import Deadline
    from one_drivers.ipam.kea.reconcile import reconcile

    driver = get_driver("ipam", "kea")
    try:
        settings = Settings([driver.default_values(),
                             load_file(config_path("ipam", "kea", args.remotes))],
                            subject="the kea IPAM")
        report = reconcile(settings, Deadline(args.timeout, "ipam reconcile"), fix=args.fix)
    except DriverError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    for line in report:
        print(line)
    state = "fixed" if args.fix else "found (report only; --fix repairs them)"
    print(f"{len(report)} difference(s) {state}" if report else "oned, Kea and PowerDNS agree")
    return 1 if report and not args.fix else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check what the drivers need on this node; one line per problem, non-zero when any."""
    from one_drivers.doctor import CHECKS, Problem, default_node, diagnose, probe_ceph

    if args.probe_ceph:  # run over ssh by a front-end's doctor: the access comes on stdin
        found = probe_ceph(sys.stdin.buffer.read(1 << 16), args.timeout)
        for problem in found:
            print(problem)
        return 1 if found else 0
    node = default_node(args.role, args.remotes, set(args.skip or []), args.timeout)
    findings = diagnose(node)
    for finding in findings:
        print(finding)
    problems = [f for f in findings if isinstance(f, Problem)]
    ran = [n for n, (roles, _) in CHECKS.items() if node.role in roles and n not in node.skip]
    if not problems:
        print(f"doctor: {args.role}: all good ({', '.join(ran)})")
    return 1 if problems else 0


def cmd_market_import_file(args: argparse.Namespace) -> int:
    """An appliance file into an rbd market; errors follow the drivers' contract."""
    import base64

    from one_drivers.core.errors import DriverError
    from one_drivers.core.retry import Deadline
    from one_drivers.market.rbd.catalogue import (
        Appliance,
        fetch_market,
        import_file,
        market_settings,
    )

    try:
        vmtemplate = ""
        if args.vmtemplate:
            with open(args.vmtemplate, "rb") as fh:
                vmtemplate = base64.b64encode(fh.read(1 << 20)).decode()
        market = fetch_market(args.market, args.timeout)
        settings = market_settings(market, args.remotes)
        app = Appliance(args.name, args.version or "", args.description or "",
                        args.publisher or "", args.tags or "", vmtemplate)
        out = import_file(market, args.source, app, settings,
                          Deadline(args.timeout_total, "market import-file"))
    except (DriverError, OSError) as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code if isinstance(exc, DriverError) else 1
    for key, value in out.items():
        print(f'{key}="{value}"')
    if not settings.bool("LIST_APPS", False):
        print(f"note: marketplace {args.market} lists apps only with LIST_APPS=yes",
              file=sys.stderr)
    return 0


def cmd_oidc_login(args: argparse.Namespace) -> int:
    """Single sign-on for the CLI: a token by the device flow, written to ONE_AUTH."""
    import os

    from one_drivers.auth.oidc.device import login, write_one_auth
    from one_drivers.core.errors import DriverError

    path = args.one_auth or os.environ.get("ONE_AUTH") or os.path.expanduser("~/.one/one_auth")
    try:
        name, token = login(args.issuer, args.client_id, scope=args.scope,
                            ca_file=args.ca_file, username_claim=args.username_claim,
                            show=lambda line: print(line, file=sys.stderr, flush=True))
        write_one_auth(path, name, token)
    except (DriverError, OSError) as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code if isinstance(exc, DriverError) else 1
    print(f"signed on as {name}: {path}", file=sys.stderr)
    return 0


def cmd_install_sudo(args: argparse.Namespace) -> int:
    from one_drivers.core.errors import DriverError
    from one_drivers.vnm.ovsdb.privilege import install_sudo

    try:
        changed = install_sudo(args.user, entry=args.entry, config=args.config,
                               sudoers=args.sudoers)
    except DriverError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    print(f"changed: {' '.join(changed)}" if changed else "unchanged")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from one_drivers.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="one-drivers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("install-remotes", help="write the remotes tree (shims and defaults)")
    p.add_argument("dest", help="OpenNebula's remotes directory, e.g. /var/lib/one/remotes")
    p.add_argument("--python", help="interpreter the shims run (default: this one)")
    p.set_defaults(func=cmd_install_remotes)

    p = sub.add_parser("oned-conf", help="print the oned.conf / monitord.conf registration")
    p.add_argument("--json", action="store_true", help="structured, for configuration tools")
    p.add_argument("--merge", nargs="+", metavar="FILE",
                   help="merge into these oned.conf / monitord.conf files in place, keeping the "
                        "operator's other settings; prints changed or unchanged per file")
    p.add_argument("--check", action="store_true", help="with --merge: only say what would change")
    p.set_defaults(func=cmd_oned_conf)

    p = sub.add_parser("lab", help="the embedded one-machine lab")
    p.add_argument("lab_command", choices=["up", "down", "status", "env", "ceph-up", "ceph-env"])
    p.add_argument("--dir", help="state directory (default $ONE_DRIVERS_LAB_DIR or "
                                 "/var/tmp/one-drivers-lab)")
    p.add_argument("--address", default="127.0.0.1", help="ceph-up: where Ceph listens")
    p.add_argument("--port-offset", type=int, default=0, help="ceph-up: added to its ports")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("rbd", help="Ceph RBD maintenance")
    rbd_sub = p.add_subparsers(dest="rbd_command", required=True)
    p = rbd_sub.add_parser("trash-purge", help="remove expired trash entries (run from a timer)")
    p.add_argument("--pool", help="default: POOL_NAME of the rbd driver configuration")
    p.add_argument("--conf", help="ceph.conf (default: CEPH_CONF of the configuration)")
    p.add_argument("--user", help="cephx user (default: CEPH_USER of the configuration)")
    p.add_argument("--keyring", help="keyring file (default: CEPH_KEY of the configuration)")
    p.add_argument("--remotes", help="OpenNebula remotes dir holding the driver configuration")
    p.add_argument("--timeout", type=float, default=300, help="seconds the purge may take")
    p.set_defaults(func=cmd_trash_purge)

    p = sub.add_parser("tm", help="transfer manager tools")
    tm_sub = p.add_subparsers(dest="tm_command", required=True)
    p = tm_sub.add_parser("run-transfer", help="run an oned transfer file line by line")
    p.add_argument("file", help="transfer file (transfer.<seq>.<op>)")
    p.add_argument("--remotes", help="remotes tree with the TM scripts (default: "
                                      "/var/lib/one/remotes)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per line")
    p.set_defaults(func=cmd_run_transfer)

    p = sub.add_parser("ovs", help="Open vSwitch maintenance on a hypervisor")
    ovs_sub = p.add_subparsers(dest="ovs_command", required=True)
    p = ovs_sub.add_parser("reconcile", help="re-apply running VMs' NICs after an OVS restart "
                                             "and remove owned ports and flows of gone VMs")
    p.add_argument("--remotes", help="not as root: remotes tree with the driver's config "
                                     "(default: ONE_DRIVERS_REMOTES or /var/lib/one/remotes)")
    p.add_argument("--config", help="as root: the configuration root reads (default: "
                                    "/etc/one-drivers/vnm-ovsdb.conf)")
    p.add_argument("--dry-run", action="store_true", help="report only")
    p.add_argument("--grace", type=float, default=600,
                   help="seconds a VM none of whose taps exist keeps its ports, flows and state "
                        "(it may be being deployed); older, it is gone (default: 600)")
    p.set_defaults(func=cmd_ovs_reconcile)

    p = sub.add_parser("ipam", help="IPAM tools")
    ipam_sub = p.add_subparsers(dest="ipam_command", required=True)
    p = ipam_sub.add_parser("reconcile", help="compare oned's leases of kea address ranges with "
                                              "Kea's leases and PowerDNS's records")
    p.add_argument("--remotes", help="remotes tree with the driver's kea.conf (default: "
                                     "ONE_DRIVERS_REMOTES or /var/lib/one/remotes)")
    p.add_argument("--fix", action="store_true", help="repair the difference (oned is the "
                   "truth); without it, only report (exit 1 when there is any)")
    p.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    p.set_defaults(func=cmd_ipam_reconcile)

    p = sub.add_parser("doctor", help="check what the drivers need on this node (one line per "
                                      "problem, saying what to fix)")
    p.add_argument("--role", choices=("frontend", "host"), required=True)
    p.add_argument("--remotes", help="the remotes tree (default: /var/lib/one/remotes on a "
                                     "front-end, /var/tmp/one on a host)")
    p.add_argument("--skip", action="append", choices=DOCTOR_CHECKS,
                   help="leave a check out (repeatable)")
    p.add_argument("--timeout", type=float, default=15, help="seconds per service")
    p.add_argument("--probe-ceph", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("market", help="marketplace tools")
    market_sub = p.add_subparsers(dest="market_command", required=True)
    p = market_sub.add_parser("import-file", help="put an appliance file (raw or qcow2, local "
                                                  "or http) into an rbd marketplace's pool")
    p.add_argument("market", type=int, help="the marketplace's id (MARKET_MAD rbd)")
    p.add_argument("source", help="a file path or http(s):// URL")
    p.add_argument("--name", required=True, help="the app's name")
    p.add_argument("--version")
    p.add_argument("--description")
    p.add_argument("--publisher")
    p.add_argument("--tags")
    p.add_argument("--vmtemplate", help="a file with the app's VM template")
    p.add_argument("--remotes", help="OpenNebula remotes dir holding the driver configuration")
    p.add_argument("--timeout", type=float, default=15, help="seconds oned may take to answer")
    p.add_argument("--timeout-total", type=float, default=3600, help="seconds the import may "
                                                                      "take")
    p.set_defaults(func=cmd_market_import_file)

    p = sub.add_parser("auth", help="authentication tools")
    auth_sub = p.add_subparsers(dest="auth_command", required=True)
    p = auth_sub.add_parser("oidc-login", help="sign on with the identity provider (device "
                                               "flow) and write ONE_AUTH")
    p.add_argument("--issuer", required=True, help="the identity provider's issuer URL")
    p.add_argument("--client-id", required=True, help="OpenNebula's client id at the IdP")
    p.add_argument("--scope", default="openid profile groups")
    p.add_argument("--ca-file", help="CA bundle for the IdP's https")
    p.add_argument("--username-claim", default="preferred_username")
    p.add_argument("--one-auth", help="the file to write (default: $ONE_AUTH, ~/.one/one_auth)")
    p.set_defaults(func=cmd_oidc_login)

    p = sub.add_parser("install-sudo", help="hypervisor: the root-owned privileged VNM entry "
                                            "and the sudoers rule that lets USER run it")
    p.add_argument("--user", default="oneadmin", help="the driver user (default: oneadmin)")
    p.add_argument("--entry", help="where the entry goes (default: <venv>/libexec/"
                                   "one-drivers-vnm-privileged)")
    p.add_argument("--config", help="the configuration the entry reads as root (default: "
                                    "/etc/one-drivers/vnm-ovsdb.conf)")
    p.add_argument("--sudoers", default="/etc/sudoers.d/one-drivers", help="the sudoers file")
    p.set_defaults(func=cmd_install_sudo)

    p = sub.add_parser("demo", help="bring the lab up and run real actions end to end")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
