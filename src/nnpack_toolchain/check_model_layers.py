"""The NNPACK-capable layers of check-model: Convolution, Pooling and FullyConnected.

Each function takes a layer's node and its data input's shape and dtype and gives its output shape,
its FLOPs (the convention in check_model's docstring) and whether the patched operators may hand it
to NNPACK under each rule set, with every failing condition in the order the C++ code checks them.
check_model.py walks the graph and infers the other layers' shapes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .check_model_types import Decision, Reason, ReasonCode, RuleSet
from .errors import ConfigurationError
from .model_symbol import SYMBOL_HINT, Node, Shape, fail, parse_bool, parse_int, parse_str, parse_tuple, tuple_text


class Judged(NamedTuple):
    out: Shape
    flops: int
    summary: str
    decisions: dict[RuleSet, Decision]


def input_error(node: Node, shape: Shape | None, needs: str) -> ConfigurationError:
    return fail(f"layer {node.name!r} ({node.op}) needs {needs} but gets shape {shape}; "
                 "check --shape (the data shape without the batch, e.g. 3,224,224)")


def spatial_out(node: Node, size: int, kernel: int, stride: int, pad: int, dilate: int = 1,
                ceil: bool = False) -> int:
    span = size + 2 * pad - (dilate * (kernel - 1) + 1)
    if span < 0:
        raise fail(f"layer {node.name!r} ({node.op}): kernel {kernel} (dilated {dilate * (kernel - 1) + 1}) is "
                    f"larger than its padded input {size + 2 * pad}; give a larger --shape")
    return (math.ceil(span / stride) if ceil else span // stride) + 1


def channel_axis(layout: str | None) -> int:
    return layout.index("C") if layout and "C" in layout else 1


def convolution(node: Node, shape: Shape, dtype: str) -> Judged:
    """A Convolution: output shape, FLOPs and the NNPACK decision under each rule set."""
    kernel = parse_tuple(node, "kernel")
    if not kernel:
        raise fail(f"layer {node.name!r} (Convolution) has no kernel attribute; {SYMBOL_HINT}")
    dims = len(kernel)
    if len(shape) != dims + 2:
        raise input_error(node, shape, f"a {dims + 2}-D input (batch, channels and {dims} spatial "
                                       f"dimensions) for its kernel {tuple_text(kernel)}")
    stride = parse_tuple(node, "stride") or (1,) * dims
    pad = parse_tuple(node, "pad") or (0,) * dims
    dilate = parse_tuple(node, "dilate") or (1,) * dims
    groups = parse_int(node, "num_group", 1)
    filters = parse_int(node, "num_filter", 0)
    no_bias = parse_bool(node, "no_bias", False)
    layout = parse_str(node, "layout", None)
    if filters <= 0:
        raise fail(f"layer {node.name!r} (Convolution) needs num_filter > 0; {SYMBOL_HINT}")
    for name, values in (("stride", stride), ("pad", pad), ("dilate", dilate)):
        if len(values) != dims:
            raise fail(f"layer {node.name!r} (Convolution): {name} {tuple_text(values)} does not match "
                        f"kernel {tuple_text(kernel)}")
    c_axis = channel_axis(layout)
    spatial_axes = [a for a in range(1, len(shape)) if a != c_axis]
    out_spatial = [spatial_out(node, shape[a], k, s, p, d)
                   for a, k, s, p, d in zip(spatial_axes, kernel, stride, pad, dilate)]
    out = list(shape)
    out[c_axis] = filters
    for a, size in zip(spatial_axes, out_spatial):
        out[a] = size
    in_channels = shape[c_axis]
    flops = 2 * shape[0] * filters * math.prod(out_spatial) * (in_channels // groups) * math.prod(kernel)

    common: list[Reason] = []
    if dtype != "float32":
        common.append(Reason(ReasonCode.DTYPE, f"dtype {dtype}: NNPACK needs float32"))
    if dims != 2:
        common.append(Reason(ReasonCode.NOT_2D, f"{dims}-D kernel {tuple_text(kernel)}: NNPACK needs a 2-D kernel"))
    if layout not in (None, "NCHW"):
        common.append(Reason(ReasonCode.LAYOUT, f"layout {layout}: NNPACK needs NCHW"))
    if groups != 1:
        common.append(Reason(ReasonCode.GROUPED, f"num_group {groups}: NNPACK needs num_group 1"))
    if any(d != 1 for d in dilate):
        common.append(Reason(ReasonCode.DILATED, f"dilate {tuple_text(dilate)}: NNPACK needs dilate (1,1)"))
    bias = [Reason(ReasonCode.NO_BIAS, "no_bias=True: MXNet 1.0 rules need a bias")] if no_bias else []
    batch_rule: list[Reason] = []
    if shape[0] != 1 and any(s != 1 for s in stride):
        batch_rule.append(Reason(ReasonCode.STRIDE_WITH_BATCH, f"stride {tuple_text(stride)} with batch "
                                 f"{shape[0]}: NNPACK needs batch 1 or stride (1,1)"))
    summary = f"kernel {tuple_text(kernel)} stride {tuple_text(stride)}"
    if groups != 1:
        summary += f" groups {groups}"
    if any(d != 1 for d in dilate):
        summary += f" dilate {tuple_text(dilate)}"
    summary += ", no bias" if no_bias else ""
    decisions = {RuleSet.BUILD: Decision(tuple(common + batch_rule)),
                 RuleSet.STRICT_1_0: Decision(tuple(common + bias + batch_rule))}
    return Judged(tuple(out), flops, summary, decisions)

def pooling(node: Node, shape: Shape, dtype: str) -> Judged:
    """A Pooling layer (max 2x2/2 with the 'full' convention is NNPACK's)."""
    global_pool = parse_bool(node, "global_pool", False)
    kernel = parse_tuple(node, "kernel")
    pool_type = parse_str(node, "pool_type", "max") or "max"
    convention = parse_str(node, "pooling_convention", "valid") or "valid"
    layout = parse_str(node, "layout", None)
    if len(shape) < 3:
        raise input_error(node, shape, "an input with at least one spatial dimension")
    c_axis = channel_axis(layout)
    spatial_axes = [a for a in range(1, len(shape)) if a != c_axis]
    dims = len(spatial_axes)
    if global_pool:
        kernel = tuple(shape[a] for a in spatial_axes)
        stride: Shape = (1,) * dims
        out_spatial = [1] * dims
    else:
        if not kernel:
            raise fail(f"layer {node.name!r} (Pooling) has no kernel and is not global_pool; {SYMBOL_HINT}")
        if len(kernel) != dims:
            raise input_error(node, shape, f"{len(kernel) + 2}-D input for its kernel {tuple_text(kernel)}")
        stride = parse_tuple(node, "stride") or (1,) * dims
        pad = parse_tuple(node, "pad") or (0,) * dims
        for name, values in (("stride", stride), ("pad", pad)):
            if len(values) != dims:
                raise fail(f"layer {node.name!r} (Pooling): {name} {tuple_text(values)} does not match "
                            f"kernel {tuple_text(kernel)}")
        if convention == "same":
            out_spatial = [math.ceil(shape[a] / s) for a, s in zip(spatial_axes, stride)]
        else:
            out_spatial = [spatial_out(node, shape[a], k, s, p, ceil=convention == "full")
                           for a, k, s, p in zip(spatial_axes, kernel, stride, pad)]
    out = list(shape)
    for a, size in zip(spatial_axes, out_spatial):
        out[a] = size
    flops = shape[0] * shape[c_axis] * math.prod(out_spatial) * math.prod(kernel)

    reasons: list[Reason] = []
    if dtype != "float32":
        reasons.append(Reason(ReasonCode.DTYPE, f"dtype {dtype}: NNPACK needs float32"))
    if pool_type != "max":
        reasons.append(Reason(ReasonCode.NOT_MAX_POOLING, f"pool_type {pool_type}: NNPACK needs max"))
    if global_pool:
        reasons.append(Reason(ReasonCode.GLOBAL_POOLING, "global_pool=True: NNPACK has no global pooling"))
    else:
        if convention != "full":
            default = " (MXNet's default)" if "pooling_convention" not in node.attrs else ""
            reasons.append(Reason(ReasonCode.POOLING_CONVENTION, f"pooling_convention {convention}{default}: "
                                  "NNPACK needs 'full'"))
        if layout not in (None, "NCHW"):
            reasons.append(Reason(ReasonCode.LAYOUT, f"layout {layout}: NNPACK needs NCHW"))
        if tuple(kernel) != (2, 2):
            reasons.append(Reason(ReasonCode.POOL_KERNEL, f"kernel {tuple_text(kernel)}: NNPACK needs (2, 2)"))
        if tuple(stride) != (2, 2):
            reasons.append(Reason(ReasonCode.POOL_STRIDE, f"stride {tuple_text(stride)}: NNPACK needs (2, 2)"))
        if len(shape) != 4 and dims == 2:
            reasons.append(Reason(ReasonCode.NOT_2D, f"{len(shape)}-D input: NNPACK needs 4-D NCHW input"))
    summary = (f"{pool_type}, global" if global_pool
               else f"{pool_type} {tuple_text(kernel)} stride {tuple_text(stride)}, {convention}")
    decision = Decision(tuple(reasons))
    return Judged(tuple(out), flops, summary, {RuleSet.BUILD: decision, RuleSet.STRICT_1_0: decision})

def fully_connected(node: Node, shape: Shape, dtype: str) -> Judged:
    """A FullyConnected layer."""
    hidden = parse_int(node, "num_hidden", 0)
    if hidden <= 0:
        raise fail(f"layer {node.name!r} (FullyConnected) needs num_hidden > 0; {SYMBOL_HINT}")
    flatten = parse_bool(node, "flatten", True)
    if len(shape) < 1:
        raise input_error(node, shape, "a batch of vectors")
    if flatten:
        rows, features = shape[0], math.prod(shape[1:])
        out: Shape = (shape[0], hidden)
    else:
        rows, features = math.prod(shape[:-1]), shape[-1]
        out = (*shape[:-1], hidden)
    flops = 2 * rows * features * hidden
    reasons: list[Reason] = []
    if dtype != "float32":
        reasons.append(Reason(ReasonCode.DTYPE, f"dtype {dtype}: NNPACK needs float32"))
    # flatten=False: the patched operator takes all axes but the last as the batch (any rank).
    if flatten and len(shape) < 2:
        reasons.append(Reason(ReasonCode.NOT_VECTORS, f"flatten=True with {len(shape)}-D input "
                              f"{tuple_text(shape)}: NNPACK needs a (batch, features...) input"))
    summary = f"{features} -> {hidden}" + ("" if flatten else ", flatten=False")
    decision = Decision(tuple(reasons))
    return Judged(out, flops, summary, {RuleSet.BUILD: decision, RuleSet.STRICT_1_0: decision})
