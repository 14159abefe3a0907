"""benchmarks/bench_table.py: the README's speed table (median and spread) and its claims from bench.json."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_table.py"
spec = importlib.util.spec_from_file_location("bench_table", SCRIPT)
bench_table = importlib.util.module_from_spec(spec)
sys.modules["bench_table"] = bench_table
spec.loader.exec_module(bench_table)


def row(network, batch, samples):
    """A bench_models record from per-pass seconds, as timing_fields builds it (written out here)."""
    medians = {p: statistics.median(s) for p, s in samples.items()}
    return {"network": network, "batch": batch, "images_per_second": {p: batch / t for p, t in medians.items()},
            "images_per_second_range": {p: [batch / max(s), batch / min(s)] for p, s in samples.items()}}


def test_table_cells_and_claims(tmp_path, capsys):
    results = {"networks": [
        # auto clearly ahead: slowest auto pass 1/0.25 = 4/s, fastest MXNet pass 1/0.5 = 2/s
        row("vgg16", 1, {"never": [0.5, 0.6, 0.7], "always": [0.4, 0.4, 0.4], "auto": [0.2, 0.25, 0.25],
                         "pypi": [0.1, 0.1, 0.1]}),
        # auto's median ahead, but its slowest pass (1 image/s) is slower than MXNet's fastest (2/s)
        row("resnet18", 2, {"never": [1.0, 1.2, 1.0], "always": [2.0, 2.0, 2.0], "auto": [0.8, 0.9, 2.0]}),
    ]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(results))
    assert bench_table.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| VGG-16 | 1 | 1.67 (1.43-2.00) | 2.50 (2.50-2.50) | 4.00 (4.00-5.00) | 10.00 (10.00-10.00) | 2.40x |" in out
    assert "| ResNet-18 | 2 | 2.00 (1.67-2.00) | 1.00 (1.00-1.00) | 2.22 (1.00-2.50) | - | 1.11x |" in out
    assert "ONNX Runtime" not in out  # a column nobody measured is left out
    assert "- auto's median >= MXNet's in 2 of 2 cells (auto / MXNet 1.11x-2.40x)" in out
    assert "faster than MXNet's fastest in 1 of 2 cells; the others overlap: resnet18 batch 2" in out


def test_a_file_without_timed_rows_is_refused_in_one_line(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"networks": [], "checks": [{"network": "vgg16"}]}))
    with pytest.raises(SystemExit, match="no timed network rows"):
        bench_table.main([str(path)])
