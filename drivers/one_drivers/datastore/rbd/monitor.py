"""DS ``monitor``: USED_MB / TOTAL_MB / FREE_MB of the datastore's pool.

One ``df detail`` monitor command per call: no per-image scans (upstream's per-image monitoring
once took a cluster from 2-8k to 60k ops, OpenNebula/one PR #75). Quotas count: free space is what
the quota still allows when that is less than what the cluster has (OpenNebula/one#1232, #6564).
With EC_POOL_NAME the data lives in the EC pool, so its space is what counts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from one_drivers.ceph.session import CephAccess, CephSession
from one_drivers.core.contract import Call
from one_drivers.core.errors import NotFound

MIB = 1024 * 1024


class Capacity(NamedTuple):
    used_mb: int
    total_mb: int
    free_mb: int

    def render(self) -> str:
        return f"USED_MB={self.used_mb}\nTOTAL_MB={self.total_mb}\nFREE_MB={self.free_mb}\n"


def pool_stats(df: dict[str, Any], name: str) -> dict[str, Any]:
    for pool in df.get("pools", []):
        if pool.get("name") == name:
            stats: dict[str, Any] = pool.get("stats", {})
            stats.setdefault("quota_bytes", pool.get("quota_bytes", 0))
            return stats
    raise NotFound(f"Ceph pool {name!r} does not exist",
                   hint="create it or fix POOL_NAME / EC_POOL_NAME")


def capacity(df: dict[str, Any], pool: str, data_pool: str | None = None) -> Capacity:
    """Quota-aware capacity from ``df detail`` (Nautilus+ reports ``stored``)."""
    meta = pool_stats(df, pool)
    data = pool_stats(df, data_pool) if data_pool else meta
    used = int(meta.get("stored", meta.get("bytes_used", 0)))
    if data_pool:
        used += int(data.get("stored", data.get("bytes_used", 0)))
    free = int(data.get("max_avail", 0))
    quota = int(data.get("quota_bytes") or 0)
    if quota:
        free = min(free, max(quota - used, 0))
    used_mb, free_mb = used // MIB, free // MIB
    return Capacity(used_mb, used_mb + free_mb, free_mb)  # so that USED + FREE == TOTAL


def monitor(call: Call) -> str:
    settings = call.settings.over(call.doc.datastore.template)
    access = CephAccess.from_settings(settings)
    with CephSession(access, call.deadline, subject=call.subject,
                     call_timeout=settings.float("CEPH_CALL_TIMEOUT", 30)) as ceph:
        df = ceph.mon_command({"prefix": "df", "detail": "detail"}, "the pool usage query")
    return capacity(df, access.pool, access.data_pool).render()
