#!/usr/bin/env python3
"""The README's speed table from a kept `invoke bench` result (bench.json).

Per network and batch: images/sec at the median of the timed passes for each column (MXNet's own
code, NNPACK always, NNPACK auto, and where measured PyPI mxnet and ONNX Runtime), each with the
lowest-highest of its passes, and auto / MXNet from the medians. Then one line per claim the
README makes from it: in how many cells auto's median is at least MXNet's, and in how many auto's
slowest pass still beats MXNet's fastest (the cells where the noise cannot explain the gain).

    python3 benchmarks/bench_table.py benchmarks/results/mxnet-bench-x86_64.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnpack_toolchain.bench import POLICY_LABELS

NAMES = {"alexnet": "AlexNet", "vgg16": "VGG-16", "resnet18": "ResNet-18", "inception-bn": "Inception-BN",
         "mobilenet": "MobileNet v1"}


def load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"bench_table: cannot read {path} ({error})") from None
    if not isinstance(data, dict) or not data.get("networks"):
        raise SystemExit(f"bench_table: {path} has no timed network rows (an `invoke bench` bench.json on a "
                         "native target has them)")
    return data


def cell(row: Mapping[str, Any], column: str) -> str:
    if column not in row["images_per_second"]:
        return "-"
    median = row["images_per_second"][column]
    spread = (row.get("images_per_second_range") or {}).get(column)
    return f"{median:.2f} ({spread[0]:.2f}-{spread[1]:.2f})" if spread else f"{median:.2f}"


def markdown_table(results: Mapping[str, Any]) -> str:
    rows = results["networks"]
    columns = [c for c in POLICY_LABELS if any(c in r["images_per_second"] for r in rows)]
    head = ["network", "batch", *(POLICY_LABELS[c] for c in columns), "auto / MXNet"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ips = r["images_per_second"]
        ratio = f"{ips['auto'] / ips['never']:.2f}x" if "auto" in ips and "never" in ips else "-"
        lines.append(f"| {NAMES.get(r['network'], r['network'])} | {r['batch']} | "
                     + " | ".join(cell(r, c) for c in columns) + f" | {ratio} |")
    return "\n".join(lines)


def claims(results: Mapping[str, Any]) -> list[str]:
    rows = [r for r in results["networks"] if {"auto", "never"} <= set(r["images_per_second"])]
    at_least = [r for r in rows if r["images_per_second"]["auto"] >= r["images_per_second"]["never"]]
    ranged = [r for r in rows if {"auto", "never"} <= set(r.get("images_per_second_range") or {})]
    clear = [r for r in ranged if r["images_per_second_range"]["auto"][0] > r["images_per_second_range"]["never"][1]]
    ratios = sorted(r["images_per_second"]["auto"] / r["images_per_second"]["never"] for r in rows)
    out = [f"- auto's median >= MXNet's in {len(at_least)} of {len(rows)} cells"
           + (f" (auto / MXNet {ratios[0]:.2f}x-{ratios[-1]:.2f}x)" if ratios else "")]
    if ranged:
        out.append(f"- auto's slowest pass faster than MXNet's fastest in {len(clear)} of {len(ranged)} cells; "
                   "the others overlap: " + (", ".join(f"{r['network']} batch {r['batch']}" for r in ranged
                                                      if r not in clear) or "none"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="an `invoke bench` bench.json")
    results = load(parser.parse_args(argv).file)
    print(markdown_table(results))
    print()
    print("\n".join(claims(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
