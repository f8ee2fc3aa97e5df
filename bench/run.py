"""``make bench``: run every benchmark and print its ratios (never asserted in tests)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_auth_ldap
import bench_auth_oidc
import bench_backup_rbd
import bench_ds_monitor
import bench_ds_rbd
import bench_im_libvirt
import bench_ipam_kea
import bench_market_rbd
import bench_startup
import bench_tm_rbd
import bench_vmm_libvirt
import bench_vnm_ovsdb


def main() -> int:
    results: dict[str, float] = {}
    for bench in (bench_startup, bench_ds_monitor, bench_ds_rbd, bench_tm_rbd,
                  bench_vnm_ovsdb, bench_vmm_libvirt, bench_im_libvirt, bench_backup_rbd,
                  bench_market_rbd, bench_auth_ldap, bench_auth_oidc, bench_ipam_kea):
        results.update(bench.main())
    print("\nsummary: " + ", ".join(f"{k}={v:.2f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
