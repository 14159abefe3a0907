"""`invoke bench`'s tables, and `--import FILE`: a board's bench JSON shown next to the toolchain's own.

bench.py measures and writes bench.json (and its plot); this module only reads such results: the
toolchain's own run, or one written on a device by the wheel's `python3 -m mxnet.nnpack_bench --json FILE`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from . import log
from .bench import BENCH_FORMAT, BENCH_FORMAT_VERSION, POLICIES, POLICY_LABELS, check_failures, plot
from .errors import ConfigurationError
from .settings import Settings


def network_table(results: dict[str, Any]) -> Table:
    policies = [p for p in (*POLICIES, "pypi", "onnxruntime") if any(p in r["images_per_second"] for r in results["networks"])]
    table = Table(title=escape(f"images/sec [{results['target']}] on {results['host_cpu']}, "
                               f"{results['threads']} threads"), title_justify="left")
    table.add_column("network")
    table.add_column("batch", justify="right")
    for policy in policies:
        table.add_column(POLICY_LABELS[policy], justify="right")
    table.add_column("always / MXNet", justify="right")
    table.add_column("auto / MXNet", justify="right")
    for r in results["networks"]:
        ips = r["images_per_second"]
        table.add_row(r["network"], str(r["batch"]), *(f"{ips[p]:.2f}" if p in ips else "-" for p in policies),
                      *(coloured_ratio(ips[p] / ips["never"]) if p in ips else "-" for p in ("always", "auto")))
    return table


def coloured_ratio(ratio: float) -> str:
    colour = "green" if ratio >= 1.05 else "red" if ratio < 0.95 else "white"
    return f"[{colour}]{ratio:.2f}x[/{colour}]"


def layer_table(results: dict[str, Any]) -> Table:
    table = Table(title="convolution layers at batch 1 (ms)", title_justify="left")
    for column in ("layer", "input", "kernel/stride", "MXNet", "NNPACK always", "NNPACK auto"):
        table.add_column(column, justify="left" if column in ("layer", "input", "kernel/stride") else "right")
    for r in results["layers"]:
        ms = {p: r["seconds"][p] * 1e3 for p in POLICIES if p in r["seconds"]}
        table.add_row(r["layer"], "x".join(map(str, r["input"][1:])), f"{r['kernel']} / {r['stride']}",
                      f"{ms['never']:.2f}", *(f"{ms[p]:.2f} ({ms['never'] / ms[p]:.2f}x)" if p in ms else "-"
                                              for p in ("always", "auto")))
    return table


def choices_table(results: dict[str, Any]) -> Table:
    """Every algorithm the auto policy measured per convolution shape (batch 1), and its pick."""
    table = Table(title="auto policy: measured choices per layer shape at batch 1 (ms)", title_justify="left")
    table.add_column("layer shape")
    table.add_column("chosen")
    table.add_column("MXNet", justify="right")
    table.add_column("NNPACK algorithms (ms)")
    for c in results.get("auto_choices", []):
        nnpack = ", ".join(f"{n.removeprefix('NNPACK ')} {ms:.2f}" for n, ms in c["ms"].items() if n != "MXNet")
        table.add_row(c["layer_shape"].removeprefix("Convolution batch 1 "), c["chosen"],
                      f"{c['ms'].get('MXNet', float('nan')):.2f}", nnpack)
    return table


def sweep_table(results: dict[str, Any]) -> Table:
    table = Table(title="thread sweep at batch 1 (images/sec)", title_justify="left")
    for column in ("network", "threads", "MXNet", "NNPACK always", "NNPACK auto"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for r in results["thread_sweep"]:
        ips = r["images_per_second"]
        table.add_row(r["network"], r["threads"], f"{ips['never']:.2f}",
                      *(f"{ips[p]:.2f} ({ips[p] / ips['never']:.2f}x)" if p in ips else "-" for p in ("always", "auto")))
    return table


def check_table(results: dict[str, Any]) -> Table:
    table = Table(title=escape(f"correctness under QEMU [{results['target']}]: NNPACK vs MXNet's own output"),
                  title_justify="left")
    for column in ("network", "batch", "max rel. difference", "NNPACK calls (conv, pool, fc)"):
        table.add_column(column)
    for r in results["checks"]:
        calls = r.get("nnpack_calls") or {}
        table.add_row(r["network"], str(r["batch"]), f"{max(r['rel_err'].values()):.1e}",
                      f"{calls.get('convolution')}, {calls.get('pooling')}, {calls.get('fully_connected')}")
    return table


def load_import(path: Path, arch: str | None = None) -> dict[str, Any]:
    """A bench JSON from a board (or another home), checked: one line naming what is wrong otherwise."""
    from .targets import parse_target

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigurationError(f"--import {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"--import {path}: cannot read it ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"--import {path} is not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != BENCH_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigurationError(f"--import {path} is not a benchmark result (format {found!r}, expected "
                                 f"{BENCH_FORMAT!r}: write one with python3 -m mxnet.nnpack_bench --json FILE)")
    if data.get("version") != BENCH_FORMAT_VERSION:
        raise ConfigurationError(f"--import {path} has format version {data.get('version')!r}; this toolchain "
                                 f"reads version {BENCH_FORMAT_VERSION} (use the wheel built by this toolchain)")
    kinds = {"networks": list, "checks": list, "auto_choices": list, "target": str, "host_cpu": str}
    wrong = [key for key, kind in kinds.items() if not isinstance(data.get(key, [] if kind is list else None), kind)]
    rows = [r for r in data.get("networks", []) if not (isinstance(r, dict) and isinstance(r.get("batch"), int)
                                                        and all(isinstance(r.get("images_per_second", {}).get(p),
                                                                           (int, float)) for p in POLICIES))]
    if wrong or rows:
        raise ConfigurationError(f"--import {path}: malformed {', '.join(wrong) if wrong else 'networks'} "
                                 f"(a network row needs batch and images_per_second of {', '.join(POLICIES)})")
    measured_on = parse_target(data["target"])
    if arch and parse_target(arch).name != measured_on.name:
        raise ConfigurationError(f"--import {path} was measured on {measured_on.name}, not {parse_target(arch).name}")
    data["target"] = measured_on.name
    return data


def spread_table(results: dict[str, Any]) -> Table | None:
    """The lowest-highest images/sec of the timed passes per column, and (a board's run) each cell's peak
    RSS; None for a result that kept neither (older files kept only the medians)."""
    rows = results["networks"]
    columns = [p for p in POLICY_LABELS if any(p in (r.get("images_per_second_range") or {}) for r in rows)]
    rss = any(r.get("peak_rss_bytes") for r in rows)
    if not columns and not rss:
        return None
    table = Table(title=escape(f"spread of {results.get('iterations')} passes (images/sec, lowest-highest)"
                               + (" and peak RSS per cell (one process each)" if rss else "")), title_justify="left")
    for column in ("network", "batch", *(POLICY_LABELS[p] for p in columns), *(["peak RSS (MiB)"] if rss else [])):
        table.add_column(column, justify="left" if column == "network" else "right")
    for r in rows:
        spread = r.get("images_per_second_range") or {}
        table.add_row(r["network"], str(r["batch"]),
                      *(f"{spread[p][0]:.2f}-{spread[p][1]:.2f}" if p in spread else "-" for p in columns),
                      *([f"{r['peak_rss_bytes'] / (1 << 20):.0f}" if r.get("peak_rss_bytes") else "-"] if rss else []))
    return table


def comparison_table(imported: dict[str, Any], measured: dict[str, Any]) -> Table:
    """auto / MXNet and always / MXNet on the board next to the toolchain's own run, per network and batch."""
    table = Table(title=escape(f"board ({imported['host_cpu']}) vs toolchain ({measured['host_cpu']}) "
                               f"[{imported['target']}]: speed relative to MXNet's own code"), title_justify="left")
    for column in ("network", "batch", "always: board", "always: toolchain", "auto: board", "auto: toolchain"):
        table.add_column(column, justify="left" if column == "network" else "right")
    theirs = {(r["network"], r["batch"]): r["images_per_second"] for r in measured["networks"]}
    for r in imported["networks"]:
        ours, other = r["images_per_second"], theirs.get((r["network"], r["batch"]))
        cells = []
        for policy in ("always", "auto"):
            cells.append(coloured_ratio(ours[policy] / ours["never"]))
            cells.append(coloured_ratio(other[policy] / other["never"]) if other and policy in other else "-")
        table.add_row(r["network"], str(r["batch"]), *cells)
    return table


def show_import(path: Path, arch: str | None, settings: Settings) -> dict[str, Any]:
    """`invoke bench --import FILE`: the board's tables (and PNG, in <home>/out/<target>/bench/), next to
    what this toolchain measured for the target (its bench.json), if it has measured it."""
    imported = load_import(path, arch)
    console = log.console
    device = imported.get("device") or {}
    console.out(f"bench --import {path}: {imported['target']}, {imported['host_cpu']}, {imported.get('cores')} cores"
                + (f", {device['mem_total_bytes'] / (1 << 20):.0f} MiB" if device.get("mem_total_bytes") else "")
                + (f", {device['glibc']}, python {device.get('python')}, numpy {device.get('numpy')}"
                   if device.get("glibc") else "") + f", {imported.get('wheel', '?')}")
    if imported["networks"]:
        console.print(network_table(imported))
        spread = spread_table(imported)
        if spread is not None:
            console.print(spread)
    if imported["auto_choices"]:
        console.print(choices_table(imported))
    if imported["checks"]:
        console.print(check_table(imported))
        for failure in check_failures(imported["checks"]):
            console.out(f"bench --import: correctness FAILED on the board: {failure}")
    for error in imported.get("errors") or []:
        console.out(f"bench --import: failed on the board: {error}")
    bench_dir = settings.output_dir(imported["target"]) / "bench"
    if imported["networks"]:
        bench_dir.mkdir(parents=True, exist_ok=True)
        imported["plot"] = str(plot(imported, bench_dir / f"board-{path.stem}.png"))
    own = bench_dir / "bench.json"
    measured = json.loads(own.read_text()) if own.is_file() else None
    if measured is None:
        console.out(f"bench --import: this toolchain has not measured {imported['target']} (no {own})")
    elif measured.get("networks") and imported["networks"]:
        console.print(comparison_table(imported, measured))
    elif measured.get("checks"):
        console.out(f"bench --import: the toolchain's own run of {imported['target']} ({own}) checked correctness "
                    "under QEMU only:")
        console.print(check_table(measured))
    if imported.get("plot"):
        console.out(f"bench --import: {imported['plot']}")
    imported["measured"] = str(own) if measured is not None else None
    return imported
