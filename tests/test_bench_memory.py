"""invoke bench --memory, host side: the budget rule, the table, and the cell script's own parts."""

from __future__ import annotations

import runpy
import sys

import pytest
from rich.console import Console

from nnpack_toolchain import bench, bench_memory
from nnpack_toolchain.smoke import SCRIPTS

MiB = 1 << 20


def cell(network: str, policy: str, rss_mib: float, budget_mib: float | None = 100.0, **extra) -> dict:
    return {"kind": "memory", "network": network, "batch": 1, "policy": policy, "peak_rss_bytes": int(rss_mib * MiB),
            "memory_budget_bytes": None if budget_mib is None else int(budget_mib * MiB),
            "transform_bytes": 0, "settle_passes": 0, "settle_seconds": 0.0, "seconds": 0.5, **extra}


def render(table) -> str:
    console = Console(width=250, record=True)
    console.print(table)
    return console.export_text()


def test_auto_within_never_plus_the_budget_passes() -> None:
    records = [cell("vgg16", "never", 1400), cell("vgg16", "auto", 1500), cell("vgg16", "always", 1700)]
    assert bench_memory.budget_violations(records) == []  # 1500 <= 1400 + 100; always is not bounded


def test_auto_over_never_plus_the_budget_is_reported() -> None:
    records = [cell("resnet18", "never", 345), cell("resnet18", "auto", 1077)]
    (violation,) = bench_memory.budget_violations(records)
    assert violation == ("resnet18 batch 1: auto peaks at 1077 MiB, more than never's 345 MiB plus the 100 MiB budget")


def test_cells_of_other_networks_or_without_a_budget_are_not_compared() -> None:
    records = [cell("vgg16", "never", 100), cell("alexnet", "auto", 900),
               cell("resnet18", "never", 100), cell("resnet18", "auto", 900, budget_mib=None)]
    assert bench_memory.budget_violations(records) == []


def test_memory_table_shows_the_difference_and_the_tuning_cost() -> None:
    records = [cell("resnet18", "never", 300, seconds=0.040),
               cell("resnet18", "always", 320),
               cell("resnet18", "auto", 350, settle_passes=31, settle_seconds=4.25, transform_bytes=12 * MiB,
                    seconds=0.030)]
    text = render(bench_memory.memory_table(records, "x86_64", bench.POLICY_LABELS, bench.POLICIES))
    row = next(line for line in text.splitlines() if "resnet18" in line)
    for value in ("300", "320", "350", "+50", "100", "12.0", "31 passes, 4.2 s", "40.0", "30.0"):
        assert value in row, (value, row)


def test_the_cell_script_reads_the_peak_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """ru_maxrss is in KiB on Linux: the script reports bytes (this process's own peak, seen by /proc)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.setitem(sys.modules, "mxnet", type(sys)("mxnet"))  # the script imports it at the top
    monkeypatch.setitem(sys.modules, "bench_models", type("M", (), {
        "SETTLE_PASSES": 1, "bind": None, "emit": None, "tuning_pending": None})())
    monkeypatch.setitem(sys.modules, "nnpack_layers", type("M", (), {"set_policy": None})())
    script = runpy.run_path(str(SCRIPTS / "memory_cell.py"))
    with open("/proc/self/status") as status:
        high_water_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    peak = script["peak_rss_bytes"]()
    assert abs(peak - high_water_kib * 1024) <= 64 * MiB
