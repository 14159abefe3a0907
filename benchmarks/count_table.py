#!/usr/bin/env python3
"""The README's instruction-count table and goals (issue 14), from the kept results files.

Reads the JSON of `invoke bench --arch arm64|armv7 --count` (count-<target>.json: per network and
batch the instructions per image of MXNet's own code, NNPACK always and the per-layer fewest
choice; per convolution layer every choice) and of `invoke onnx-compare` (ONNX Runtime's
instructions per image on the same model and input), and prints Markdown: one row per target,
network and batch, then the goals of issue 14, each "met", "NOT met" or "not measured":

- NNPACK-MXNet at least 2x fewer instructions per image than MXNet's own code on VGG-16 and
  ResNet-18 at batch 1 (per ARM target; NNPACK-MXNet = each layer on its fewest-instruction choice,
  which is what the auto policy picks when it chooses by counts);
- at least 4 effective FLOP per instruction on each of VGG-16's 3x3 layers (the chosen way).

    python3 benchmarks/count_table.py benchmarks/results/mxnet-count-*.json \\
        benchmarks/results/onnx-compare-*.json [--plot benchmarks/results/count-table.png]

--plot also draws the table: per target and batch, one group of bars per network (MXNet, NNPACK
always, NNPACK fewest per layer, ONNX Runtime where counted), instructions per image on a log scale.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nnpack_toolchain.count_layers import ALWAYS, MXNET  # the column names bench --count writes
from nnpack_toolchain.count_layers import AUTO as BEST

GOAL_RATIO = 2.0
GOAL_NETWORKS = ("vgg16", "resnet18")
GOAL_FLOP_PER_INSN = 4.0
ARM_TARGETS = ("arm64", "armv7")


def load(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(count results, onnx-compare results), told apart by their keys."""
    counts, onnx = [], []
    for path in paths:
        data = json.loads(path.read_text())
        if "cells" in data and "onnxruntime" in data:
            onnx.append(data)
        elif "networks" in data and "neon_flop_per_insn" in data:
            counts.append(data)
        else:
            raise SystemExit(f"count_table: {path} is neither an `invoke bench --count` nor an `invoke onnx-compare` "
                             "result; give those JSON files")
    return counts, onnx


UNFINISHED = "unfinished"
"""A column set on cells from an interrupted run's count-<target>.partial.json (no repeat check yet)."""


def rows(counts: list[dict[str, Any]], onnx: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, float]]:
    """(target, network, batch) -> column -> instructions per image; later files win."""
    table: dict[tuple[str, str, int], dict[str, float]] = {}
    for result in counts:
        for r in result["networks"]:
            cell = table.setdefault((result["target"], r["network"], r["batch"]), {})
            cell.update(r["insns_per_image"])
            cell.pop(UNFINISHED, None)
            if result.get("partial"):
                cell[UNFINISHED] = 1.0
    for result in onnx:
        for cell in result["cells"]:
            if cell.get("count") and not cell.get("failures"):
                key = (result["target"], cell["network"], cell["batch"])
                table.setdefault(key, {})["ONNX Runtime"] = cell["count"]["per_image"]
    return table


def layer_rows(counts: list[dict[str, Any]], network: str, batch: int, target: str) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for result in counts:
        if result["target"] == target:
            for r in result.get("layers", []):
                if r["network"] == network and r["batch"] == batch:
                    found[r["layer"]] = r
    return list(found.values())


def _m(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} M"


def markdown_table(table: Mapping[tuple[str, str, int], Mapping[str, float]]) -> str:
    lines = ["| target | network | batch | MXNet | NNPACK always | NNPACK, fewest per layer | ONNX Runtime "
             "| MXNet / fewest | MXNet / ONNX Runtime |", "|---|---|---|---|---|---|---|---|---|"]
    for (target, network, batch), c in sorted(table.items()):
        never, best, ort = c.get(MXNET), c.get(BEST), c.get("ONNX Runtime")
        ratio = f"{never / best:.2f}x" if never and best else "-"
        ort_ratio = f"{never / ort:.2f}x" if never and ort else "-"
        mark = " (unfinished run)" if UNFINISHED in c else ""
        lines.append(f"| {target}{mark} | {network} | {batch} | {_m(never)} | {_m(c.get(ALWAYS))} | {_m(best)} | {_m(ort)} "
                     f"| {ratio} | {ort_ratio} |")
    return "\n".join(lines)


def goals(table: Mapping[tuple[str, str, int], Mapping[str, float]], counts: list[dict[str, Any]]) -> list[str]:
    out = []
    for target in ARM_TARGETS:
        for network in GOAL_NETWORKS:
            c = table.get((target, network, 1), {})
            if MXNET in c and BEST in c:
                ratio = c[MXNET] / c[BEST]
                verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
                out.append(f"- {target} {network} batch 1: MXNet / NNPACK = {ratio:.2f}x (goal {GOAL_RATIO:g}x): "
                           f"{verdict}" + (" (from an unfinished run)" if UNFINISHED in c else ""))
            else:
                out.append(f"- {target} {network} batch 1: not measured")
        layers = [r for r in layer_rows(counts, "vgg16", 1, target) if r["shape"].split(", ")[1].startswith("3x3")]
        if layers:
            worst = min(layers, key=lambda r: r["flop_per_insn"][r["auto_choice"]])
            low = worst["flop_per_insn"][worst["auto_choice"]]
            high = max(r["flop_per_insn"][r["auto_choice"]] for r in layers)
            verdict = "met" if low >= GOAL_FLOP_PER_INSN else "NOT met"
            out.append(f"- {target} VGG-16 3x3 layers ({len(layers)}): {low:.2f}-{high:.2f} FLOP/instruction on the "
                       f"chosen way, lowest {worst['layer']} ({worst['auto_choice']}) (goal {GOAL_FLOP_PER_INSN:g} on "
                       f"each): {verdict}")
        else:
            out.append(f"- {target} VGG-16 3x3 layers: not measured")
    return out


COLUMNS = (MXNET, ALWAYS, BEST, "ONNX Runtime")
LABELS = {MXNET: "MXNet's own code", ALWAYS: "NNPACK always", BEST: "NNPACK, fewest per layer",
          "ONNX Runtime": "ONNX Runtime"}


def plot(table: Mapping[tuple[str, str, int], Mapping[str, float]], path: Path) -> Path:
    """The table as grouped bars, one panel per (target, batch); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnpack_toolchain.files import save_figure

    panels = sorted({(target, batch) for target, _, batch in table})
    if not panels:
        raise SystemExit("count_table: nothing to plot (no network rows in the files)")
    widths = [max(5.0, 1.5 * sum(1 for t, _, b in table if (t, b) == panel) + 1.5) for panel in panels]
    figure, axes = plt.subplots(1, len(panels), figsize=(sum(widths), 4.8), squeeze=False,
                                gridspec_kw={"width_ratios": widths})
    width = 0.8 / len(COLUMNS)
    for axis, (target, batch) in zip(axes[0], panels):
        networks = sorted(n for t, n, b in table if (t, b) == (target, batch))
        for i, column in enumerate(COLUMNS):
            points = [(j, table[(target, n, batch)][column]) for j, n in enumerate(networks)
                      if column in table[(target, n, batch)]]
            if points:
                xs, ys = zip(*points)
                axis.bar([x + (i - (len(COLUMNS) - 1) / 2) * width for x in xs], ys, width, label=LABELS[column])
        axis.set_xticks(range(len(networks)), [n + (" *" if UNFINISHED in table[(target, n, batch)] else "")
                                               for n in networks])
        axis.set_yscale("log")
        axis.set_ylabel("guest instructions per image")
        axis.set_title(f"{target}, batch {batch}")
        axis.legend(fontsize="small")
    figure.suptitle("MXNet 1.9.1 inference under QEMU, single-threaded:\nguest instructions per image (work, not time)"
                    + ("\n* from an unfinished run" if any(UNFINISHED in c for c in table.values()) else ""))
    return save_figure(figure, plt, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="count-<target>.json and onnx-compare JSON files")
    parser.add_argument("--plot", type=Path, help="also write the table as a PNG here")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise SystemExit(f"count_table: no such file: {', '.join(missing)}")
    counts, onnx = load(args.files)
    table = rows(counts, onnx)
    print(markdown_table(table))
    print()
    print("\n".join(goals(table, counts)))
    if args.plot:
        print(f"\n{plot(table, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
