"""Forecast keys of MONITOR_HOST and MONITOR_VM: the trend line, the rates, when they appear."""

from __future__ import annotations

import base64

import pytest

from one_drivers.im.libvirt import probes
from one_drivers.im.libvirt.forecast import Forecaster, predict


def keys(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_the_least_squares_line_ahead_never_below_zero():
    assert predict([(0, 10), (60, 20), (120, 30)], 420) == pytest.approx(80)
    assert predict([(0, 5), (60, 5), (120, 5)], 10_000) == pytest.approx(5)
    assert predict([(0, 30), (60, 20), (120, 10)], 1000) == 0.0, "a falling trend stops at 0"


def test_host_forecasts_come_with_three_points_and_rates_with_two_samples():
    f = Forecaster(period=300, spacing=60)
    first = f.host("HYPERVISOR=kvm\nFREECPU=100\nUSEDCPU=100\nNETRX=1000\nNETTX=0", 0.0)
    assert "FORECAST" not in first and "NETRX_BW" not in first, "nothing to tell from one"
    second = keys(f.host("FREECPU=90\nUSEDCPU=110\nNETRX=7000\nNETTX=600", 60.0))
    assert float(second["NETRX_BW"]) == pytest.approx(100) and "FREECPU_FORECAST" not in second
    # a sample within the spacing replaces the newest point: still two points
    assert "FREECPU_FORECAST" not in f.host("FREECPU=85\nUSEDCPU=115\nNETRX=7000", 90.0)
    third = keys(f.host("FREECPU=70\nUSEDCPU=130\nNETRX=13000\nNETTX=600", 150.0))
    assert float(third["FREECPU_FORECAST"]) < 70 < float(third["USEDCPU_FORECAST"])
    assert "NETRX_BW_FORECAST" not in third, "rates start a sample later: two points so far"
    fourth = keys(f.host("FREECPU=60\nUSEDCPU=140\nNETRX=19000\nNETTX=600", 210.0))
    assert "NETRX_BW_FORECAST" in fourth and "HYPERVISOR_FORECAST" not in fourth


def test_vm_forecasts_inside_each_monitor_and_gone_vms_forgotten():
    f = Forecaster(period=300, spacing=1)
    for t in range(3):
        doms = [probes.Domain(1, "u1", "one-1", "RUNNING",
                              {"cpu.time": 1e9 * t, "balloon.rss": 1000 + t, "net.count": 1,
                               "net.0.rx.bytes": 100 * t})]
        text, _ = probes.monitor_vm(doms, {"u1": [1e9 * (t - 1), t - 1.0]} if t else {},
                                    float(t))
        text = f.vms(text, float(t))
    monitor = keys(base64.b64decode(text.split('MONITOR="')[1].split('"')[0]).decode())
    assert monitor["MEMORY_FORECAST"] == '"1302.00"', "1000 + 1 a second, 300 s ahead"
    assert monitor["NETRX_BW"] == '"100.00"' and "CPU_FORECAST" in monitor
    f.vms("", 3.0)
    assert "u1" not in f.series, "a VM that went is forgotten"
