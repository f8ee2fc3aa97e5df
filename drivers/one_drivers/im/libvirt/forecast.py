"""The forecast keys OpenNebula 7 reads from MONITOR_HOST and MONITOR_VM (oned keeps the host's
as FREE_CPU_FORECAST, USED_MEMORY_FORECAST, NETRX_BW_FORECAST, ...; the one_drs scheduler plans
with them), and the bandwidth observations that go with them (NETRX_BW, DISKRDIOPS_BW, ...).

Upstream computes them with an optional machine-learning predictor over a local database of
past samples. Here the monitoring client, a long-running process, keeps the last LOOKBACK
seconds of samples of each series in memory (one point a minute at most) and answers the least
squares line through them, FORECAST_PERIOD seconds ahead, never below zero: what the next few
minutes look like from the last hour's trend. A series needs three points before it is
forecast; a restarted client starts again. Long-range forecasts (``*_FORECAST_FAR``, weeks of
history) are not produced.
"""

from __future__ import annotations

import base64
import re
from typing import NamedTuple

LOOKBACK = 3600.0
PERIOD = 300.0
MIN_POINTS = 3
SPACING = 60.0  # seconds between two points kept of one series


class Keys(NamedTuple):
    gauges: tuple[str, ...]
    rates: dict[str, str]  # counter -> its per-second rate


HOST = Keys(("FREECPU", "USEDCPU", "FREEMEMORY", "USEDMEMORY"),
            {"NETRX": "NETRX_BW", "NETTX": "NETTX_BW"})
VM = Keys(("CPU", "MEMORY"),
          {"NETRX": "NETRX_BW", "NETTX": "NETTX_BW", "DISKRDBYTES": "DISKRDBYTES_BW",
           "DISKWRBYTES": "DISKWRBYTES_BW", "DISKRDIOPS": "DISKRDIOPS_BW",
           "DISKWRIOPS": "DISKWRIOPS_BW"})
_PAIR = re.compile(r'^([A-Z_]+)="?([0-9.]+)"?$')


def predict(points: list[tuple[float, float]], at: float) -> float:
    """The least squares line through ``points`` (time, value), at time ``at``; >= 0."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0
    return max(0.0, mean_v + slope * (at - mean_t))


class Forecaster:
    def __init__(self, lookback: float = LOOKBACK, period: float = PERIOD,
                 spacing: float = SPACING) -> None:
        self.lookback, self.period, self.spacing = lookback, period, spacing
        self.series: dict[str, dict[str, list[tuple[float, float]]]] = {}
        self.counters: dict[str, dict[str, tuple[float, float]]] = {}

    def lines(self, entity: str, text: str, keys: Keys, now: float) -> list[tuple[str, float]]:
        """(key, value) to add to ``text`` (``KEY=value`` lines) of ``entity``: the rates
        observed since the last sample and the forecasts."""
        values = {m.group(1): float(m.group(2))
                  for m in map(_PAIR.match, text.splitlines()) if m}
        observed = {k: values[k] for k in keys.gauges if k in values}
        counters = self.counters.setdefault(entity, {})
        out: list[tuple[str, float]] = []
        for counter, rate in keys.rates.items():
            if counter not in values:
                continue
            before = counters.get(counter)
            counters[counter] = (values[counter], now)
            if before and now > before[1] and values[counter] >= before[0]:
                observed[rate] = (values[counter] - before[0]) / (now - before[1])
                out.append((rate, observed[rate]))
        series = self.series.setdefault(entity, {})
        for key, value in observed.items():
            points = [p for p in series.get(key, []) if p[0] >= now - self.lookback]
            if points and now - points[-1][0] < self.spacing:
                points[-1] = (now, value)  # one point a minute: the newest stands for it
            else:
                points.append((now, value))
            series[key] = points
            if len(points) >= MIN_POINTS:
                out.append((f"{key}_FORECAST", predict(points, now + self.period)))
        return out

    def host(self, text: str, now: float) -> str:
        extra = self.lines("host", text, HOST, now)
        return text + "".join(f"\n{k}={v:.2f}" for k, v in extra)

    def vms(self, text: str, now: float) -> str:
        """MONITOR_VM with each VM's MONITOR extended; VMs gone are forgotten."""
        seen = set()

        def extend(match: re.Match[str]) -> str:
            uuid = match.group("uuid")
            seen.add(uuid)
            monitor = base64.b64decode(match.group("monitor")).decode()
            extra = self.lines(uuid, monitor, VM, now)
            monitor += "".join(f'\n{k}="{v:.2f}"' for k, v in extra)
            return match.group(0).replace(match.group("monitor"),
                                          base64.b64encode(monitor.encode()).decode())

        out = re.sub(r'DEPLOY_ID="(?P<uuid>[^"]+)", MONITOR="(?P<monitor>[A-Za-z0-9+/=]*)"',
                     extend, text)
        for gone in set(self.series) - seen - {"host"}:
            self.series.pop(gone, None)
            self.counters.pop(gone, None)
        return out
