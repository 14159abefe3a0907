"""invoke bench --count (issue 14): instructions per image from two pass counts, FLOP per
instruction, the auto policy's choice from counts, the cells' pinned choices, and, with a real
wheel under QEMU, that two runs agree within 0.1 %.

The arithmetic's oracles are worked out by hand in each test, not by the code under test."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from rich.console import Console

from conftest import MXNET_BUILD_HOME
from nnpack_toolchain import bench_count, count_cells, count_layers, count_runner
from nnpack_toolchain.count_layers import (ALWAYS, AUTO, MXNET, ConvShape, auto_choice, conv_layers, flop_per_insn,
                                           fork_counts, layer_choices, nnpack_rejects, relative_difference,
                                           tuning_table)
from nnpack_toolchain.count_cells import CountOptions, layer_cell
from nnpack_toolchain.count_runner import CellRunner
from nnpack_toolchain.check_model import check_model
from nnpack_toolchain.check_model_types import ReasonCode
from nnpack_toolchain.distros import DISTRIBUTIONS
from nnpack_toolchain.errors import ConfigurationError, VerificationError
from nnpack_toolchain.insn_count import InsnCountError
from nnpack_toolchain.procgroup import run_group
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.target_env import PythonEnv
from nnpack_toolchain.targets import TARGETS

SMALL = ConvShape(batch=1, in_c=16, in_h=16, in_w=16, out_c=16, kernel=(3, 3), pad=(1, 1))
"""The small layer of the QEMU test: 3x3, 16 -> 16 channels on 16x16, padded (output 16x16)."""


def render(table) -> str:
    console = Console(width=250, record=True)
    console.print(table)
    return console.export_text()


# Arithmetic ---------------------------------------------------------------------------------------


def test_per_image_comes_from_four_forks() -> None:
    # g_i = A + i*d + W(K_i) with K = 1, 3, 1, 3; A = 1,000,000, d = 10 (the parent between forks),
    # W(1) = 300,000, W(3) = 900,000: 600,000 for 2 more passes of 8 images = 37,500 per image
    g = [1_300_000, 1_900_010, 1_300_020, 1_900_030]
    counts = fork_counts(g, 1, 3, 8)
    assert counts.insns_per_image == 37_500 and counts.between_forks == 10 and counts.spread == 0
    # K = 0, 1, 0, 1 at batch 1, d = 26,594: the per-pass work straight
    assert fork_counts([6_055_254_942, 6_055_895_789, 6_055_281_536, 6_055_922_383], 0, 1, 1).insns_per_image == \
        640_847 - 26_594 / 2 == 627_550
    # the two increments g1 - g0 = 600,010 and g3 - g2 = 600,610 differ by 600: 0.1 % of the 600,300 of work
    uneven = fork_counts([1_300_000, 1_900_010, 1_300_020, 1_900_630], 1, 3, 1)
    assert uneven.between_forks == 160 and uneven.insns_per_image == (600_310 - 160) / 2
    assert uneven.spread == pytest.approx(600 / 600_150)


def test_forks_without_more_work_are_an_error() -> None:
    with pytest.raises(VerificationError, match="counted no more instructions"):
        fork_counts([1_000, 1_000, 1_000, 1_000], 0, 1, 1)
    with pytest.raises(ConfigurationError, match="must grow"):
        fork_counts([1, 2, 3, 4], 2, 2, 1)
    with pytest.raises(VerificationError, match="4 counted forks"):
        fork_counts([1, 2, 3], 0, 1, 1)


def test_direct_flops_per_image_and_flop_per_instruction() -> None:
    # 2 * K * C * R * S * P * Q = 2 * 16 * 16 * 3 * 3 * 16 * 16 = 1,179,648
    assert SMALL.flops_per_image == 1_179_648
    assert flop_per_insn(1_179_648, 147_456) == 8.0  # exactly the NEON limit
    assert flop_per_insn(1_179_648, 0) is None and flop_per_insn(1_179_648, None) is None
    # batch does not change per-image FLOPs; a 7x7/2 conv 3 -> 64 on 224 (pad 3): output 112x112
    conv0 = ConvShape(batch=8, in_c=3, in_h=224, in_w=224, out_c=64, kernel=(7, 7), stride=(2, 2), pad=(3, 3))
    assert conv0.out_hw == (112, 112)
    assert conv0.flops_per_image == 2 * 64 * 3 * 49 * 112 * 112 == 236_027_904
    # depthwise: C / groups = 1 input channel per filter; 3x3/2 on 112 (pad 1) -> 56
    dw = ConvShape(batch=1, in_c=64, in_h=112, in_w=112, out_c=64, kernel=(3, 3), stride=(2, 2), pad=(1, 1), groups=64)
    assert dw.flops_per_image == 2 * 64 * 1 * 9 * 56 * 56 == 3_612_672


def test_auto_chooses_the_fewest_instructions_but_never_the_always_policy() -> None:
    counts = {MXNET: 100.0, ALWAYS: 10.0, "NNPACK wt8x8": 50.0, "NNPACK wt8x8 precompute": 40.0}
    assert auto_choice(counts) == "NNPACK wt8x8 precompute"
    assert auto_choice({MXNET: 5.0, "NNPACK ft8x8": 5.0}) == MXNET  # a tie keeps the first (MXNet's own)
    assert auto_choice({MXNET: 30.0, "NNPACK ft8x8": 29.0, "NNPACK ft16x16": 31.0}) == "NNPACK ft8x8"
    with pytest.raises(ConfigurationError):
        auto_choice({ALWAYS: 1.0})


def test_every_forked_childs_total_is_kept_in_order() -> None:
    from nnpack_toolchain.insn_count import all_totals, parse_counts

    text = ("cpu 0 insns: 7\ntotal insns: 7\ncpu 0 insns: 9\ntotal insns: 9\n"
            "cpu 0 insns: 5\ncpu 1 insns: 6\ntotal insns: 11\n")
    assert all_totals(text) == (7, 9, 11) and parse_counts(text) == (11, {0: 5, 1: 6})
    assert all_totals("insns: 3\ninsns: 4\n") == (3, 4)  # inline=on


def test_small_cells_count_more_passes() -> None:
    # K2 * FLOPs / 16 >= 2e7: a 231 MFLOP layer needs 2 passes (1.38), a network 1, SMALL the cap of 64 (272)
    assert count_layers.cell_passes(231_211_008) == (0, 2)
    assert count_layers.cell_passes(3.6e9) == (0, 1)
    assert count_layers.cell_passes(SMALL.flops_per_image) == (0, 64)
    assert count_layers.cell_passes(0) == (0, 64)


def test_relative_difference() -> None:
    assert relative_difference(1000, 1001) == pytest.approx(1 / 1001)
    assert relative_difference(0, 0) == 0


# Choices, pinning --------------------------------------------------------------------------------


def test_choices_follow_the_patch() -> None:
    pre = " precompute"
    assert layer_choices(SMALL) == [MXNET, *(f"NNPACK {a}{p}" for a in ("wt8x8", "ft8x8", "ft16x16", "implicit-gemm")
                                             for p in ("", pre))]
    batch8 = ConvShape(batch=8, in_c=16, in_h=16, in_w=16, out_c=16, kernel=(3, 3), pad=(1, 1))
    assert layer_choices(batch8) == [MXNET, "NNPACK wt8x8", "NNPACK ft8x8", "NNPACK ft16x16"]
    one = ConvShape(batch=1, in_c=64, in_h=56, in_w=56, out_c=64, kernel=(1, 1))
    assert layer_choices(one) == [MXNET, "NNPACK ft8x8", "NNPACK ft8x8 precompute", "NNPACK ft16x16",
                                  "NNPACK ft16x16 precompute", "NNPACK implicit-gemm",
                                  "NNPACK implicit-gemm precompute", "NNPACK direct"]
    strided = ConvShape(batch=1, in_c=3, in_h=224, in_w=224, out_c=96, kernel=(11, 11), stride=(4, 4))
    assert layer_choices(strided) == [MXNET, "NNPACK implicit-gemm", "NNPACK implicit-gemm precompute"]
    assert layer_choices(ConvShape(batch=8, in_c=3, in_h=224, in_w=224, out_c=96, kernel=(11, 11),
                                   stride=(4, 4))) == [MXNET]
    depthwise = ConvShape(batch=1, in_c=32, in_h=112, in_w=112, out_c=32, kernel=(3, 3), pad=(1, 1), groups=32)
    assert nnpack_rejects(depthwise) == "num_group 32" and layer_choices(depthwise) == [MXNET]


def test_a_pin_is_keyed_like_the_patch() -> None:
    # Patch 0007's PlanKey for a Convolution: batch, in_c, in_h, in_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w;
    # transforms 1 for batch-1 graph nodes (a bound executor).
    table = tuning_table([(SMALL, "NNPACK ft8x8 precompute")])
    assert table == {"format": "mxnet-nnpack-tuning", "version": 1, "plans": [
        {"layer": "Convolution", "shape": [1, 16, 16, 16, 16, 3, 3, 1, 1, 1, 1], "transforms": 1,
         "choice": "NNPACK ft8x8 precompute"}]}
    batch8 = ConvShape(batch=8, in_c=16, in_h=16, in_w=16, out_c=16, kernel=(3, 3), pad=(1, 1))
    assert tuning_table([(batch8, MXNET)])["plans"][0]["transforms"] == 0


def test_layer_cells_force_a_choice_by_policy_or_pin() -> None:
    cell = layer_cell(SMALL)
    assert [v.name for v in cell.variants] == [MXNET, ALWAYS, *layer_choices(SMALL)[1:]]
    never, always, pinned = cell.variants[:3]
    assert (never.policy, never.tuning, always.policy, always.tuning) == ("never", None, "always", None)
    assert pinned.policy == "auto" and [p["choice"] for p in pinned.tuning["plans"]] == ["NNPACK wt8x8"]
    assert pinned.to_json()["tuning"]["plans"][0]["shape"] == [1, 16, 16, 16, 16, 3, 3, 1, 1, 1, 1]
    assert json.loads(cell.args[1]) == {"input": [1, 16, 16, 16], "num_filter": 16, "kernel": [3, 3],
                                        "stride": [1, 1], "pad": [1, 1], "no_bias": False}
    depthwise = ConvShape(batch=1, in_c=32, in_h=112, in_w=112, out_c=32, kernel=(3, 3), pad=(1, 1), groups=32)
    assert [v.name for v in layer_cell(depthwise).variants] == [MXNET]  # nothing else can run it
    assert count_cells.CELL_ENV["MXNET_ENFORCE_DETERMINISM"] == "1"  # pinned auto never times anything


def test_layer_records_must_show_the_choice_ran() -> None:
    check = count_layers.check_layer_record
    assert check(MXNET, {"nnpack_conv_calls_per_pass": 0}, "x", SMALL) is None
    assert "NNPACK ran 1" in check(MXNET, {"nnpack_conv_calls_per_pass": 1}, "x", SMALL)
    assert check("NNPACK wt8x8", {"nnpack_conv_calls_per_pass": 1}, "x", SMALL) is None
    problem = check(ALWAYS, {"nnpack_conv_calls_per_pass": 0}, "x", SMALL)
    assert "NNPACK always: NNPACK ran 0 convolutions per pass, not 1" in problem
    # SMALL's wt8x8 transform, 16 x 16 x 64 floats = 64 KiB, fits a 512 MiB budget: not holding it is a fault
    budget = {"memory_budget_bytes": 512 * 2**20, "workspace_bytes": 2**20}
    problem = check("NNPACK wt8x8 precompute", {"nnpack_conv_calls_per_pass": 1, "transforms": 0, **budget}, "x", SMALL)
    assert "no precomputed kernel transform was held, though its 0.1 MiB fit the memory budget of 512.0 MiB" in problem
    assert "no precomputed kernel transform" in check("NNPACK wt8x8 precompute",
                                                      {"nnpack_conv_calls_per_pass": 1, "transforms": 0}, "x", SMALL)
    assert check("NNPACK wt8x8 precompute", {"nnpack_conv_calls_per_pass": 1, "transforms": 1}, "x", SMALL) is None


MOBILENET_LAST = ConvShape(batch=1, in_c=512, in_h=7, in_w=7, out_c=1024, kernel=(1, 1))
"""MobileNet's 512x7x7 -> 1024 1x1 layer, whose ft16x16 kernel transform (1024 x 512 x 16 x 16 floats,
512 MiB) does not fit a 512 MiB budget: the armv7 count of session 12 failed on it."""


def test_a_transform_over_the_memory_budget_is_not_a_failed_layer() -> None:
    # By NNPACK's size query (convolution-inference.c, precompute): out_c * in_c * tile elements floats,
    # out_c * in_c * k_h * k_w floats for implicit-gemm
    assert count_layers.transform_bytes(MOBILENET_LAST, "NNPACK ft16x16 precompute") == 1024 * 512 * 256 * 4
    assert count_layers.transform_bytes(MOBILENET_LAST, "NNPACK ft8x8 precompute") == 1024 * 512 * 64 * 4
    assert count_layers.transform_bytes(MOBILENET_LAST, "NNPACK implicit-gemm precompute") == 1024 * 512 * 4
    assert count_layers.transform_bytes(MOBILENET_LAST, "NNPACK ft8x8") == 0
    # 512 MiB is over 512 MiB less the 8 MiB reserve: not counted (it would run as plain ft16x16)
    counted = count_cells.layer_variants(MOBILENET_LAST, 512 * 2**20)
    assert "NNPACK ft16x16 precompute" not in counted and "NNPACK ft16x16" in counted
    assert "NNPACK ft8x8 precompute" in counted and "NNPACK implicit-gemm precompute" in counted
    assert "NNPACK ft16x16 precompute" in count_cells.layer_variants(MOBILENET_LAST, 1024 * 2**20)
    assert "NNPACK ft8x8 precompute" not in count_cells.layer_variants(MOBILENET_LAST, 128 * 2**20)
    # The record of session 12's failed cell: no transform held under the 512 MiB budget. Counted
    # anyway (a larger budget's cell list), it is explained by the budget, not a fault
    record = {"nnpack_conv_calls_per_pass": 1, "transforms": 0, "memory_budget_bytes": 512 * 2**20,
              "workspace_bytes": 0}
    label = "layer 512x7x7 -> 1024"
    assert count_layers.check_layer_record("NNPACK ft16x16 precompute", record, label, MOBILENET_LAST) is None
    assert count_layers.record_over_budget("NNPACK ft16x16 precompute", record, MOBILENET_LAST)
    # ft8x8's 128 MiB fits alone; beside 400 MiB of workspace it does not (patch 0007's ReserveTransform)
    assert count_layers.check_layer_record("NNPACK ft8x8 precompute", record, label, MOBILENET_LAST)
    crowded = {**record, "workspace_bytes": 400 * 2**20}
    assert count_layers.check_layer_record("NNPACK ft8x8 precompute", crowded, label, MOBILENET_LAST) is None
    assert not count_layers.record_over_budget("NNPACK ft8x8 precompute", {**crowded, "transforms": 1}, MOBILENET_LAST)


def test_a_batch_workspace_over_the_memory_budget_is_not_a_failed_layer(tmp_path: Path) -> None:
    """At batch 8 MXNet calls nnp_convolution_output, whose workspace holds the whole kernel transform and
    the batch's; patch 0007 charges it to the budget under auto and runs MXNet's code when it does not fit.
    The armv7 count of MobileNet at batch 8 (session 15) stopped on it: "NNPACK ft16x16: NNPACK ran 0
    convolutions per pass, not 1"."""
    shape = replace(MOBILENET_LAST, batch=8)
    # The real records of that cell (512 MiB budget): ft8x8 ran, its workspace charged 137,363,520 bytes
    # (NNPACK's size plus patch 0007's 64 bytes of alignment); ft16x16 (4x the tile) ran nothing
    assert count_layers.workspace_charge(shape, "NNPACK ft8x8") == 137_363_520
    assert count_layers.output_workspace_bytes(MOBILENET_LAST, "NNPACK ft8x8") == 0  # batch 1: not this path
    # What patch 0007 charged in other real batch-8 cells of those runs (records' workspace_bytes): a 3x3
    # layer's charge is less MXNet's own im2col buffer of one image (256 x 9 x 14 x 14 floats here)
    inception_3x3 = ConvShape(batch=8, in_c=256, in_h=14, in_w=14, out_c=256, kernel=(3, 3), pad=(1, 1))
    assert count_layers.workspace_charge(inception_3x3, "NNPACK wt8x8") == 16_019_520
    assert count_layers.workspace_charge(inception_3x3, "NNPACK ft16x16") == 69_496_896
    inception_1x1 = ConvShape(batch=8, in_c=64, in_h=55, in_w=55, out_c=64, kernel=(1, 1))
    assert count_layers.workspace_charge(inception_1x1, "NNPACK ft16x16") == 5_242_944
    ran = {"nnpack_conv_calls_per_pass": 1, "transforms": 0, "workspace_bytes": 137_363_520,
           "memory_budget_bytes": 536_870_912}
    nothing = {**ran, "nnpack_conv_calls_per_pass": 0, "workspace_bytes": 0}
    label = "layer 512x7x7 -> 1024 batch 8"
    assert count_layers.check_layer_record("NNPACK ft8x8", ran, label, shape) is None
    assert count_layers.check_layer_record("NNPACK ft16x16", nothing, label, shape) is None
    assert count_layers.record_over_budget("NNPACK ft16x16", nothing, shape)
    assert not count_layers.record_over_budget("NNPACK ft8x8", ran, shape)
    # a choice whose workspace fits and still ran nothing is a fault, as is one at batch 1
    assert "NNPACK ran 0 convolutions" in count_layers.check_layer_record("NNPACK ft8x8", nothing, label, shape)
    assert "NNPACK ran 0" in count_layers.check_layer_record("NNPACK ft16x16", nothing, label, MOBILENET_LAST)
    assert "NNPACK ran 0" in count_layers.check_layer_record(
        "NNPACK ft16x16", {**nothing, "memory_budget_bytes": 1024 * 2**20}, label, shape)
    # ft8x8's 131 MiB fits an empty 512 MiB budget, not one with 400 MiB of transforms already held
    assert count_layers.record_over_budget("NNPACK ft8x8", {**nothing, "transform_bytes": 400 * 2**20}, shape)
    # through the runner: ft16x16 is left out of auto's choices and listed as over the budget
    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                        CountOptions(), {"wheel_sha256": "abc"}, tmp_path / "log", FakeQemu())
    measured = bench_count.measure_shape(runner, shape)
    assert set(measured) == {MXNET, ALWAYS, "NNPACK ft8x8"}
    row = bench_count.layer_row(count_layers.ConvLayer("mobilenet", 8, "conv14", shape), measured, auto_choice(
        {name: m.insns_per_image for name, m in measured.items()}))
    assert row["over_budget"] == ["NNPACK ft16x16"] and row["auto_choice"] != "NNPACK ft16x16"


def test_counts_are_for_a_stated_memory_budget_not_the_counting_hosts(tmp_path: Path) -> None:
    """Under qemu-user the guest sees the host's memory, so patch 0007's default budget would be the host's."""
    qemu = FakeQemu(workspace=2 * 2**20)
    shape = ConvShape(batch=1, in_c=512, in_h=7, in_w=7, out_c=512, kernel=(3, 3), pad=(1, 1))
    # wt8x8 / ft8x8 precompute: 512 x 512 x 64 floats = 64 MiB; with 2 MiB of workspace 66 MiB;
    # implicit-gemm's 512 x 512 x 9 floats = 9 MiB fits
    options = CountOptions(memory_budget_mb=72)  # 64 MiB usable: wt8x8's and ft8x8's do not fit beside the workspace
    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path), options,
                        {"wheel_sha256": "abc"}, tmp_path / "log", qemu)
    measured = bench_count.measure_shape(runner, shape)
    assert qemu.envs[0]["MXNET_NNPACK_MEMORY_BUDGET_MB"] == "72"
    assert "NNPACK wt8x8 precompute" not in measured and "NNPACK ft8x8 precompute" not in measured
    assert "NNPACK wt8x8" in measured and "NNPACK ft16x16" in measured and "NNPACK implicit-gemm precompute" in measured
    row = bench_count.layer_row(count_layers.ConvLayer("vgg16", 1, "conv", shape), measured, auto_choice(
        {name: m.insns_per_image for name, m in measured.items()}))
    assert {"NNPACK wt8x8 precompute", "NNPACK ft8x8 precompute", "NNPACK ft16x16 precompute"} <= set(row["over_budget"])
    # 80 MiB: 72 usable, both fit beside the workspace and are counted; another budget is another cell
    roomy = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                       CountOptions(memory_budget_mb=80), {"wheel_sha256": "abc"}, tmp_path / "log", qemu)
    assert roomy.key(layer_cell(shape)) != runner.key(layer_cell(shape))
    measured = bench_count.measure_shape(roomy, shape)
    assert "NNPACK wt8x8 precompute" in measured and "NNPACK ft8x8 precompute" in measured
    assert qemu.envs[-1]["MXNET_NNPACK_MEMORY_BUDGET_MB"] == "80"
    with pytest.raises(ConfigurationError, match="--budget-mb"):
        CountOptions(memory_budget_mb=-1)


# Zoo layers ----------------------------------------------------------------------------------------


def test_resnet18_layers_come_with_their_input_shapes() -> None:
    layers = conv_layers("resnet18", 1)
    assert [layer.name for layer in layers[:3]] == ["conv0", "stage1_unit1_conv1", "stage1_unit1_conv2"]
    assert layers[0].shape == ConvShape(batch=1, in_c=3, in_h=224, in_w=224, out_c=64, kernel=(7, 7), stride=(2, 2),
                                        pad=(3, 3), no_bias=True)
    assert layers[1].shape == ConvShape(batch=1, in_c=64, in_h=56, in_w=56, out_c=64, kernel=(3, 3), pad=(1, 1),
                                        no_bias=True)
    # conv0, 16 3x3 and a 1x1 shortcut per stage; distinct: conv0, 2 shapes in stage 1, 3 in each later one
    assert len(layers) == 21 and len({layer.shape for layer in layers}) == 12


def test_mobilenet_is_in_the_zoo_and_its_depthwise_layers_are_not_for_nnpack() -> None:
    report = check_model("zoo:mobilenet")
    assert report.output_shapes == [(1, 1000)]
    convs = [layer for layer in report.layers if layer.op == "Convolution"]
    assert len(convs) == 27  # conv_1 + 13 x (depthwise + pointwise)
    depthwise = [layer for layer in convs if "_dw_" in layer.name]
    assert len(depthwise) == 13
    assert all(layer.decision().codes == (ReasonCode.GROUPED,) for layer in depthwise)
    assert all(layer.decision().eligible for layer in convs if layer not in depthwise)
    # 1.0 MobileNet-224: 569 M multiply-adds in its convolutions and the classifier
    assert sum(layer.flops for layer in report.layers if layer.op != "Pooling") // 2 == pytest.approx(569e6, rel=0.01)
    shapes = {layer.name: layer.shape for layer in conv_layers("mobilenet", 1)}
    assert layer_choices(shapes["conv_2_dw_conv2d"]) == [MXNET]
    assert shapes["conv_14_conv2d"].kernel == (1, 1) and shapes["conv_14_conv2d"].in_h == 7


# Host side with a fake QEMU ------------------------------------------------------------------------


@dataclass
class FakeCounted:
    total: int
    per_vcpu: dict[int, int] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    totals: tuple[int, ...] = ()


PER_PASS = {MXNET: 3.0, ALWAYS: 2.0, "NNPACK wt8x8": 1.0, "NNPACK wt8x8 precompute": 0.5}
"""Fake instructions per direct FLOP by choice (other NNPACK choices: 1.5)."""
START, BETWEEN = 6_000_000_000, 26_594
"""Fake start-up (different in every run, as the real one) and instructions between two forks."""


class FakeQemu:
    """Stands in for insn_count.run_counted: the totals count_cell.py's forks would print."""

    def __init__(self, workspace: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.workspace = workspace
        """Bytes of workspace a cell's NNPACK call holds: with the budget, whether a transform fits."""
        self.budget = 0
        self.inline: list[bool] = []

    def variant_work(self, args: list[str], variant: dict) -> tuple[float, int, int]:
        """Per-pass instructions, NNPACK convolutions per pass and transforms held."""
        value = lambda flag: args[args.index(flag) + 1] if flag in args else None  # noqa: E731
        policy = variant["policy"]
        pinned = {tuple(p["shape"]): p["choice"] for p in (variant.get("tuning") or {"plans": []})["plans"]}
        if value("--layer"):
            spec = json.loads(value("--layer"))
            shapes = [ConvShape(batch=spec["input"][0], in_c=spec["input"][1], in_h=spec["input"][2],
                                in_w=spec["input"][3], out_c=spec["num_filter"], kernel=tuple(spec["kernel"]),
                                stride=tuple(spec["stride"]), pad=tuple(spec["pad"]), no_bias=spec["no_bias"],
                                groups=spec.get("num_group", 1))]
        else:
            shapes = [layer.shape for layer in conv_layers(value("--network"), int(value("--batch")))]
        work, calls, transforms = 0.0, 0, 0
        for shape in shapes:
            eligible = nnpack_rejects(shape) is None
            choice = {"never": MXNET, "always": ALWAYS if eligible else MXNET}.get(policy) or \
                pinned.get(tuple(shape.plan_shape()), MXNET)
            tile = {"NNPACK wt8x8": 64, "NNPACK ft8x8": 64, "NNPACK ft16x16": 256}.get(choice)
            if shape.batch > 1 and tile and \
                    (shape.out_c * shape.in_c + shape.batch * (shape.in_c + shape.out_c)) * tile * 4 > self.budget - 8 * 2**20:
                choice = MXNET  # patch 0007's ChargeWorkspace: a batch's workspace over the budget runs MXNet's code
            if choice.endswith(" precompute"):
                # patch 0007 holds a transform when it fits the budget, less 8 MiB, beside the workspace;
                # NNPACK's size: out_c * in_c floats times the tile's elements (k_h * k_w for implicit-gemm)
                tile = {"NNPACK wt8x8": 64, "NNPACK ft8x8": 64, "NNPACK ft16x16": 256,
                        "NNPACK implicit-gemm": shape.kernel[0] * shape.kernel[1]}[choice.removesuffix(" precompute")]
                if shape.out_c * shape.in_c * tile * 4 + self.workspace <= self.budget - 8 * 2**20:
                    transforms += 1
                else:
                    choice = choice.removesuffix(" precompute")  # runs without one
            work += shape.flops_per_image * shape.batch * PER_PASS.get(choice, 1.5)
            calls += choice != MXNET
        return work, calls, transforms

    def __call__(self, argv, settings, *, env, cwd, timeout, inline, log_path):
        args = [str(a) for a in argv]
        self.calls.append(args)
        self.inline.append(inline)
        self.envs.append(dict(env))
        self.budget = int(env["MXNET_NNPACK_MEMORY_BUDGET_MB"]) * 2**20
        k1, k2 = map(int, args[args.index("--passes") + 1].split(","))
        variants = json.loads(Path(args[args.index("--variants") + 1]).read_text())
        total = START + 1_000 * len(self.calls)  # start-up differs from run to run
        totals, lines = [], []
        for variant in variants:
            total += 10_000_000  # the variant's child: set-up and warm-up
            work, calls, transforms = self.variant_work(args, variant)
            for i, passes in enumerate((k1, k1, k2, k1, k2)):  # an uncounted fork, then K1, K2, K1, K2
                totals.append(int(total + i * BETWEEN + 12_345 + passes * work))
            totals.append(total + 5 * BETWEEN + 999)
            lines.append("RESULT " + json.dumps({"kind": "count", "variant": variant["name"],
                                                 "nnpack_conv_calls_per_pass": calls, "transforms": transforms,
                                                 "warmup": int(args[args.index("--warmup") + 1]),
                                                 "memory_budget_bytes": self.budget,
                                                 "workspace_bytes": self.workspace if calls else 0}))
        totals.append(total + 777)
        return FakeCounted(totals[-1], {0: totals[-1]}, "\n".join(lines) + "\n", "", tuple(totals))


STATIC_QEMU = "/home/tools/qemu-trixie-10.0.13/usr/bin/qemu-aarch64"
"""What python_env() gives an ARM Python: Debian 13's static QEMU 10, which cannot load the insn plugin."""


def fake_env(tmp_path: Path, target: str = "arm64") -> PythonEnv:
    return PythonEnv(TARGETS[target], DISTRIBUTIONS["debian12"], tmp_path / "root", tmp_path / "root/python3.11",
                     qemu=STATIC_QEMU.replace("aarch64", TARGETS[target].qemu_binary.removeprefix("qemu-")))


def test_the_runner_takes_each_variant_from_its_forks_and_resumes_from_its_cache(tmp_path: Path) -> None:
    qemu = FakeQemu()
    options = CountOptions(min_increment=2 * 1_179_648 / 16)  # K2 = 2 passes of SMALL

    def runner(wheel: str) -> CellRunner:
        return CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path), options,
                          {"wheel_sha256": wheel}, tmp_path / "log", qemu)

    cell = layer_cell(SMALL, [MXNET, "NNPACK wt8x8"])
    measured = runner("abc").measure(cell)
    assert runner("abc").passes(cell) == (0, 2)
    # per pass 1,179,648 FLOPs x 3.0 (MXNet) and x 1.0 (wt8x8), batch 1
    assert measured[MXNET].insns_per_image == 3 * 1_179_648 and measured["NNPACK wt8x8"].insns_per_image == 1_179_648
    assert measured[MXNET].between_forks == BETWEEN and measured[MXNET].spread == 0
    (argv,) = qemu.calls
    # the host's qemu-aarch64 (7.2, the plugin's API), not the static QEMU 10 the env came with
    assert argv[:4] == ["qemu-aarch64", "-L", str(tmp_path / "root"), str(tmp_path / "root/python3.11")]
    assert argv[4].endswith("count_cell.py") and argv[5] == "--layer"
    key = runner("abc").key(cell)
    assert argv[-6:] == ["--variants", str(tmp_path / "work" / f"count-variants-{key[:12]}.json"), "--warmup", "2",
                         "--passes", "0,2"]  # named by the cell: alike run to run, apart from other jobs' cells
    assert not list((tmp_path / "work").glob("count-variants-*.json"))  # removed once counted
    env = qemu.envs[0]
    assert env["MXNET_ENGINE_TYPE"] == "NaiveEngine" and env["OMP_NUM_THREADS"] == "1"
    assert env["MXNET_CPU_NNPACK_NTHREADS"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["MXNET_ENFORCE_DETERMINISM"] == "1" and env["PYTHONPATH"] == str(tmp_path / "site")
    assert runner("abc").run_cell(cell)["cached"] and len(qemu.calls) == 1  # a new runner finds it on disk
    assert not runner("def").run_cell(cell)["cached"] and len(qemu.calls) == 2  # another wheel: counted again


def test_a_cell_says_what_it_counts_when_it_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a batch-8 cell can run an hour: its one line at the end was all a user saw meanwhile
    qemu = FakeQemu()
    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                        CountOptions(), {"wheel_sha256": "abc"}, tmp_path / "log", qemu)
    cell = layer_cell(SMALL, [MXNET, "NNPACK wt8x8"])
    runner.measure(cell)
    lines = capsys.readouterr().err.splitlines()  # log.console writes to stderr
    started = [i for i, line in enumerate(lines) if f"{cell.label}: counting MXNet, NNPACK wt8x8 under QEMU" in line]
    done = [i for i, line in enumerate(lines) if line.strip().startswith(f"{cell.label} (") and "K2 =" in line]
    assert started and done and started[0] < done[0], lines
    runner.measure(cell)  # from the cache: nothing is started
    assert "counting" not in capsys.readouterr().err


def test_the_inline_counter_is_asked_for_and_keeps_its_own_cells(tmp_path: Path) -> None:
    qemu = FakeQemu()

    def runner(inline: bool) -> CellRunner:
        return CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                          CountOptions(inline=inline), {"wheel_sha256": "abc"}, tmp_path / "log", qemu)

    cell = layer_cell(SMALL, [MXNET])
    runner(True).measure(cell)
    runner(False).measure(cell)  # not taken from the inline counter's cell
    assert qemu.inline == [True, False]
    assert runner(True).run_cell(cell)["cached"] and len(qemu.calls) == 2


def test_cells_run_under_the_hosts_qemu_not_the_static_one(tmp_path: Path) -> None:
    for target, binary in (("arm64", "qemu-aarch64"), ("armv7", "qemu-arm")):
        env = fake_env(tmp_path, target)
        assert env.argv[0].startswith("/home/tools/qemu-trixie")
        counting = count_runner.counting_env(env)
        assert counting.argv[0] == binary and counting.argv[1:] == env.argv[1:]
    with pytest.raises(ConfigurationError, match="give an ARM target"):
        count_runner.counting_env(PythonEnv(TARGETS["x86_64"], DISTRIBUTIONS["debian12"], tmp_path, tmp_path / "py"))


def test_a_cell_with_a_second_guest_thread_is_refused(tmp_path: Path) -> None:
    class Threaded(FakeQemu):  # the cell's process printed two vCPUs: a thread ran
        def __call__(self, argv, settings, **kwargs):
            counted = super().__call__(argv, settings, **kwargs)
            return FakeCounted(counted.total, {0: counted.total - 5, 1: 5}, counted.stdout, "", counted.totals)

    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path, Settings(home=tmp_path), CountOptions(),
                        {"wheel_sha256": "abc"}, tmp_path / "log", Threaded())
    with pytest.raises(VerificationError, match=r"ran 2 guest threads: counts need one"):
        runner.measure(layer_cell(SMALL, [MXNET]))


def test_forks_that_disagree_or_are_missing_are_refused(tmp_path: Path) -> None:
    class Drifting(FakeQemu):
        def __call__(self, argv, settings, **kwargs):
            counted = super().__call__(argv, settings, **kwargs)
            totals = list(counted.totals)
            totals[4] += 5_000  # the second K2 fork of the first variant did more
            return FakeCounted(counted.total, counted.per_vcpu, counted.stdout, "", tuple(totals))

    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path, Settings(home=tmp_path),
                        CountOptions(min_increment=1), {"wheel_sha256": "abc"}, tmp_path / "log", Drifting())
    with pytest.raises(VerificationError, match=r"MXNet: two counts of the same passes differ by 0\.141%"):
        runner.measure(layer_cell(SMALL, [MXNET]))  # 5,000 of 3 x 1,179,648 per pass

    class Short(FakeQemu):
        def __call__(self, argv, settings, **kwargs):
            counted = super().__call__(argv, settings, **kwargs)
            return FakeCounted(counted.total, counted.per_vcpu, counted.stdout, "", counted.totals[3:])

    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "w2", Settings(home=tmp_path),
                        CountOptions(), {"wheel_sha256": "abc"}, tmp_path / "log", Short())
    with pytest.raises(VerificationError, match=r"gave 10 instruction totals and 2 variant records, expected 13 and 2"):
        runner.measure(layer_cell(SMALL, [MXNET, ALWAYS]))


def test_the_repeat_reruns_the_quickest_cell_with_nnpack_the_run_counted(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The repeat check costs little: it reruns the cell whose count took least time, not the first network's
    (at batch 8 on armv7 that cell is an hour, and the repeat doubled the run), but one with NNPACK in it:
    a depthwise layer's cell has MXNet's variant alone (the first version of this picked those)."""
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")
    layers = conv_layers("mobilenet", 1)
    depthwise = next(layer.shape for layer in layers if layer.shape.groups > 1)
    quick = next(layer.shape for layer in layers if layer.shape.kernel == (1, 1))
    spec = lambda shape: json.dumps(shape.cell_spec(), separators=(",", ":"))  # noqa: E731

    class Timed(FakeQemu):
        def __call__(self, argv, settings, **kwargs):
            args = [str(a) for a in argv]
            layer = args[args.index("--layer") + 1] if "--layer" in args else None
            time.sleep({spec(depthwise): 0.05, spec(quick): 0.25}.get(layer, 0.5))
            return super().__call__(argv, settings, **kwargs)

    qemu = Timed()
    results = bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site",
                                    Path("mxnet.whl"), "abc", CountOptions(networks=("mobilenet",), batches=(1,), jobs=1),
                                    tmp_path / "bench", tmp_path / "log", qemu)
    assert results["repeat"]["cell"] == f"layer {quick.describe()} batch 1"
    assert spec(quick) in qemu.calls[-1] and qemu.calls[-1] in qemu.calls[:-1]
    assert len(results["repeat"]["insns_per_image"]) == len(layer_cell(quick).variants) > 1


def test_run_count_end_to_end_with_a_fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")
    qemu = FakeQemu()
    results = bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site",
                                    Path("mxnet.whl"), "abc", CountOptions(networks=("resnet18",), batches=(1,)),
                                    tmp_path / "bench", tmp_path / "log", qemu)
    (row,) = results["networks"]
    flops = sum(layer.shape.flops_per_image for layer in conv_layers("resnet18", 1))
    # never: 3 per FLOP everywhere; auto: the cheapest per layer (wt8x8 precompute, 0.5, on 3x3/1 layers;
    # 1.5 for any other NNPACK choice beats MXNet's 3 on the rest)
    assert row["insns_per_image"][MXNET] == pytest.approx(3.0 * flops)
    auto = sum(layer.shape.flops_per_image * (0.5 if layer.shape.kernel == (3, 3) and layer.shape.stride == (1, 1)
                                              else 1.5) for layer in conv_layers("resnet18", 1))
    assert row["insns_per_image"][AUTO] == pytest.approx(auto)
    assert row["auto_choices"]["stage1_unit1_conv1"] == "NNPACK wt8x8 precompute"
    assert row["auto_choices"]["conv0"] == "NNPACK implicit-gemm"  # first of the 1.5s
    conv0 = results["layers"][0]
    assert conv0["flop_per_insn"][MXNET] == pytest.approx(1 / 3)
    assert row["transforms"] == {"pinned": 13, "held": 13}  # the 3x3/1 layers: 4 in stage 1, 3 in each later one
    # one process per distinct shape (12), one per policy for the network, and one cell again (the repeat)
    assert len(qemu.calls) == 12 + 3 + 1
    assert results["repeat"]["largest_difference"] == 0 and qemu.calls[-1] in qemu.calls[:-1]
    assert set(results["repeat"]["insns_per_image"]) - {MXNET}  # a cell with NNPACK in it, not MXNet's alone
    assert set(row["cell_seconds"]) == {MXNET, ALWAYS, AUTO}
    assert row["seconds"] == pytest.approx(sum(row["cell_seconds"].values()), abs=0.05)
    assert len(results["shapes"]) == 12 and len(results["layers"]) == 21
    saved = json.loads(Path(results["json"]).read_text())
    assert saved["networks"][0]["insns_per_image"] == row["insns_per_image"]
    assert "partial" not in saved and saved["finished"]
    assert not (Path(results["json"]).parent / "count-arm64.partial.json").exists()
    assert Path(results["json"]).name == "count-arm64.json"
    assert [Path(p).name for p in results["plots"]] == ["count-arm64-networks.png", "count-arm64-layers.png"]
    assert all(Path(p).stat().st_size > 10_000 for p in results["plots"])
    text = render(bench_count.network_table(results))
    row_text = next(line for line in text.splitlines() if "resnet18" in line)
    assert f"{auto / (3.0 * flops):.2f}" in row_text and "0.67" in row_text  # auto / MXNet; always 2/3 of MXNet
    assert "stage1_unit1_conv1" in render(bench_count.layer_table(results))


def test_a_network_whose_calls_do_not_match_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")

    class NoNNPACK(FakeQemu):
        def __call__(self, argv, settings, **kwargs):
            counted = super().__call__(argv, settings, **kwargs)
            return FakeCounted(counted.total, stdout=re.sub(r'"nnpack_conv_calls_per_pass": \d+',
                                                            '"nnpack_conv_calls_per_pass": 0', counted.stdout),
                               totals=counted.totals)

    with pytest.raises(VerificationError, match=r"alexnet batch 1: NNPACK always: NNPACK ran 0 convolutions per pass, "
                                                r"expected 5"):
        bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site",
                              Path("mxnet.whl"), "abc", CountOptions(networks=("alexnet",), batches=(1,), layers=False),
                              tmp_path / "bench", tmp_path / "log", NoNNPACK())


def test_an_interrupted_run_leaves_what_it_counted_marked_partial(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole table takes hours: a run stopped after a network keeps that network's row on disk."""
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")

    class FailsOnAlexNet(FakeQemu):
        def __call__(self, argv, settings, **kwargs):
            if any("alexnet" in str(a) for a in argv):
                raise VerificationError("stopped")
            return super().__call__(argv, settings, **kwargs)

    with pytest.raises(VerificationError, match="stopped"):
        bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site",
                              Path("mxnet.whl"), "abc",
                              CountOptions(networks=("resnet18", "alexnet"), batches=(1,), layers=False),
                              tmp_path / "bench", tmp_path / "log", FailsOnAlexNet())
    assert not (tmp_path / "bench" / "count-arm64.json").exists()  # a complete file from before would stay
    saved = json.loads((tmp_path / "bench" / "count-arm64.partial.json").read_text())
    assert saved["partial"] is True and "finished" not in saved
    assert [r["network"] for r in saved["networks"]] == ["resnet18"]
    flops = sum(layer.shape.flops_per_image for layer in conv_layers("resnet18", 1))
    assert saved["networks"][0]["insns_per_image"][MXNET] == pytest.approx(3.0 * flops)


class Overlapping(FakeQemu):
    """FakeQemu that takes a moment per cell and records how many cells ran at once."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.running = self.most = 0

    def __call__(self, argv, settings, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)
            return super().__call__(argv, settings, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def test_cells_counted_several_at_once_give_the_same_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")
    results = {}
    for jobs in (1, 3):
        qemu = Overlapping()
        results[jobs] = bench_count.run_count(
            TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site", Path("mxnet.whl"), "abc",
            CountOptions(networks=("alexnet", "resnet18"), batches=(1,), jobs=jobs), tmp_path / f"bench{jobs}",
            tmp_path / "log", qemu)
        assert qemu.most == jobs  # 5 + 12 layer cells: three ran at once with 3 jobs, one at a time with 1
        assert len(qemu.calls) == 5 + 12 + 2 * 3 + 1  # each cell once (a network's: one per policy), and the repeat
        assert not list((tmp_path / f"bench{jobs}" / "count").glob("count-variants-*.json"))

    def counts(run: dict) -> tuple:
        return ([(r["network"], r["insns_per_image"], r["auto_choices"]) for r in run["networks"]],
                [(r["layer"], r["insns_per_image"], r["auto_choice"]) for r in run["layers"]],
                [(r["shape"], r["insns_per_image"]) for r in run["shapes"]])

    assert counts(results[3]) == counts(results[1])
    assert [r["network"] for r in results[3]["networks"]] == ["alexnet", "resnet18"]


class Sleeping(FakeQemu):
    """Each cell is a real process group (a shell and its sleeping child) that would run for a minute;
    the cell named `fails` exits with an error at once instead."""

    def __init__(self, tmp_path: Path, fails: str | None = None) -> None:
        super().__init__()
        self.tmp_path, self.fails = tmp_path, fails
        self.started: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, argv, settings, **kwargs):
        args = [str(a) for a in argv]
        name = json.loads(args[args.index("--layer") + 1])["num_filter"]
        if str(name) == self.fails:
            raise InsnCountError(f"cell {name} failed")
        pids = self.tmp_path / f"pids-{name}"
        with self.lock:
            self.started.append(pids)
        proc = run_group(["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"], capture_output=True, timeout=120)
        if proc.returncode != 0:  # as run_counted: a guest killed by a signal gives no count
            raise InsnCountError(f"cell {name} was killed by signal {-proc.returncode}")
        return super().__call__(argv, settings, **kwargs)


def cells_with_filters(*filters: int) -> list:
    return [layer_cell(ConvShape(batch=1, in_c=8, in_h=8, in_w=8, out_c=n, kernel=(3, 3), pad=(1, 1)), [MXNET])
            for n in filters]


def pids_of(paths: list[Path], seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while not all(p.is_file() and p.read_text().endswith("\n") for p in paths):
        assert time.monotonic() < deadline, f"the cells did not start: {paths}"
        time.sleep(0.05)
    return [int(pid) for p in paths for pid in p.read_text().split()]


def running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_an_interrupt_stops_every_cell_the_workers_run(tmp_path: Path) -> None:
    """Ctrl-C reaches only the main thread: the cells running in worker threads must stop too, at once."""
    qemu = Sleeping(tmp_path)
    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                        CountOptions(jobs=2), {"wheel_sha256": "abc"}, tmp_path / "log", qemu)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with runner.parallel():
            runner.prefetch(cells_with_filters(1, 2, 3))
            pids = pids_of([tmp_path / "pids-1", tmp_path / "pids-2"])
            raise KeyboardInterrupt
    assert time.monotonic() - started < 20  # not the cells' 60 s
    assert [pid for pid in pids if running(pid)] == []  # the shells and their sleeps
    assert len(qemu.started) == 2 and runner.cache == {}  # the third cell never started; nothing half-counted kept


class Ordered(FakeQemu):
    """Records the order in which cells start; each takes a moment, so the workers stay busy (cell 2
    longer: cell 1's worker frees first, with one cell running, and the order is not a race)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.order: list[int] = []

    def __call__(self, argv, settings, **kwargs):
        args = [str(a) for a in argv]
        cell = json.loads(args[args.index("--layer") + 1])["num_filter"]
        with self.lock:
            self.order.append(cell)
        time.sleep(0.9 if cell == 2 else 0.3)
        return super().__call__(argv, settings, **kwargs)


def test_a_cell_the_run_needs_takes_the_next_free_worker_not_the_prefetch_queues_end(tmp_path: Path) -> None:
    """Session 13: armv7 MobileNet's network cell waited behind every Inception-BN layer cell prefetched
    for the next network (hours). The cell asked for must start as soon as a worker frees."""
    qemu = Ordered()
    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                        CountOptions(jobs=2), {"wheel_sha256": "abc"}, tmp_path / "log", qemu)
    *prefetched, needed = cells_with_filters(1, 2, 3, 4, 5, 6)
    with runner.parallel():
        runner.prefetch(prefetched)
        runner.run_cell(needed)
        assert sorted(qemu.order[:2]) == [1, 2] and qemu.order[2] == 6, qemu.order
        runner.run_cell(prefetched[-1])  # a prefetched cell still waiting is taken out of the backlog, counted once
    assert sorted(qemu.order) == sorted(set(qemu.order)) and 5 in qemu.order
    assert len(runner.cache) == len(qemu.order)  # every cell that started was kept


def test_a_failed_cell_stops_the_others_and_is_reported(tmp_path: Path) -> None:
    qemu = Sleeping(tmp_path, fails="2")
    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                        CountOptions(jobs=2), {"wheel_sha256": "abc"}, tmp_path / "log", qemu)
    one, two = cells_with_filters(1, 2)
    started = time.monotonic()
    with pytest.raises(InsnCountError, match="cell 2 failed"):
        with runner.parallel():
            runner.prefetch([one, two])
            pids = pids_of([tmp_path / "pids-1"])
            runner.run_cell(two)
    assert time.monotonic() - started < 20
    assert [pid for pid in pids if running(pid)] == []


def test_a_run_takes_counted_cells_from_another_machines_cache(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A long run is carried to a new machine by its count-cells.json (--cells): the same wheel's cells
    are not counted again and give the same table; another wheel's are not taken."""
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")

    def run(home: str, wheel_sha256: str, seeds: tuple[Path, ...] = ()) -> tuple[dict, FakeQemu]:
        qemu = FakeQemu()
        results = bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path / home), fake_env(tmp_path),
                                        tmp_path / "site", Path("mxnet.whl"), wheel_sha256,
                                        CountOptions(networks=("alexnet",), batches=(1,), jobs=1, seeds=seeds),
                                        tmp_path / home / "bench", tmp_path / "log", qemu)
        return results, qemu

    first, qemu = run("one", "abc")
    assert len(qemu.calls) == 5 + 3 + 1  # 5 layer shapes, the network under 3 policies, the repeat
    kept = tmp_path / "kept-cells.json"
    kept.write_text((tmp_path / "one" / "bench" / "count" / "count-cells.json").read_text())
    again, qemu = run("two", "abc", (kept,))
    assert len(qemu.calls) == 1  # only the repeat, which is never taken from a cache
    assert again["networks"][0]["insns_per_image"] == first["networks"][0]["insns_per_image"]
    assert [r["insns_per_image"] for r in again["layers"]] == [r["insns_per_image"] for r in first["layers"]]
    _, qemu = run("three", "def", (kept,))  # another wheel: its cells are its own
    assert len(qemu.calls) == 5 + 3 + 1


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"--cells .*bad\.json: cannot read it as JSON"),
    ('[1, 2]', r"not a count-cells\.json of invoke bench --count \(1 entries unlike a counted cell"),
    ('{"abc": {"totals": []}}', r"not a count-cells\.json .*e\.g\. 'abc'"),
])
def test_a_seed_that_is_not_a_cell_cache_is_refused(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                   CountOptions(seeds=(bad,)), {"wheel_sha256": "abc"}, tmp_path / "log", FakeQemu())
    assert not (tmp_path / "work" / "count-cells.json").exists()


def test_count_needs_an_emulated_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="give an ARM target"):
        bench_count.run_count(TARGETS["x86_64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path,
                              Path("w.whl"), "abc", CountOptions(), tmp_path, tmp_path / "log")


def test_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="minimum increment"):
        CountOptions(min_increment=-1)
    with pytest.raises(ConfigurationError, match="at least 2 warm-up"):
        CountOptions(warmup=1)


# The real thing under QEMU ----------------------------------------------------------------------------


def built_wheel(target: str) -> Path:
    wheels = sorted((MXNET_BUILD_HOME / "out" / target / "wheel").glob("mxnet-*.whl"))
    if not wheels:
        pytest.skip(f"no {target} wheel in {MXNET_BUILD_HOME / 'out' / target / 'wheel'} "
                    f"(build it with invoke build --arch {target})")
    return wheels[-1]


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm64", "armv7"])
def test_a_small_layer_counts_the_same_twice_under_qemu(target: str, build_settings: Settings,
                                                        tmp_path: Path) -> None:
    from nnpack_toolchain.sources import sha256_of
    from nnpack_toolchain.target_env import python_env

    wheel = built_wheel(target)
    env = python_env(TARGETS[target], build_settings)
    site = tmp_path / "site"
    env.install_wheel(wheel, site, tmp_path / "pip.log")
    runner = CellRunner(env, site, tmp_path / "work", build_settings, CountOptions(),
                        {"wheel_sha256": sha256_of(wheel)}, tmp_path / "count.log")
    assert env.argv[0] != TARGETS[target].qemu_binary  # python_env's static QEMU 10 installed the wheel ...
    assert runner.env.argv[0] == TARGETS[target].qemu_binary  # ... the host's QEMU 7.2 (the plugin's) counts
    cell = layer_cell(SMALL, [MXNET, ALWAYS])
    first = runner.measure(cell)  # raises if its two K2-K1 increments differ by more than 0.1 %
    raw = runner.run_cell(cell)
    del runner.cache[runner.key(cell)]
    again = runner.measure(cell)  # a second process
    raw_again = runner.run_cell(cell)
    print(f"{target}: {raw['seconds']} s and {raw_again['seconds']} s, K2 = {raw['passes'][1]}; first fork's totals "
          f"{raw['totals'][0]} and {raw_again['totals'][0]} (start-up is not repeatable, the passes are)")
    for choice in (MXNET, ALWAYS):
        per_image, repeated = first[choice].insns_per_image, again[choice].insns_per_image
        print(f"{target} {choice}: {per_image:.0f} and {repeated:.0f} instructions per image, "
              f"{flop_per_insn(SMALL.flops_per_image, per_image):.2f} FLOP/insn, d = {first[choice].between_forks}")
        assert per_image > 0 and relative_difference(per_image, repeated) <= count_layers.REPEAT_TOLERANCE
        assert count_layers.check_layer_record(choice, first[choice].record, cell.label, SMALL) is None, first[choice].record
    # MXNet's im2col + GEMM is a direct method: at most 8 FLOP per 128-bit NEON instruction
    assert flop_per_insn(SMALL.flops_per_image, first[MXNET].insns_per_image) <= count_layers.NEON_FLOP_PER_INSN


class Timeline(FakeQemu):
    """Records when each cell first starts and ends (not the repeat's); one layer's cell (slow) takes longest."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.lock = threading.Lock()
        self.spans: dict[str, list[float]] = {}
        self.network_variants: list[list[str]] = []

    def __call__(self, argv, settings, **kwargs):
        args = [str(a) for a in argv]
        variants = [v["name"] for v in json.loads(Path(args[args.index("--variants") + 1]).read_text())]
        name = args[args.index("--layer") + 1] if "--layer" in args else variants[0]
        with self.lock:
            if "--network" in args:
                self.network_variants.append(variants)
            first = name not in self.spans
            if first:
                self.spans[name] = [time.monotonic()]
        time.sleep(0.6 if name == self.slow else 0.02)
        counted = super().__call__(argv, settings, **kwargs)
        if first:
            with self.lock:
                self.spans[name].append(time.monotonic())
        return counted


def test_a_networks_policies_are_cells_of_their_own_and_never_and_always_need_not_wait_for_the_layers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 19: a network's three variants ran one after another in one process, after all its layers
    (VGG-16 at batch 8 on armv7: 3.8 h on one core while the other idled). Each is a cell of its own now;
    never's and always's start while layers are still counted, and the counts are each variant's own."""
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")
    last = bench_count.distinct_shapes("resnet18", 1)[-1]  # the last layer cell given to a worker
    qemu = Timeline(json.dumps(last.cell_spec(), separators=(",", ":")))
    results = bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site",
                                    Path("mxnet.whl"), "abc", CountOptions(networks=("resnet18",), batches=(1,), jobs=2),
                                    tmp_path / "bench", tmp_path / "log", qemu)
    assert sorted(qemu.network_variants[:3]) == [[MXNET], [ALWAYS], [AUTO]]  # one process each
    last_layer_end = qemu.spans[qemu.slow][1]
    assert qemu.spans[MXNET][0] < last_layer_end and qemu.spans[ALWAYS][0] < last_layer_end
    (row,) = results["networks"]
    flops = sum(layer.shape.flops_per_image for layer in conv_layers("resnet18", 1))
    assert row["insns_per_image"][MXNET] == pytest.approx(3.0 * flops)
    assert row["insns_per_image"][ALWAYS] == pytest.approx(sum(
        layer.shape.flops_per_image * (2.0 if nnpack_rejects(layer.shape) is None else 3.0)
        for layer in conv_layers("resnet18", 1)))


def test_a_networks_never_and_always_cells_go_before_the_next_networks_layers(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The review of session 19: the first version queued them behind the next network's layer cells too."""
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")
    order: list[str] = []

    class Recorder(FakeQemu):
        def __call__(self, argv, settings, **kwargs):
            args = [str(a) for a in argv]
            variants = [v["name"] for v in json.loads(Path(args[args.index("--variants") + 1]).read_text())]
            order.append(f"{args[args.index('--network') + 1]} {variants[0]}" if "--network" in args
                         else args[args.index("--layer") + 1])
            time.sleep(0.02)
            return super().__call__(argv, settings, **kwargs)

    bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site",
                          Path("mxnet.whl"), "abc", CountOptions(networks=("alexnet", "resnet18"), batches=(1,), jobs=2),
                          tmp_path / "bench", tmp_path / "log", Recorder())
    spec = lambda shape: json.dumps(shape.cell_spec(), separators=(",", ":"))  # noqa: E731
    resnet_only = {spec(shape) for shape in bench_count.distinct_shapes("resnet18", 1)} - \
        {spec(shape) for shape in bench_count.distinct_shapes("alexnet", 1)}
    first_resnet_layer = min(order.index(cell) for cell in resnet_only)
    assert order.index("alexnet MXNet") < first_resnet_layer and order.index("alexnet NNPACK always") < first_resnet_layer
    # session 20, longest first: a network's never and always cells (VGG-16's MXNet cell at batch 8 on armv7: 2.4 h,
    # the run's longest single cell) start before its layers, so the longest does not start last
    assert sorted(order[:2]) == ["alexnet MXNet", "alexnet NNPACK always"], order[:3]
    assert order.index("resnet18 MXNet") < first_resnet_layer


def test_a_cell_warms_up_once_where_no_pass_builds_a_kernel_transform(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 20: the second warm-up pass is there for patch 0007's kernel transform, built on a node's second
    call, at batch 1 only and never by MXNet's own code; everywhere else one pass warms up (a quarter less work in
    the batch-8 cells, the run's longest)."""
    monkeypatch.setattr(bench_count, "installed_qemu_version", lambda: "1:7.2+test")
    warmups: dict[tuple[str, int], set[str]] = {}

    class Recorder(FakeQemu):
        def __call__(self, argv, settings, **kwargs):
            args = [str(a) for a in argv]
            policies = {v["policy"] for v in json.loads(Path(args[args.index("--variants") + 1]).read_text())}
            if "--network" in args:
                label, batch = f"network {policies.pop()}", int(args[args.index("--batch") + 1])
            else:
                label = "layer" if policies != {"never"} else "layer MXNet only"
                batch = json.loads(args[args.index("--layer") + 1])["input"][0]
            warmups.setdefault((label, batch), set()).add(args[args.index("--warmup") + 1])
            return super().__call__(argv, settings, **kwargs)

    results = bench_count.run_count(TARGETS["arm64"], Settings(home=tmp_path), fake_env(tmp_path), tmp_path / "site",
                                    Path("mxnet.whl"), "abc", CountOptions(networks=("resnet18",), batches=(1, 8), jobs=1),
                                    tmp_path / "bench", tmp_path / "log", Recorder())
    assert warmups == {("network never", 1): {"1"}, ("network always", 1): {"2"}, ("network auto", 1): {"2"},
                       ("layer", 1): {"2"},
                       ("network never", 8): {"1"}, ("network always", 8): {"1"}, ("network auto", 8): {"1"},
                       ("layer", 8): {"1"}, ("layer MXNet only", 8): {"1"}}  # the strided ones: not NNPACK's at batch 8
    rows = {row["batch"]: row for row in results["networks"]}
    assert {name: forks["warmup"] for name, forks in rows[1]["forks"].items()} == {MXNET: 1, ALWAYS: 2, AUTO: 2}
    assert {forks["warmup"] for forks in rows[8]["forks"].values()} == {1}
    assert {forks["warmup"] for shape in results["shapes"] for forks in shape["forks"].values()} == {1, 2}


def test_a_cells_cache_key_is_what_it_was_where_its_warm_up_did_not_change(tmp_path: Path) -> None:
    """Session 20 gave batch-8 and MXNet-only cells one warm-up pass; every other cell must keep the key session
    19's code (b91681a) computed for it, or a cache from before recounts hours of cells for nothing. The literals
    are b91681a's keys of these cells (the scripts' digest fixed: a changed script changes every key, on purpose)."""
    runner = CellRunner(fake_env(tmp_path), tmp_path / "site", tmp_path / "work", Settings(home=tmp_path),
                        CountOptions(), {"wheel_sha256": "abc"}, tmp_path / "log", FakeQemu())
    runner.script_digest = "0123456789abcdef"
    keys = {cell.variants[0].policy: runner.key(cell)
            for cell in count_cells.network_cells(tmp_path / "work" / "models", "resnet18", 1, {"plans": []})}
    assert runner.key(layer_cell(SMALL)) == "7f6055780226c21392fb75807343fe94e3d847990db95f65ef29d7de595d379c"
    assert keys["always"] == "fad30f1b860489b1a4e51e949747945cbd991eb052078978cd75bacf48e9e762"
    assert keys["auto"] == "e2f191502bbdfe2e5ba65981b34eeda2b5411a34e9d1a6b59d50a745c3f1912b"
    assert keys["never"] != "08b7bf2ae1262201a3954cb768b5ecf74a263eff87b8b29fddbc7bd287fb41d2"  # one warm-up pass now
