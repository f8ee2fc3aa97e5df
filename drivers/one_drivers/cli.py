"""The operator CLI: ``one-drivers install-remotes | oned-conf | lab | demo``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


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
    from one_drivers.core.oned_conf import render, render_json

    sys.stdout.write(render_json() if args.json else render())
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from one_drivers.lab.lab import Lab
    from one_drivers.lab.proc import LabError

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
    p.set_defaults(func=cmd_oned_conf)

    p = sub.add_parser("lab", help="the embedded one-machine lab")
    p.add_argument("lab_command", choices=["up", "down", "status", "env"])
    p.add_argument("--dir", help="state directory (default $ONE_DRIVERS_LAB_DIR or "
                                 "/var/tmp/one-drivers-lab)")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("demo", help="bring the lab up and run real actions end to end")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
