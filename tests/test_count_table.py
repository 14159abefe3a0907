"""benchmarks/count_table.py: the README's count table and the issue-14 goals from results files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "count_table.py"
spec = importlib.util.spec_from_file_location("count_table", SCRIPT)
count_table = importlib.util.module_from_spec(spec)
sys.modules["count_table"] = count_table
spec.loader.exec_module(count_table)


def count_result(target, networks, layers=()):
    return {"target": target, "neon_flop_per_insn": 8, "networks": networks, "layers": list(layers)}


def network(name, batch, never, always, best):
    return {"network": name, "batch": batch,
            "insns_per_image": {"MXNet": never, "NNPACK always": always, "NNPACK auto (counts)": best}}


def layer(name, shape, choice, fpi):
    return {"network": "vgg16", "batch": 1, "layer": name, "shape": shape, "auto_choice": choice,
            "flop_per_insn": {"MXNet": 4.0, choice: fpi}}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_table_and_goals_from_count_and_onnx_files(tmp_path, capsys):
    arm64 = count_result("arm64", [network("vgg16", 1, 4_000e6, 3_000e6, 1_600e6),
                                   network("resnet18", 1, 900e6, 850e6, 600e6)],
                         [layer("conv1_1", "3x224x224 -> 64, 3x3/1 pad 1", "MXNet", 3.5),
                          layer("conv2_1", "64x112x112 -> 128, 3x3/1 pad 1", "NNPACK wt8x8 precompute", 12.0)])
    onnx = {"target": "arm64", "onnxruntime": "onnxruntime==1.20.1",
            "cells": [{"network": "resnet18", "batch": 1, "failures": [], "count": {"per_image": 450e6}},
                      {"network": "vgg16", "batch": 1, "failures": ["outputs differ"], "count": {"per_image": 1.0}}]}
    files = [write(tmp_path, "count-arm64.json", arm64), write(tmp_path, "onnx.json", onnx)]
    assert count_table.main([str(f) for f in files]) == 0
    out = capsys.readouterr().out
    # 4000 / 1600 = 2.50, 900 / 600 = 1.50, 900 / 450 = 2.00; a failed ONNX cell gives no figure
    assert "| arm64 | resnet18 | 1 | 900.0 M | 850.0 M | 600.0 M | 450.0 M | 1.50x | 2.00x |" in out
    assert "| arm64 | vgg16 | 1 | 4,000.0 M | 3,000.0 M | 1,600.0 M | - | 2.50x | - |" in out
    assert "- arm64 vgg16 batch 1: MXNet / NNPACK = 2.50x (goal 2x): met" in out
    assert "- arm64 resnet18 batch 1: MXNet / NNPACK = 1.50x (goal 2x): NOT met" in out
    assert "3.50-12.00 FLOP/instruction" in out and "lowest conv1_1 (MXNet)" in out and "NOT met" in out
    assert "- armv7 vgg16 batch 1: not measured" in out
    assert "- armv7 VGG-16 3x3 layers: not measured" in out


def test_a_later_file_replaces_a_cell_and_other_layers_do_not_count(tmp_path, capsys):
    old = count_result("armv7", [network("vgg16", 1, 4_000e6, 3_000e6, 3_000e6)])
    new = count_result("armv7", [network("vgg16", 1, 4_000e6, 3_000e6, 1_000e6)],
                       [layer("fc6_as_conv", "512x7x7 -> 4096, 7x7/1 pad 0", "MXNet", 1.0),
                        layer("conv5_3", "512x14x14 -> 512, 3x3/1 pad 1", "NNPACK wt8x8 precompute", 6.25)])
    count_table.main([str(write(tmp_path, "a.json", old)), str(write(tmp_path, "b.json", new))])
    out = capsys.readouterr().out
    assert "MXNet / NNPACK = 4.00x (goal 2x): met" in out
    assert "(1): 6.25-6.25 FLOP/instruction" in out and "conv5_3" in out


def test_a_file_of_another_kind_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="neither an `invoke bench --count` nor"):
        count_table.main([str(write(tmp_path, "report.json", {"targets": {}}))])
    with pytest.raises(SystemExit, match="no such file"):
        count_table.main([str(tmp_path / "missing.json")])


def test_cells_of_an_unfinished_run_are_marked(tmp_path, capsys):
    partial = {**count_result("armv7", [network("resnet18", 1, 900e6, 850e6, 300e6)]), "partial": True}
    count_table.main([str(write(tmp_path, "count-armv7.partial.json", partial))])
    out = capsys.readouterr().out
    assert "| armv7 (unfinished run) | resnet18 | 1 |" in out
    assert "MXNet / NNPACK = 3.00x (goal 2x): met (from an unfinished run)" in out


def test_the_kept_arm64_result_reads_as_the_readme_says():
    """The format of a real count result (benchmarks/results), not one written for the test."""
    kept = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "mxnet-count-arm64-resnet18-vgg16-batch1.json"
    counts, onnx = count_table.load([kept])
    table = count_table.rows(counts, onnx)
    cell = table[("arm64", "resnet18", 1)]
    # README, "Instruction counts on ARM": 858.1 M (MXNet), 843.9 M (always), 510.8 M (auto from counts)
    assert round(cell["MXNet"] / 1e6, 1) == 858.1 and round(cell["NNPACK always"] / 1e6, 1) == 843.9
    assert round(cell["NNPACK auto (counts)"] / 1e6, 1) == 510.8
    assert count_table.goals(table, counts)[:2] == ["- arm64 vgg16 batch 1: MXNet / NNPACK = 2.90x (goal 2x): met",
                                                    "- arm64 resnet18 batch 1: MXNet / NNPACK = 1.68x (goal 2x): NOT met"]


def test_plot_draws_one_panel_per_target_and_batch_with_a_bar_per_counted_column(tmp_path, monkeypatch):
    import nnpack_toolchain.files as files

    arm64 = count_result("arm64", [network("vgg16", 1, 4_000e6, 3_000e6, 1_600e6),
                                   network("resnet18", 1, 900e6, 850e6, 600e6)])
    armv7 = count_result("armv7", [network("vgg16", 1, 9_000e6, 3_000e6, 2_000e6)])
    onnx = {"target": "arm64", "onnxruntime": "onnxruntime==1.20.1",
            "cells": [{"network": "resnet18", "batch": 1, "failures": [], "count": {"per_image": 450e6}}]}
    drawn = {}
    real_save = files.save_figure

    def keep(figure, plt, path):  # read the bars off the figure, then write the PNG as usual
        drawn["axes"] = [(a.get_title(), [round(p.get_height()) for p in a.patches]) for a in figure.axes]
        return real_save(figure, plt, path)

    monkeypatch.setattr(files, "save_figure", keep)
    path = count_table.plot(count_table.rows([arm64, armv7], [onnx]), tmp_path / "t.png")
    assert path.stat().st_size > 0
    (t1, bars1), (t2, bars2) = drawn["axes"]
    assert (t1, t2) == ("arm64, batch 1", "armv7, batch 1")
    # arm64: resnet18 then vgg16, column by column; ONNX Runtime only where it was counted
    assert bars1 == [900e6, 4_000e6, 850e6, 3_000e6, 600e6, 1_600e6, 450e6]
    assert bars2 == [9_000e6, 3_000e6, 2_000e6]
    with pytest.raises(SystemExit, match="nothing to plot"):
        count_table.plot({}, tmp_path / "none.png")
