"""`invoke bench --memory`: peak memory and the cost of the auto policy's tuning, per cell.

Each cell (network, batch, policy) runs in a process of its own (target_scripts/memory_cell.py,
run by bench.run_bench), because a process's peak RSS is a high-water mark: policies alternating in one process, as the
speed table does, would all report the largest. Per cell: peak RSS, the passes and seconds the
auto policy took to settle, the steady-state time per pass (median of --iterations), and
NNPACK's own memory (transform and workspace bytes, the budget) from mx.runtime.nnpack_status().

The issue-12 rule checked on the result: auto's peak RSS is at most never's plus the memory
budget (NNPACK's precomputed kernel transforms and workspace growth are what the budget bounds).
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

MiB = 1 << 20


def budget_violations(records: list[dict[str, Any]]) -> list[str]:
    """Cells where auto's peak RSS exceeds never's plus the memory budget."""
    never = {(r["network"], r["batch"]): r for r in records if r["policy"] == "never"}
    found = []
    for r in records:
        base = never.get((r["network"], r["batch"]))
        if r["policy"] != "auto" or base is None or r.get("memory_budget_bytes") is None:
            continue
        allowed = base["peak_rss_bytes"] + r["memory_budget_bytes"]
        if r["peak_rss_bytes"] > allowed:
            found.append(f"{r['network']} batch {r['batch']}: auto peaks at {r['peak_rss_bytes'] / MiB:.0f} MiB, "
                         f"more than never's {base['peak_rss_bytes'] / MiB:.0f} MiB plus the "
                         f"{r['memory_budget_bytes'] / MiB:.0f} MiB budget")
    return found


def memory_table(records: list[dict[str, Any]], target: str, labels: dict[str, str],
                 policies: tuple[str, ...]) -> Table:
    table = Table(title=escape(f"peak RSS (MiB) and the auto policy's tuning cost [{target}]"), title_justify="left")
    for column in ("network", "batch", *(labels[p] for p in policies), "auto - MXNet",
                   "budget", "transforms held", "auto settles after", "ms/pass MXNet", "ms/pass auto"):
        table.add_column(column, justify="left" if column == "network" else "right")
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["network"], r["batch"]), {})[r["policy"]] = r
    for (network, batch), by_policy in cells.items():
        rss = {p: by_policy[p]["peak_rss_bytes"] / MiB for p in by_policy}
        auto = by_policy.get("auto", {})
        never = by_policy.get("never", {})
        table.add_row(
            network, str(batch), *(f"{rss[p]:.0f}" if p in rss else "-" for p in policies),
            f"{rss['auto'] - rss['never']:+.0f}" if "auto" in rss and "never" in rss else "-",
            f"{auto['memory_budget_bytes'] / MiB:.0f}" if auto.get("memory_budget_bytes") is not None else "-",
            f"{auto['transform_bytes'] / MiB:.1f}" if auto.get("transform_bytes") is not None else "-",
            f"{auto['settle_passes']} passes, {auto['settle_seconds']:.1f} s" if auto else "-",
            f"{never['seconds'] * 1e3:.1f}" if never else "-",
            f"{auto['seconds'] * 1e3:.1f}" if auto else "-")
    return table
