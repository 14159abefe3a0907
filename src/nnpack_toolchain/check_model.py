"""Which layers of an MXNet model are eligible for NNPACK in this build, and what share of the work that is.

This module is the analysis: :mod:`nnpack_toolchain.model_symbol` feeds it the parsed symbol file, it
walks the graph inferring shapes, :mod:`nnpack_toolchain.check_model_layers` judges the Convolution,
Pooling and FullyConnected layers, and the :class:`ModelReport` it returns is printed (table, totals,
JSON) by :mod:`nnpack_toolchain.check_model_report`.

``invoke check-model MODEL`` reads an MXNet symbol file (the ``*-symbol.json`` written by
``mx.sym.save`` or ``HybridBlock.export``; or ``zoo:NAME`` for a model from
:mod:`nnpack_toolchain.model_zoo`), infers every layer's output shape from the data shape
``(batch, *data_shape)``, and decides for each Convolution, Pooling and FullyConnected layer
whether the patched operators (``patches/mxnet/0002``..``0005``) may hand it to NNPACK
(*eligible*), under two rule sets side by side:

* **this build** (:attr:`RuleSet.BUILD`): bias-free convolutions (``no_bias=True``, every
  convolution before a BatchNorm) run on NNPACK with a zero bias;
* **MXNet 1.0** (:attr:`RuleSet.STRICT_1_0`, ``MXNET_NNPACK_STRICT_1_0=1``): a convolution needs
  a bias, as in MXNet 1.0.

The conditions, in the order the C++ code checks them (every failing one is reported):

* Convolution: float32; 2-D kernel on 4-D input; layout NCHW (or unset); ``num_group`` 1;
  ``dilate`` (1,1); [1.0 rules: ``no_bias`` false]; batch 1 (``nnp_convolution_inference``,
  any stride) or stride (1,1) (``nnp_convolution_output``).
* Pooling: ``pool_type`` max; not ``global_pool``; ``pooling_convention`` "full" (MXNet's
  default is "valid", so it must be set explicitly); layout NCHW; kernel (2,2); stride (2,2);
  4-D input.
* FullyConnected: float32 and a batch of vectors: with ``flatten=True`` an input of at least 2
  axes (batch, then everything else as the features); with ``flatten=False`` any input, all axes
  but the last being the batch (as Gluon's ``Dense(flatten=False)`` on 3-D input).

FLOP convention (multiply and add count as 2 FLOPs; bias additions are ignored):

* Convolution: ``2 * N * C_out * prod(out spatial) * C_in / num_group * prod(kernel)``;
* FullyConnected: ``2 * rows * in_features * num_hidden`` (rows = N with ``flatten=True``, the
  product of all axes but the last with ``flatten=False``);
* Pooling: ``N * C * prod(out spatial) * prod(kernel)`` (one comparison or addition per window
  element; a global pooling's kernel is its whole input).

Every other layer (activations, BatchNorm, LRN, element-wise sums, softmax, ...) counts 0
FLOPs, so the share printed is *the share of the Convolution + FullyConnected + Pooling FLOPs*
that is eligible for NNPACK, not of all arithmetic in the model.

Eligible is not the same as run: under the default ``MXNET_NNPACK_POLICY=auto`` (patch 0007) the
first calls of each eligible layer shape time MXNet's own code against NNPACK and keep the faster,
so MXNet may win some eligible layers; ``MXNET_NNPACK_POLICY=always`` runs every eligible layer on
NNPACK. ``MXNET_NNPACK_VERBOSE=1`` logs what a running model chose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .check_model_layers import Judged, convolution, fully_connected, pooling
from .check_model_types import LayerReport, ModelReport, OtherLayer
from .model_symbol import (
    SYMBOL_HINT,
    Node,
    Shape,
    fail,
    load_symbol,
    mxnet_version,
    parse_bool,
    parse_int,
    parse_nodes,
    parse_str,
    parse_tuple,
    tuple_text,
)

DEFAULT_DATA_SHAPE: Shape = (3, 224, 224)


# Shape inference -------------------------------------------------------------------------------

#: Inputs from this position on are parameters (weights, biases, BatchNorm statistics, labels).
PARAM_SLOTS: dict[str, int] = {
    "Convolution": 1, "Deconvolution": 1, "FullyConnected": 1, "BatchNorm": 1, "InstanceNorm": 1,
    "LayerNorm": 1, "GroupNorm": 1, "LeakyReLU": 1, "Embedding": 1, "SoftmaxOutput": 1, "Softmax": 1,
    "LinearRegressionOutput": 1, "LogisticRegressionOutput": 1, "MAERegressionOutput": 1, "SVMOutput": 1,
}
PARAM_SUFFIXES = ("_weight", "_bias", "_gamma", "_beta", "_moving_mean", "_moving_var", "_running_mean",
                  "_running_var", "_label", "_alpha")

#: Operators that keep their (first) input's shape.
SHAPE_PRESERVING = frozenset({
    "Activation", "LeakyReLU", "relu", "sigmoid", "tanh", "softsign", "hard_sigmoid", "gelu", "erf",
    "BatchNorm", "InstanceNorm", "LayerNorm", "GroupNorm", "L2Normalization", "Dropout", "LRN",
    "_copy", "identity", "BlockGrad", "stop_gradient", "make_loss", "MakeLoss",
    "softmax", "log_softmax", "SoftmaxActivation", "SoftmaxOutput", "Softmax",
    "LinearRegressionOutput", "LogisticRegressionOutput", "MAERegressionOutput", "SVMOutput",
    "Cast", "amp_cast", "clip", "exp", "log", "sqrt", "square", "abs", "negative", "reciprocal",
    "_mul_scalar", "_plus_scalar", "_minus_scalar", "_rminus_scalar", "_div_scalar", "_rdiv_scalar",
    "_power_scalar", "_maximum_scalar", "_minimum_scalar",
})
ELEMENTWISE = frozenset({"elemwise_add", "_Plus", "_plus", "_add", "elemwise_sub", "_Minus", "_minus", "_sub",
                         "elemwise_mul", "_Mul", "_mul", "elemwise_div", "_Div", "_div", "add_n",
                         "ElementWiseSum", "_grad_add", "_maximum", "_minimum"})
BROADCAST = frozenset({"broadcast_add", "broadcast_plus", "broadcast_sub", "broadcast_minus", "broadcast_mul",
                       "broadcast_div", "broadcast_maximum", "broadcast_minimum", "broadcast_power"})
#: MXNet dtype codes (``__dtype__`` attribute of variables).
_DTYPE_CODES = {"0": "float32", "1": "float64", "2": "float16", "3": "uint8", "4": "int32", "5": "int8",
                "6": "int64", "12": "bfloat16"}


@dataclass
class _Value:
    shape: Shape | None
    dtype: str = "float32"


class _Analyzer:
    """Walks the nodes in order, inferring shapes and judging the NNPACK-capable layers."""

    def __init__(self, nodes: list[Node], batch: int, data_shape: Shape, label: str) -> None:
        self.nodes = nodes
        self.batch = batch
        self.data_shape = data_shape
        self.label = label
        self.values: dict[tuple[int, int], _Value] = {}
        self.layers: list[LayerReport] = []
        self.others: list[OtherLayer] = []
        self.notes: list[str] = []
        self.params = self._parameters()

    def _parameters(self) -> set[int]:
        """Variables that are weights, biases, statistics or labels rather than the data input."""
        params: set[int] = set()
        for node in self.nodes:
            first_param = PARAM_SLOTS.get(node.op)
            for slot, (source, _) in enumerate(node.inputs):
                if first_param is not None and slot >= first_param and self.nodes[source].op == "null":
                    params.add(source)
        for node in self.nodes:
            if node.op == "null" and node.name.endswith(PARAM_SUFFIXES):
                params.add(node.index)
        return params

    def data_input(self) -> Node:
        used = {source for node in self.nodes for source, _ in node.inputs}
        inputs = [n for n in self.nodes if n.op == "null" and n.index not in self.params and n.index in used]
        if not inputs:
            raise fail(f"{self.label}: no data input found (every variable is a weight, bias or label); "
                        f"{SYMBOL_HINT}")
        if len(inputs) > 1:
            names = ", ".join(repr(n.name) for n in inputs)
            raise fail(f"{self.label}: several inputs need a shape ({names}), but check-model feeds only one "
                        "data input; give a single-input model (one 'data' variable)")
        return inputs[0]

    def run(self) -> None:
        data = self.data_input()
        full_shape = (self.batch, *self.data_shape)
        for node in self.nodes:
            if node.op == "null":
                if node.index == data.index:
                    dtype = _DTYPE_CODES.get(node.attrs.get("__dtype__", "0"), "float32")
                    self.values[(node.index, 0)] = _Value(full_shape, dtype)
                continue
            self._visit(node)

    def value(self, node: Node, slot: int = 0) -> _Value:
        source, index = node.inputs[slot]
        found = self.values.get((source, index))
        if found is None:
            source_node = self.nodes[source]
            if source_node.op == "null":
                return _Value(None)
            found = self.values.get((source, 0), _Value(None))
        return found

    def _data_value(self, node: Node) -> _Value:
        if not node.inputs:
            raise fail(f"layer {node.name!r} ({node.op}) has no inputs; {SYMBOL_HINT}")
        value = self.value(node, 0)
        if value.shape is None:
            raise fail(f"layer {node.name!r} ({node.op}): the shape of its input "
                        f"{self.nodes[node.inputs[0][0]].name!r} is unknown (it looks like a parameter, "
                        "not data); check-model needs a model with a single data input")
        return value

    def _set(self, node: Node, value: _Value, *extra: _Value) -> None:
        self.values[(node.index, 0)] = value
        for i, other in enumerate(extra, start=1):
            self.values[(node.index, i)] = other

    def _visit(self, node: Node) -> None:
        handler: Callable[[Node], None] | None = {
            "Convolution": lambda n: self._judged(n, convolution), "Pooling": lambda n: self._judged(n, pooling),
            "FullyConnected": lambda n: self._judged(n, fully_connected),
            "Flatten": self._flatten, "flatten": self._flatten, "Concat": self._concat, "concat": self._concat,
            "Reshape": self._reshape, "reshape": self._reshape,
        }.get(node.op)
        if handler is not None:
            handler(node)
        elif node.op in SHAPE_PRESERVING:
            value = self._data_value(node)
            if node.op in ("Cast", "amp_cast"):
                value = _Value(value.shape, parse_str(node, "dtype", "float32") or "float32")
            extra = []
            if node.op == "BatchNorm" and value.shape is not None:
                channels = value.shape[parse_int(node, "axis", 1)]
                extra = [_Value((channels,)), _Value((channels,))]
            self._set(node, value, *extra, *([value] if node.op in ("Dropout", "LRN") else []))
            self.others.append(OtherLayer(node.name, node.op, value.shape))
        elif node.op in ELEMENTWISE or node.op in BROADCAST:
            self._elementwise(node)
        else:
            self._unknown(node)

    # NNPACK-capable layers ---------------------------------------------------------------------

    def _judged(self, node: Node, judge: Callable[[Node, Shape, str], Judged]) -> None:
        """A Convolution, Pooling or FullyConnected layer, judged by check_model_layers."""
        value = self._data_value(node)
        assert value.shape is not None
        out, flops, summary, decisions = judge(node, value.shape, value.dtype)
        self._set(node, _Value(out, value.dtype))
        self.layers.append(LayerReport(node.name, node.op, value.shape, out, flops, summary, decisions))

    # Other operators ---------------------------------------------------------------------------

    def _flatten(self, node: Node) -> None:
        value = self._data_value(node)
        assert value.shape is not None
        self._other(node, _Value((value.shape[0], math.prod(value.shape[1:])), value.dtype))

    def _concat(self, node: Node) -> None:
        values = [self.value(node, slot) for slot in range(len(node.inputs))]
        shapes = [v.shape for v in values]
        if not shapes or any(s is None for s in shapes):
            raise fail(f"layer {node.name!r} (Concat): an input's shape is unknown; {SYMBOL_HINT}")
        dim = parse_int(node, "dim", 1)
        first = shapes[0]
        assert first is not None
        axis = dim % len(first)
        for s in shapes:
            assert s is not None
            if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis):
                raise fail(f"layer {node.name!r} (Concat) joins shapes {', '.join(map(str, shapes))}, which "
                            f"differ outside dimension {dim}; check --shape")
        out = list(first)
        out[axis] = sum(s[axis] for s in shapes if s is not None)
        self._other(node, _Value(tuple(out), values[0].dtype))

    def _elementwise(self, node: Node) -> None:
        values = [self.value(node, slot) for slot in range(len(node.inputs))]
        shapes = [v.shape for v in values if v.shape is not None]
        if not shapes:
            raise fail(f"layer {node.name!r} ({node.op}): no input has a known shape; {SYMBOL_HINT}")
        if node.op in BROADCAST:
            ndim = max(len(s) for s in shapes)
            padded = [(1,) * (ndim - len(s)) + s for s in shapes]
            out = []
            for sizes in zip(*padded):
                big = {x for x in sizes if x != 1}
                if len(big) > 1:
                    raise fail(f"layer {node.name!r} ({node.op}) cannot broadcast shapes "
                                f"{', '.join(map(str, shapes))}; check --shape")
                out.append(big.pop() if big else 1)
            result: Shape = tuple(out)
        else:
            if any(s != shapes[0] for s in shapes):
                raise fail(f"layer {node.name!r} ({node.op}) adds shapes {', '.join(map(str, shapes))}, "
                            "which differ; check --shape")
            result = shapes[0]
        self._other(node, _Value(result, values[0].dtype))

    def _reshape(self, node: Node) -> None:
        value = self._data_value(node)
        shape = value.shape
        assert shape is not None
        target = parse_tuple(node, "shape") or parse_tuple(node, "target_shape")
        if not target or parse_bool(node, "reverse", False):
            raise fail(f"layer {node.name!r} (Reshape): only a 'shape' attribute without reverse=True "
                        "is supported; export the model without this Reshape or replace it by Flatten")
        out: list[int] = []
        i = 0  # position in the input shape
        j = 0  # position in the target
        infer_at = None
        while j < len(target):
            code = target[j]
            if code > 0:
                out.append(code)
                i += 1
            elif code == 0:
                out.append(shape[i])
                i += 1
            elif code == -1:
                infer_at = len(out)
                out.append(1)
                i += 1
            elif code == -2:
                out.extend(shape[i:])
                i = len(shape)
            elif code == -3:
                out.append(shape[i] * shape[i + 1])
                i += 2
            elif code == -4:
                a, b = target[j + 1], target[j + 2]
                if a == -1:
                    a = shape[i] // b
                if b == -1:
                    b = shape[i] // a
                out.extend([a, b])
                i += 1
                j += 2
            j += 1
        if infer_at is not None:
            known = math.prod(out) // out[infer_at] if out[infer_at] else 0
            out[infer_at] = math.prod(shape) // known if known else 0
        if math.prod(out) != math.prod(shape):
            raise fail(f"layer {node.name!r} (Reshape): cannot reshape {shape} to {node.attrs.get('shape')}; "
                        "check --shape")
        self._other(node, _Value(tuple(out), value.dtype))

    def _unknown(self, node: Node) -> None:
        data_slots = [slot for slot, (source, _) in enumerate(node.inputs) if source not in self.params]
        if len(data_slots) != 1:
            raise fail(f"layer {node.name!r}: check-model does not know operator {node.op!r} "
                        f"({len(data_slots)} data inputs), so it cannot infer the shapes after it; "
                        "supported: Convolution, Pooling, FullyConnected, Flatten, Concat, Reshape, "
                        "element-wise and broadcast arithmetic, and one-input layers such as Activation, "
                        "BatchNorm, Dropout, LRN and softmax")
        value = self.value(node, data_slots[0])
        if value.shape is None:
            raise fail(f"layer {node.name!r}: unknown operator {node.op!r} on an input of unknown shape")
        self.notes.append(f"unknown operator {node.op} ({node.name}): assumed to keep its input shape "
                          f"{tuple_text(value.shape)}; shapes after it may be wrong")
        self._other(node, value)

    def _other(self, node: Node, value: _Value) -> None:
        self._set(node, value)
        self.others.append(OtherLayer(node.name, node.op, value.shape))


# Public API ------------------------------------------------------------------------------------


def parse_shape(text: str) -> Shape:
    """``"3,224,224"`` (or ``"(3, 224, 224)"``) -> ``(3, 224, 224)``: the data shape without the batch."""
    body = text.strip().strip("()[]")
    try:
        shape = tuple(int(part) for part in body.split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(size <= 0 for size in shape):
        raise fail(f"--shape {text!r} is not a shape; give the data shape without the batch as positive "
                    "integers, e.g. --shape 3,224,224")
    return shape


def check_model(symbol: dict[str, Any] | Path | str, batch: int = 1,
                data_shape: Sequence[int] = DEFAULT_DATA_SHAPE) -> ModelReport:
    """Infer the shapes of `symbol` for input ``(batch, *data_shape)`` and judge each layer for NNPACK.

    `symbol` is the symbol dict, a path to a ``*-symbol.json`` file, or ``"zoo:NAME"``. Raises
    ConfigurationError (never another exception) for anything that is not a usable MXNet symbol.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise fail(f"batch {batch!r} must be a positive integer, e.g. --batch 1")
    shape = tuple(data_shape)
    if not shape or any(not isinstance(s, int) or s <= 0 for s in shape):
        raise fail(f"data shape {shape!r} must be positive integers without the batch, e.g. --shape 3,224,224")
    loaded, label = load_symbol(symbol)
    nodes = parse_nodes(loaded, label)
    analyzer = _Analyzer(nodes, batch, shape, label)
    try:
        analyzer.run()
    except (IndexError, ZeroDivisionError, ValueError, TypeError) as error:  # inconsistent attributes
        raise fail(f"{label}: cannot infer shapes ({type(error).__name__}: {error}); {SYMBOL_HINT}") from None
    heads = loaded.get("heads") or [[nodes[-1].index, 0, 0]]
    outputs = [analyzer.values.get((h[0], h[1] if len(h) > 1 else 0), _Value(None)).shape for h in heads]
    return ModelReport(model=label, batch=batch, data_input=analyzer.data_input().name,
                       data_shape=(batch, *shape), output_shapes=outputs, layers=analyzer.layers,
                       other_layers=analyzer.others, notes=analyzer.notes, mxnet_version=mxnet_version(loaded))
