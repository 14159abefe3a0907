"""check-model: shape inference, NNPACK eligibility under both rule sets, FLOP shares, errors.

Every expected number below is worked out by hand from the layer definitions (the arithmetic is in
the comments), not copied from a run. No MXNet is needed.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from nnpack_toolchain import model_zoo
from nnpack_toolchain.check_model import check_model, parse_shape
from nnpack_toolchain.check_model_types import ReasonCode, RuleSet
from nnpack_toolchain.check_model_report import main, render_table, report_to_json
from nnpack_toolchain.errors import ConfigurationError

BUILD, STRICT = RuleSet.BUILD, RuleSet.STRICT_1_0

# Convolutions on NNPACK per (model, batch): (this build, MXNet 1.0 rules, total convolutions).
#  AlexNet: 5 convs with bias; only conv1 is strided (11x11 stride 4): batch 1 -> all 5;
#           batch 8 -> conv1 fails the "batch 1 or stride 1" rule -> 4. Bias everywhere: same in 1.0.
#  VGG-16: 2+2+3+3+3 = 13 convs, 3x3 stride 1 with bias -> 13 at any batch, both rule sets.
#  ResNet-18: conv0 + 4 stages x (unit1: conv1, conv2, sc; unit2: conv1, conv2) = 1 + 4*5 = 21 convs,
#           all no_bias=True -> 1.0 rules: 0. This build, batch 1: 21. Batch 8: strided convs fail:
#           conv0 (stride 2) and, in stages 2-4, unit1_conv1 and unit1_sc (stride 2) = 1 + 3*2 = 7 -> 14.
#  Inception-BN: stage 1-2 has 3 ConvFactory convs; 8 InceptionA blocks x 7 convs = 56; 2 InceptionB
#           blocks x 5 = 10; total 69, all with bias. Strided: conv_1 (stride 2) and per B block
#           3x3 and double_3x3_1 (stride 2) -> 1 + 2*2 = 5; batch 8 -> 64.
CONV_COUNTS = {
    ("alexnet", 1): (5, 5, 5), ("alexnet", 8): (4, 4, 5),
    ("vgg16", 1): (13, 13, 13), ("vgg16", 8): (13, 13, 13),
    ("resnet18", 1): (21, 0, 21), ("resnet18", 8): (14, 0, 21),
    ("inception-bn", 1): (69, 69, 69), ("inception-bn", 8): (64, 64, 69),
}
# Pooling layers: AlexNet 3, VGG 5, ResNet pool0 + global pool1 = 2, Inception-BN pool_1, pool_2,
# 8 InceptionA pools, 2 InceptionB pools and the final 7x7 average = 13. None is 'full' 2x2/2 max.
POOL_COUNTS = {"alexnet": 3, "vgg16": 5, "resnet18": 2, "inception-bn": 13}
FC_COUNTS = {"alexnet": 3, "vgg16": 3, "resnet18": 1, "inception-bn": 1}


@pytest.mark.parametrize(("model", "batch"), sorted(CONV_COUNTS))
def test_zoo_layer_counts(model: str, batch: int) -> None:
    report = check_model(f"zoo:{model}", batch, (3, 224, 224))
    build, strict, total = CONV_COUNTS[(model, batch)]
    assert report.totals(BUILD).layers["Convolution"] == (build, total)
    assert report.totals(STRICT).layers["Convolution"] == (strict, total)
    for rules in RuleSet:
        assert report.totals(rules).layers["Pooling"] == (0, POOL_COUNTS[model])
        assert report.totals(rules).layers["FullyConnected"] == (FC_COUNTS[model], FC_COUNTS[model])
    assert report.output_shapes == [(batch, 1000)]


def test_alexnet_conv1_at_batch_8() -> None:
    report = check_model("zoo:alexnet", 8, (3, 224, 224))
    conv1 = report.layer("conv1")
    # (224 - 11) // 4 + 1 = 54
    assert conv1.output_shape == (8, 96, 54, 54)
    assert conv1.flops == 2 * 8 * 96 * 54 * 54 * 3 * 11 * 11
    for rules in RuleSet:
        assert conv1.decision(rules).reason == "stride (4, 4) with batch 8: NNPACK needs batch 1 or stride (1,1)"
        assert conv1.decision(rules).codes == (ReasonCode.STRIDE_WITH_BATCH,)
    # conv2: 5x5 pad 2 stride 1 on pool1's output; pool1 is 3x3/2 'valid': (54 - 3) // 2 + 1 = 26.
    conv2 = report.layer("conv2")
    assert conv2.input_shape == (8, 96, 26, 26) and conv2.decision(STRICT).eligible
    # pool3: conv5 is 12x12 ((26 - 3) // 2 + 1 = 12 after pool2); (12 - 3) // 2 + 1 = 5 -> fc1 sees 256*5*5.
    assert report.layer("fc1").summary.startswith(f"{256 * 5 * 5} -> 4096")
    pool1 = report.layer("pool1")
    assert pool1.decision(BUILD).codes == (ReasonCode.POOLING_CONVENTION, ReasonCode.POOL_KERNEL)


def test_alexnet_batch_1_runs_strided_conv1() -> None:
    assert check_model("zoo:alexnet", 1, (3, 224, 224)).layer("conv1").decision(BUILD).eligible


def test_resnet18_convolutions_need_bias_under_1_0_rules() -> None:
    report = check_model("zoo:resnet18", 1, (3, 224, 224))
    for name in ("conv0", "stage1_unit1_conv1", "stage4_unit2_conv2"):
        layer = report.layer(name)
        assert layer.decision(BUILD).eligible
        assert layer.decision(STRICT).reason == "no_bias=True: MXNet 1.0 rules need a bias"
    # 224 -> conv0 stride 2: (224 + 6 - 7) // 2 + 1 = 112 -> pool0 3x3/2 pad 1: (112 + 2 - 3) // 2 + 1 = 56
    # -> stages 56, 28, 14, 7.
    assert report.layer("stage4_unit2_conv2").output_shape == (1, 512, 7, 7)
    assert report.layer("pool1").decision(BUILD).codes == (ReasonCode.NOT_MAX_POOLING, ReasonCode.GLOBAL_POOLING)
    # Batch 8: a strided, bias-free conv fails both conditions under 1.0 rules, in the C++ order.
    strided = check_model("zoo:resnet18", 8, (3, 224, 224)).layer("stage2_unit1_sc")
    assert strided.decision(STRICT).codes == (ReasonCode.NO_BIAS, ReasonCode.STRIDE_WITH_BATCH)
    assert strided.decision(BUILD).codes == (ReasonCode.STRIDE_WITH_BATCH,)


def test_vgg_pooling_fails_only_on_the_convention() -> None:
    pool = check_model("zoo:vgg16", 1, (3, 224, 224)).layer("pool1")
    assert pool.summary == "max (2, 2) stride (2, 2), valid"
    assert pool.decision(BUILD).reason == "pooling_convention valid (MXNet's default): NNPACK needs 'full'"


def test_inception_concat_shapes() -> None:
    report = check_model("zoo:inception-bn", 1, (3, 224, 224))
    # 3a: 1x1 64 + 3x3 64 + double 3x3 96 + proj 32 = 256 channels at 28x28:
    # 224 -> 112 (conv_1 stride 2) -> (112 - 3) // 2 + 1 = 55 (pool_1) -> (55 - 3) // 2 + 1 = 27 (pool_2).
    assert report.layer("conv_3b_1x1").input_shape == (1, 64 + 64 + 96 + 32, 27, 27)
    # 5b: 352 + 320 + 224 + 128 = 1024 channels at 7x7; the final 7x7 pool makes it 1x1.
    assert report.layer("global_pool").input_shape == (1, 1024, 7, 7)
    assert report.layer("fc1").summary == "1024 -> 1000"


@pytest.mark.parametrize(("model", "nodes"), [
    # data 1, 5 convs x (op, weight, bias) 15, 7 relu, 3 pools, 2 LRN, flatten, 3 FC x 3 = 9, 2 dropout,
    # softmax + label 2: 1+15+7+3+2+1+9+2+2 = 42
    ("alexnet", 42),
    # data 1, 13 convs x 3 = 39, 13 relu, 5 pools, flatten, 3 FC x 3 = 9, relu6/7, drop6/7, softmax 2 = 74
    ("vgg16", 74),
    # data, id, bn_data (+4 vars) = 7; conv0 + weight 2, bn0 5, relu0, pool0 -> 16; basic unit:
    # bn 5, relu, conv 2, bn 5, relu, conv 2, plus = 17 (+2 for the projection) -> 4 x (19 + 17) = 144;
    # bn1 5, relu1, pool1, flatten, fc 3, softmax 2 = 13 -> 16 + 144 + 13 = 173
    ("resnet18", 173),
    # conv-bn-relu = 3 + 5 + 1 = 9 nodes. data + 3 x 9 + 2 pools = 30; A block 7 x 9 + pool + concat = 65,
    # 8 of them 520; B block 5 x 9 + pool + concat = 47, 2 of them 94; pool, flatten, fc 3, softmax 2 = 7
    ("inception-bn", 30 + 520 + 94 + 7),
])
def test_zoo_symbol_structure(model: str, nodes: int, tmp_path: Path) -> None:
    path = model_zoo.write_model(model, tmp_path / f"{model}-symbol.json")
    symbol = json.loads(path.read_text())
    assert len(symbol["nodes"]) == nodes
    assert symbol["attrs"] == {"mxnet_version": ["int", 10901]}
    assert symbol["heads"] == [[nodes - 1, 0, 0]]
    assert [symbol["nodes"][i]["op"] for i in symbol["arg_nodes"]] == ["null"] * len(symbol["arg_nodes"])
    assert len(symbol["node_row_ptr"]) == nodes + 1


def tiny_symbol() -> dict[str, Any]:
    g = model_zoo.SymbolBuilder()
    x = g.conv(g.variable("data"), "conv_a", 4, (3, 3), pad=(1, 1))
    x = g.op("Pooling", "pool_a", [x], {"kernel": (2, 2), "stride": (2, 2), "pool_type": "max",
                                         "pooling_convention": "full"})
    x = g.conv(x, "conv_b", 8, (3, 3), stride=(2, 2), pad=(1, 1), no_bias=True)
    x = g.conv(x, "conv_c", 8, (1, 1), no_bias=True)
    x = g.fc(g.op("Flatten", "flat", [x]), "fc", 10)
    return g.symbol(g.softmax_output(x))


def test_flop_share_arithmetic() -> None:
    report = check_model(tiny_symbol(), 2, (3, 8, 8))
    # conv_a 3x3 pad 1 -> (2, 4, 8, 8): 2 * 2 * 4 * 8*8 * 3 * 9 = 27648; on NNPACK (stride 1, bias)
    # pool_a full 2x2/2 max -> (2, 4, 4, 4): 2 * 4 * 4*4 * 2*2 = 512; on NNPACK
    # conv_b 3x3/2 pad 1 -> (4 + 2 - 3) // 2 + 1 = 2 -> (2, 8, 2, 2): 2 * 2 * 8 * 2*2 * 4 * 9 = 4608; batch 2
    #        with stride 2 -> never
    # conv_c 1x1 no_bias -> (2, 8, 2, 2): 2 * 2 * 8 * 4 * 8 = 1024; this build only
    # fc 2 x 32 -> 10: 2 * 2 * 32 * 10 = 1280; always
    expected = {"conv_a": 27648, "pool_a": 512, "conv_b": 4608, "conv_c": 1024, "fc": 1280}
    assert {layer.name: layer.flops for layer in report.layers} == expected
    total = 27648 + 512 + 4608 + 1024 + 1280
    build, strict = report.totals(BUILD), report.totals(STRICT)
    assert (build.flops, build.eligible_flops) == (total, 27648 + 512 + 1024 + 1280)
    assert (strict.flops, strict.eligible_flops) == (total, 27648 + 512 + 1280)
    assert build.share == pytest.approx(30464 / 35072)
    assert report.layer("pool_a").decision(STRICT).eligible
    data = report_to_json(report)
    assert data["totals"]["build"]["nnpack_flops"] == 30464
    assert data["totals"]["build"]["eligible_flops"] == 30464
    build_totals = data["totals"]["build"]
    assert build_totals["eligible_share"] == build_totals["nnpack_share"] == round(30464 / 35072, 6)
    # "eligible" is the key now; "on_nnpack" stays for existing readers, with the same value
    assert data["totals"]["strict_1_0"]["layers"]["Convolution"] == {"eligible": 1, "on_nnpack": 1, "total": 3}
    conv_c = next(layer for layer in data["layers"] if layer["name"] == "conv_c")
    assert conv_c["build"]["eligible"] and not conv_c["strict_1_0"]["eligible"]
    assert conv_c["build"]["on_nnpack"] and not conv_c["strict_1_0"]["on_nnpack"]
    assert conv_c["strict_1_0"]["reasons"][0]["code"] == "no_bias_strict"
    json.dumps(data)  # plain JSON data


def old_format_symbol(conv_attrs: dict[str, str], key: str = "attr") -> dict[str, Any]:
    """A hand-written symbol in the pre-1.0 format ('attr' instead of 'attrs', no node_row_ptr)."""
    return {
        "nodes": [
            {"op": "null", "name": "data", "inputs": []},
            {"op": "null", "name": "c_weight", key: {}, "inputs": []},
            {"op": "null", "name": "c_bias", "inputs": []},
            {"op": "Convolution", "name": "c", key: conv_attrs, "inputs": [[0, 0], [1, 0], [2, 0]]},
            {"op": "Activation", "name": "act", key: {"act_type": "relu"}, "inputs": [[3, 0]]},
        ],
        "arg_nodes": [0, 1, 2],
        "heads": [[4, 0]],
    }


def test_dilated_and_grouped_convolutions() -> None:
    dilated = check_model(old_format_symbol({"kernel": "(3, 3)", "num_filter": "8", "dilate": "(2, 2)"}),
                          1, (3, 16, 16)).layer("c")
    # dilated 3x3 with dilate 2 spans 5: 16 - 5 + 1 = 12
    assert dilated.output_shape == (1, 8, 12, 12)
    assert dilated.decision(BUILD).reason == "dilate (2, 2): NNPACK needs dilate (1,1)"
    grouped = check_model(old_format_symbol({"kernel": "(3, 3)", "num_filter": "6", "num_group": "3",
                                             "pad": "(1, 1)"}, key="param"), 1, (3, 16, 16)).layer("c")
    # 2 * 1 * 6 * 16*16 * (3 / 3) * 9 = 27648
    assert grouped.flops == 27648
    assert grouped.decision(STRICT).reason == "num_group 3: NNPACK needs num_group 1"
    nhwc = check_model(old_format_symbol({"kernel": "(3, 3)", "num_filter": "4", "layout": "NHWC"}),
                       1, (16, 16, 3)).layer("c")
    assert nhwc.output_shape == (1, 14, 14, 4)
    assert nhwc.decision(BUILD).codes == (ReasonCode.LAYOUT,)


def test_fully_connected_without_flatten_is_eligible_with_the_leading_axes_as_the_batch() -> None:
    """flatten=False on a 4-D input (Gluon's Dense(flatten=False)): the patched FullyConnected runs it on
    NNPACK with all axes but the last as the batch (patch 0002, issue 12); before, only 2-D input was."""
    symbol = old_format_symbol({"kernel": "(1, 1)", "num_filter": "4"}, key="attrs")
    symbol["nodes"].append({"op": "null", "name": "fc_weight", "inputs": []})
    symbol["nodes"].append({"op": "FullyConnected", "name": "fc", "attrs": {"num_hidden": "5", "flatten": "False"},
                            "inputs": [[4, 0, 0], [5, 0, 0]]})
    symbol["heads"] = [[6, 0, 0]]
    report = check_model(symbol, 2, (3, 6, 7))
    fc = report.layer("fc")
    # input (2, 4, 6, 7) -> (2, 4, 6, 5): rows 2*4*6 = 48, 2 * 48 * 7 * 5 = 3360
    assert fc.output_shape == (2, 4, 6, 5) and fc.flops == 3360
    assert fc.summary == "7 -> 5, flatten=False"
    for rules in RuleSet:
        assert fc.decision(rules).eligible and fc.decision(rules).codes == (), fc.decision(rules).reason
        assert report.totals(rules).layers["FullyConnected"] == (1, 1)
    fc_json = next(layer for layer in report_to_json(report)["layers"] if layer["name"] == "fc")
    assert fc_json["build"]["eligible"] and fc_json["strict_1_0"]["eligible"]


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "model-symbol.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_not_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not JSON .*symbol.json"):
        check_model(write(tmp_path, "{ nodes: oops"))
    with pytest.raises(ConfigurationError, match=r"is not JSON \(binary data\).*\.params"):
        check_model(write(tmp_path, b"\x12\x01\x00\x00\x00\x00\x00\x00\xff\xfe\xc3\x28"))


@pytest.mark.parametrize("content", [
    {"class_name": "Sequential", "config": {"layers": []}},  # a Keras model
    [1, 2, 3],
    {"nodes": []},
    {"nodes": [{"name": "x"}]},
])
def test_json_but_not_a_symbol(content: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="MXNet") as error:
        check_model(write(tmp_path, json.dumps(content)))
    assert "symbol.json" in error.value.message


def test_missing_input_node() -> None:
    symbol = old_format_symbol({"kernel": "(3, 3)", "num_filter": "8"})
    symbol["nodes"][3]["inputs"][0] = [7, 0, 0]
    with pytest.raises(ConfigurationError, match=r"'c', Convolution\) takes its input from node #7, but the "
                                                 r"file has only 5 nodes"):
        check_model(symbol)


def test_data_shape_problems() -> None:
    with pytest.raises(ConfigurationError, match="needs a 4-D input .* --shape"):
        check_model("zoo:vgg16", 1, (224, 224))
    with pytest.raises(ConfigurationError, match="larger than its padded input"):
        check_model("zoo:alexnet", 1, (3, 8, 8))
    with pytest.raises(ConfigurationError, match="--shape '3,x' is not a shape"):
        parse_shape("3,x")
    assert parse_shape("(3, 224, 224)") == (3, 224, 224)
    two_inputs = old_format_symbol({"kernel": "(3, 3)", "num_filter": "8"})
    two_inputs["nodes"].insert(0, {"op": "null", "name": "data2", "inputs": []})
    two_inputs["nodes"].append({"op": "elemwise_add", "name": "sum", "inputs": [[5, 0], [0, 0]]})
    for node in two_inputs["nodes"][1:5]:
        node["inputs"] = [[i + 1, j] for i, j in node["inputs"]]
    with pytest.raises(ConfigurationError, match="several inputs need a shape .*'data2'"):
        check_model(two_inputs)


def test_unknown_unary_op_is_passed_through() -> None:
    symbol = old_format_symbol({"kernel": "(3, 3)", "num_filter": "8"})
    symbol["nodes"][4]["op"] = "MyCustomNorm"
    report = check_model(symbol, 1, (3, 10, 10))
    assert report.output_shapes == [(1, 8, 8, 8)]
    assert any("MyCustomNorm" in note and "assumed" in note for note in report.notes)


def test_mangled_symbols_only_raise_configuration_errors() -> None:
    base = json.dumps(tiny_symbol())
    mutations = [base.replace('"(3, 3)"', '"(3, x)"'), base.replace('"inputs": [[0, 0, 0]', '"inputs": [["a"]', 1),
                 base.replace('"num_filter": "4"', '"num_filter": "four"'), base.replace('"True"', '"maybe"'),
                 base.replace('"stride": "(2, 2)"', '"stride": "(2, 2, 2)"'),
                 base.replace('"pool_type": "max"', '"kernel": ""'), base.replace('"heads": [[', '"heads": [[99')]
    for mutated in mutations:
        assert mutated != base
        with pytest.raises(ConfigurationError):
            check_model(json.loads(mutated), 2, (3, 8, 8))


def test_cli_table_and_json(tmp_path: Path) -> None:
    path = model_zoo.write_model("vgg16", tmp_path / "vgg16-symbol.json")
    buffer = io.StringIO()
    main(str(path), batch=8, shape="3,224,224", console=Console(file=buffer, width=250))
    text = buffer.getvalue()
    for name in ("conv1_1", "conv5_3", "pool5", "fc6", "fc8", "this build", "MXNet 1.0 rules"):
        assert name in text
    assert "output shape: (8, 1000)" in text
    out = io.StringIO()
    main("zoo:resnet18", batch=1, as_json=True, stdout=out)
    data = json.loads(out.getvalue())
    assert data["totals"]["strict_1_0"]["nnpack_flops"] == sum(
        layer["flops"] for layer in data["layers"] if layer["op"] == "FullyConnected")
    assert {"name", "op", "build", "strict_1_0"} <= set(data["layers"][0])
    table = io.StringIO()
    Console(file=table, width=250).print(render_table(check_model("zoo:alexnet", 1, (3, 224, 224))))
    assert "conv1" in table.getvalue()


def test_cli_error_is_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnpack_toolchain.cli import reports_errors

    with pytest.raises(SystemExit) as exited:
        reports_errors(main)(str(write(tmp_path, "not json")))
    assert exited.value.code == ConfigurationError.exit_code
    err = capsys.readouterr().err
    assert "error:" in err and "is not JSON" in err and "Traceback" not in err


def test_output_says_eligible_and_explains_the_auto_policy() -> None:
    buffer = io.StringIO()
    main("zoo:resnet18", batch=8, console=Console(file=buffer, width=250))
    text = buffer.getvalue()
    assert "NNPACK runs" not in text and "layers on NNPACK" not in text
    # ResNet-18 at batch 8 (see CONV_COUNTS): 14 of 21 convolutions and the FC eligible, no pooling.
    assert "this build: eligible for NNPACK: 83.0% of the Convolution/FullyConnected/Pooling FLOPs" in text
    assert "eligible layers: Convolution 14/21, Pooling 0/2, FullyConnected 1/1" in text
    note = [line for line in text.splitlines() if line.startswith("eligible = ")]
    assert len(note) == 1 and "MXNET_NNPACK_POLICY=auto" in note[0] and "MXNet may win" in note[0]
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 5}
    assert "eligible" in rows["fc1"] and "NNPACK" not in rows["fc1"].replace("no:", "")
    out = io.StringIO()
    main("zoo:resnet18", batch=8, as_json=True, stdout=out)
    data = json.loads(out.getvalue())
    assert "MXNET_NNPACK_POLICY=auto" in data["eligibility"]
    assert data["totals"]["build"]["layers"]["Convolution"] == {"eligible": 14, "on_nnpack": 14, "total": 21}


def chain_symbol(inputs: list[int]) -> dict[str, Any]:
    """data (#0), then one Activation per entry of `inputs`, taking its input from that node."""
    nodes = [{"op": "null", "name": "data", "inputs": []}]
    nodes += [{"op": "Activation", "name": name, "attrs": {"act_type": "relu"}, "inputs": [[source, 0, 0]]}
              for name, source in zip("abcdef", inputs)]
    return {"nodes": nodes, "arg_nodes": [0], "heads": [[len(nodes) - 1, 0, 0]]}


@pytest.mark.parametrize(("inputs", "message"), [
    # a (#1) takes b (#2), b takes data: b comes after a, no cycle
    ([2, 0], ("node #1 ('a', Activation) takes its input from node #2 ('b', Activation), which comes after it; "
              "MXNet symbol files list every node after its inputs (topological order)")),
    # a <- b <- a
    ([2, 1], "the graph has a cycle: 'a' (#1) <- 'b' (#2) <- 'a' (#1) (each node takes its input from the next)"),
    # a takes c, c takes b, b takes a: a <- c <- b <- a
    ([3, 1, 2], "the graph has a cycle: 'a' (#1) <- 'c' (#3) <- 'b' (#2) <- 'a' (#1)"),
    # b takes d, d takes c, c takes b; a is fine
    ([0, 4, 2, 3], "the graph has a cycle: 'b' (#2) <- 'd' (#4) <- 'c' (#3) <- 'b' (#2)"),
    # a takes itself
    ([1], "node #1 ('a', Activation) takes its input from itself: a cycle"),
])
def test_cycles_and_forward_references_through_invoke(tmp_path: Path, inputs: list[int], message: str) -> None:
    from conftest import run_invoke

    path = write(tmp_path, json.dumps(chain_symbol(inputs)))
    proc = run_invoke("check-model", str(path))
    assert proc.returncode == ConfigurationError.exit_code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {path}: ") and message in lines[0]
    assert lines[0].endswith("save it again with mx.sym.save")
