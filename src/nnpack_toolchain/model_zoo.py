"""Reference image classifiers as MXNet symbol JSON, generated without MXNet.

Each generator returns the dict that ``mx.sym.save`` would write (the ``*-symbol.json`` format of
MXNet 1.9.1: ``nodes``, ``arg_nodes``, ``node_row_ptr``, ``heads``, ``attrs``) for a 224x224 RGB
input and 1000 classes. The layer structure follows the network definitions in MXNet's
``example/image-classification/symbols`` (alexnet, vgg, resnet, inception-bn, mobilenet), so
``invoke check-model zoo:NAME`` shows what NNPACK does for models people actually train with
MXNet. Those examples leave ``pooling_convention`` at MXNet's default ``'valid'``, and so do
these files; NNPACK only takes ``'full'`` 2x2/2 max pooling, so no pooling layer of these models
runs on NNPACK.

Layers left unnamed in the upstream examples get readable names here (``conv1``, ``pool1``,
``fc1``, ...); MXNet itself would call them ``convolution0``, ``pooling0``, and so on.

Write one with ``write_model("resnet18", "resnet18-symbol.json")`` or
``python -m nnpack_toolchain.model_zoo resnet18 resnet18-symbol.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

#: MXNet version recorded in the files (1.9.1, as ``mx.sym.save`` writes it).
MXNET_VERSION = 10901

#: Outputs of the operators used here that have more than one (they count in ``node_row_ptr``).
_NUM_OUTPUTS = {"BatchNorm": 3, "Dropout": 2, "LRN": 2}

Ref = int
"""A node id in the graph being built (its output 0)."""


def _attr_text(value: object) -> str:
    """Attribute value as MXNet writes it: ``str()`` of the Python value, e.g. ``(3, 3)``, ``True``."""
    return str(tuple(value)) if isinstance(value, (tuple, list)) else str(value)


class SymbolBuilder:
    """Builds the node list of an MXNet symbol, creating parameter variables like MXNet does."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.arg_nodes: list[int] = []

    def variable(self, name: str, attrs: dict[str, str] | None = None) -> Ref:
        node: dict[str, Any] = {"op": "null", "name": name}
        if attrs:
            node["attrs"] = dict(attrs)
        node["inputs"] = []
        self.nodes.append(node)
        self.arg_nodes.append(len(self.nodes) - 1)
        return len(self.nodes) - 1

    def op(self, op: str, name: str, data: Sequence[Ref], attrs: dict[str, object] | None = None, *,
           params: Sequence[str] = (), aux: Sequence[str] = ()) -> Ref:
        """Add operator `op` on `data`, with variables ``<name>_<param>`` (and auxiliary states)."""
        text = {key: _attr_text(value) for key, value in (attrs or {}).items()}
        inputs = [[ref, 0, 0] for ref in data]
        for param in params:
            inputs.append([self.variable(f"{name}_{param}", text), 0, 0])
        for state in aux:
            init = '["zero", {}]' if state.endswith("mean") else '["one", {}]'
            inputs.append([self.variable(f"{name}_{state}", {"__init__": init, **text}), 0, 1])
        node: dict[str, Any] = {"op": op, "name": name}
        if text:
            node["attrs"] = text
        node["inputs"] = inputs
        self.nodes.append(node)
        return len(self.nodes) - 1

    # Layers, with MXNet's parameter variables -------------------------------------------------

    def conv(self, data: Ref, name: str, num_filter: int, kernel: tuple[int, int],
             stride: tuple[int, int] | None = None, pad: tuple[int, int] | None = None,
             no_bias: bool = False, num_group: int = 1) -> Ref:
        attrs: dict[str, object] = {"kernel": kernel}
        if no_bias:
            attrs["no_bias"] = True
        attrs["num_filter"] = num_filter
        if num_group != 1:
            attrs["num_group"] = num_group
        if pad is not None:
            attrs["pad"] = pad
        if stride is not None:
            attrs["stride"] = stride
        return self.op("Convolution", name, [data], attrs, params=("weight",) if no_bias else ("weight", "bias"))

    def batch_norm(self, data: Ref, name: str, fix_gamma: bool = False, eps: float = 2e-5,
                   momentum: float = 0.9) -> Ref:
        attrs = {"eps": eps, "fix_gamma": fix_gamma, "momentum": momentum}
        return self.op("BatchNorm", name, [data], attrs, params=("gamma", "beta"),
                       aux=("moving_mean", "moving_var"))

    def relu(self, data: Ref, name: str) -> Ref:
        return self.op("Activation", name, [data], {"act_type": "relu"})

    def pool(self, data: Ref, name: str, pool_type: str, kernel: tuple[int, int],
             stride: tuple[int, int] | None = None, pad: tuple[int, int] | None = None,
             global_pool: bool = False) -> Ref:
        attrs: dict[str, object] = {}
        if global_pool:
            attrs["global_pool"] = True
        attrs["kernel"] = kernel
        if pad is not None:
            attrs["pad"] = pad
        attrs["pool_type"] = pool_type
        if stride is not None:
            attrs["stride"] = stride
        return self.op("Pooling", name, [data], attrs)

    def fc(self, data: Ref, name: str, num_hidden: int) -> Ref:
        return self.op("FullyConnected", name, [data], {"num_hidden": num_hidden}, params=("weight", "bias"))

    def dropout(self, data: Ref, name: str, p: float = 0.5) -> Ref:
        return self.op("Dropout", name, [data], {"p": p})

    def softmax_output(self, data: Ref, name: str = "softmax") -> Ref:
        return self.op("SoftmaxOutput", name, [data], params=("label",))

    def symbol(self, head: Ref) -> dict[str, Any]:
        """The ``mx.sym.save`` dict with `head` as the only output."""
        row_ptr = [0]
        for node in self.nodes:
            row_ptr.append(row_ptr[-1] + _NUM_OUTPUTS.get(node["op"], 1))
        return {
            "nodes": self.nodes,
            "arg_nodes": self.arg_nodes,
            "node_row_ptr": row_ptr,
            "heads": [[head, 0, 0]],
            "attrs": {"mxnet_version": ["int", MXNET_VERSION]},
        }


# Networks ---------------------------------------------------------------------------------------


def alexnet(num_classes: int = 1000) -> dict[str, Any]:
    """AlexNet (Krizhevsky et al. 2012) as in MXNet's example symbols/alexnet.py."""
    g = SymbolBuilder()
    x = g.variable("data")
    x = g.pool(g.relu(g.conv(x, "conv1", 96, (11, 11), stride=(4, 4)), "relu1"), "pool1", "max", (3, 3), (2, 2))
    x = g.op("LRN", "lrn1", [x], {"alpha": 0.0001, "beta": 0.75, "knorm": 1, "nsize": 5})
    x = g.pool(g.relu(g.conv(x, "conv2", 256, (5, 5), pad=(2, 2)), "relu2"), "pool2", "max", (3, 3), (2, 2))
    x = g.op("LRN", "lrn2", [x], {"alpha": 0.0001, "beta": 0.75, "knorm": 1, "nsize": 5})
    x = g.relu(g.conv(x, "conv3", 384, (3, 3), pad=(1, 1)), "relu3")
    x = g.relu(g.conv(x, "conv4", 384, (3, 3), pad=(1, 1)), "relu4")
    x = g.relu(g.conv(x, "conv5", 256, (3, 3), pad=(1, 1)), "relu5")
    x = g.pool(x, "pool3", "max", (3, 3), (2, 2))
    x = g.op("Flatten", "flatten", [x])
    x = g.dropout(g.relu(g.fc(x, "fc1", 4096), "relu6"), "dropout1")
    x = g.dropout(g.relu(g.fc(x, "fc2", 4096), "relu7"), "dropout2")
    return g.symbol(g.softmax_output(g.fc(x, "fc3", num_classes)))


def vgg16(num_classes: int = 1000) -> dict[str, Any]:
    """VGG-16 without BatchNorm, as in MXNet's example symbols/vgg.py (num_layers=16)."""
    g = SymbolBuilder()
    x = g.variable("data")
    for stage, (repeats, filters) in enumerate(zip([2, 2, 3, 3, 3], [64, 128, 256, 512, 512]), start=1):
        for i in range(1, repeats + 1):
            x = g.relu(g.conv(x, f"conv{stage}_{i}", filters, (3, 3), pad=(1, 1)), f"relu{stage}_{i}")
        x = g.pool(x, f"pool{stage}", "max", (2, 2), (2, 2))
    x = g.op("Flatten", "flatten", [x])
    x = g.dropout(g.relu(g.fc(x, "fc6", 4096), "relu6"), "drop6")
    x = g.dropout(g.relu(g.fc(x, "fc7", 4096), "relu7"), "drop7")
    return g.symbol(g.softmax_output(g.fc(x, "fc8", num_classes)))


def _basic_block(g: SymbolBuilder, data: Ref, filters: int, stride: int, project: bool, name: str) -> Ref:
    """Pre-activation ResNet unit without bottleneck: BN-ReLU-conv3x3 twice, plus the shortcut."""
    act1 = g.relu(g.batch_norm(data, f"{name}_bn1"), f"{name}_relu1")
    x = g.conv(act1, f"{name}_conv1", filters, (3, 3), stride=(stride, stride), pad=(1, 1), no_bias=True)
    x = g.relu(g.batch_norm(x, f"{name}_bn2"), f"{name}_relu2")
    x = g.conv(x, f"{name}_conv2", filters, (3, 3), stride=(1, 1), pad=(1, 1), no_bias=True)
    shortcut = g.conv(act1, f"{name}_sc", filters, (1, 1), stride=(stride, stride), no_bias=True) if project else data
    return g.op("elemwise_add", f"{name}_plus", [x, shortcut])


def resnet18(num_classes: int = 1000) -> dict[str, Any]:
    """ResNet-18 (v2 pre-activation units, all convolutions no_bias=True before a BatchNorm),
    as MXNet's example symbols/resnet.py builds it for num_layers=18 and a 224x224 image."""
    g = SymbolBuilder()
    x = g.op("_copy", "id", [g.variable("data")])
    x = g.batch_norm(x, "bn_data", fix_gamma=True)
    x = g.conv(x, "conv0", 64, (7, 7), stride=(2, 2), pad=(3, 3), no_bias=True)
    x = g.relu(g.batch_norm(x, "bn0"), "relu0")
    x = g.pool(x, "pool0", "max", (3, 3), stride=(2, 2), pad=(1, 1))
    for stage, filters in enumerate([64, 128, 256, 512], start=1):
        stride = 1 if stage == 1 else 2
        x = _basic_block(g, x, filters, stride, True, f"stage{stage}_unit1")
        x = _basic_block(g, x, filters, 1, False, f"stage{stage}_unit2")
    x = g.relu(g.batch_norm(x, "bn1"), "relu1")
    x = g.pool(x, "pool1", "avg", (7, 7), global_pool=True)
    x = g.fc(g.op("Flatten", "flatten", [x]), "fc1", num_classes)
    return g.symbol(g.softmax_output(x))


def _conv_bn_relu(g: SymbolBuilder, data: Ref, filters: int, kernel: tuple[int, int], name: str,
                  stride: tuple[int, int] = (1, 1), pad: tuple[int, int] = (0, 0)) -> Ref:
    """Inception-BN's ConvFactory: convolution (with bias), BatchNorm, ReLU."""
    x = g.conv(data, f"conv_{name}", filters, kernel, stride=stride, pad=pad)
    x = g.batch_norm(x, f"bn_{name}", eps=1e-10 + 1e-5)
    return g.relu(x, f"relu_{name}")


def _inception_a(g: SymbolBuilder, data: Ref, n1x1: int, n3x3r: int, n3x3: int, nd3x3r: int, nd3x3: int,
                 pool: str, proj: int, name: str) -> Ref:
    c1 = _conv_bn_relu(g, data, n1x1, (1, 1), f"{name}_1x1")
    c3 = _conv_bn_relu(g, data, n3x3r, (1, 1), f"{name}_3x3_reduce")
    c3 = _conv_bn_relu(g, c3, n3x3, (3, 3), f"{name}_3x3", pad=(1, 1))
    cd = _conv_bn_relu(g, data, nd3x3r, (1, 1), f"{name}_double_3x3_reduce")
    cd = _conv_bn_relu(g, cd, nd3x3, (3, 3), f"{name}_double_3x3_0", pad=(1, 1))
    cd = _conv_bn_relu(g, cd, nd3x3, (3, 3), f"{name}_double_3x3_1", pad=(1, 1))
    p = g.pool(data, f"{pool}_pool_{name}_pool", pool, (3, 3), stride=(1, 1), pad=(1, 1))
    p = _conv_bn_relu(g, p, proj, (1, 1), f"{name}_proj")
    return g.op("Concat", f"ch_concat_{name}_chconcat", [c1, c3, cd, p], {"dim": 1, "num_args": 4})


def _inception_b(g: SymbolBuilder, data: Ref, n3x3r: int, n3x3: int, nd3x3r: int, nd3x3: int, name: str) -> Ref:
    c3 = _conv_bn_relu(g, data, n3x3r, (1, 1), f"{name}_3x3_reduce")
    c3 = _conv_bn_relu(g, c3, n3x3, (3, 3), f"{name}_3x3", stride=(2, 2), pad=(1, 1))
    cd = _conv_bn_relu(g, data, nd3x3r, (1, 1), f"{name}_double_3x3_reduce")
    cd = _conv_bn_relu(g, cd, nd3x3, (3, 3), f"{name}_double_3x3_0", pad=(1, 1))
    cd = _conv_bn_relu(g, cd, nd3x3, (3, 3), f"{name}_double_3x3_1", stride=(2, 2), pad=(1, 1))
    p = g.pool(data, f"max_pool_{name}_pool", "max", (3, 3), stride=(2, 2), pad=(1, 1))
    return g.op("Concat", f"ch_concat_{name}_chconcat", [c3, cd, p], {"dim": 1, "num_args": 3})


def inception_bn(num_classes: int = 1000) -> dict[str, Any]:
    """Inception with BatchNorm (Ioffe & Szegedy 2015), as in MXNet's example symbols/inception-bn.py
    for a 224x224 image: convolutions keep their bias; the final 7x7 average pooling is not global."""
    g = SymbolBuilder()
    x = _conv_bn_relu(g, g.variable("data"), 64, (7, 7), "1", stride=(2, 2), pad=(3, 3))
    x = g.pool(x, "pool_1", "max", (3, 3), stride=(2, 2))
    x = _conv_bn_relu(g, x, 64, (1, 1), "2_red")
    x = _conv_bn_relu(g, x, 192, (3, 3), "2", pad=(1, 1))
    x = g.pool(x, "pool_2", "max", (3, 3), stride=(2, 2))
    x = _inception_a(g, x, 64, 64, 64, 64, 96, "avg", 32, "3a")
    x = _inception_a(g, x, 64, 64, 96, 64, 96, "avg", 64, "3b")
    x = _inception_b(g, x, 128, 160, 64, 96, "3c")
    x = _inception_a(g, x, 224, 64, 96, 96, 128, "avg", 128, "4a")
    x = _inception_a(g, x, 192, 96, 128, 96, 128, "avg", 128, "4b")
    x = _inception_a(g, x, 160, 128, 160, 128, 160, "avg", 128, "4c")
    x = _inception_a(g, x, 96, 128, 192, 160, 192, "avg", 128, "4d")
    x = _inception_b(g, x, 128, 192, 192, 256, "4e")
    x = _inception_a(g, x, 352, 192, 320, 160, 224, "avg", 128, "5a")
    x = _inception_a(g, x, 352, 192, 320, 192, 224, "max", 128, "5b")
    x = g.pool(x, "global_pool", "avg", (7, 7), stride=(1, 1))
    x = g.fc(g.op("Flatten", "flatten", [x]), "fc1", num_classes)
    return g.symbol(g.softmax_output(x))


def _mobilenet_conv(g: SymbolBuilder, data: Ref, filters: int, kernel: tuple[int, int], name: str,
                    stride: int = 1, pad: int = 0, groups: int = 1) -> Ref:
    """MobileNet's Conv: a bias-free convolution, BatchNorm (fix_gamma=True), ReLU."""
    x = g.conv(data, f"{name}_conv2d", filters, kernel, stride=(stride, stride), pad=(pad, pad), no_bias=True,
               num_group=groups)
    x = g.batch_norm(x, f"{name}_batchnorm", fix_gamma=True)
    return g.relu(x, f"{name}_relu")


def mobilenet(num_classes: int = 1000) -> dict[str, Any]:
    """MobileNet v1 (Howard et al. 2017), width 1.0, 224x224, as in MXNet's example symbols/mobilenet.py:
    a 3x3/2 convolution, then 13 depthwise-separable blocks (a depthwise 3x3 convolution, i.e.
    num_group = channels, which NNPACK cannot run, and a pointwise 1x1 one), global average pooling."""
    g = SymbolBuilder()
    x = _mobilenet_conv(g, g.variable("data"), 32, (3, 3), "conv_1", stride=2, pad=1)
    channels = 32
    # (pointwise filters, depthwise stride) of blocks conv_2 .. conv_14
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
    for index, (filters, stride) in enumerate(blocks, start=2):
        x = _mobilenet_conv(g, x, channels, (3, 3), f"conv_{index}_dw", stride=stride, pad=1, groups=channels)
        x = _mobilenet_conv(g, x, filters, (1, 1), f"conv_{index}")
        channels = filters
    x = g.pool(x, "global_pool", "avg", (7, 7), stride=(1, 1), global_pool=True)
    x = g.fc(g.op("Flatten", "flatten", [x]), "fc", num_classes)
    return g.symbol(g.softmax_output(x))


#: Zoo name -> generator of the symbol dict (224x224x3 input, 1000 classes by default).
MODELS: dict[str, Callable[[], dict[str, Any]]] = {
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "inception-bn": inception_bn,
    "mobilenet": mobilenet,
}


def get_model(name: str) -> dict[str, Any]:
    """The symbol dict of zoo model `name` (see MODELS)."""
    try:
        return MODELS[name]()
    except KeyError:
        raise ConfigurationError(f"unknown zoo model {name!r}; the zoo has: {', '.join(MODELS)}") from None


def write_model(name: str, path: str | Path) -> Path:
    """Write zoo model `name` as an MXNet ``*-symbol.json`` file (loadable by ``mx.sym.load``)."""
    target = Path(path)
    target.write_text(json.dumps(get_model(name), indent=2) + "\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nnpack_toolchain.model_zoo NAME PATH``: write one zoo model."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(f"usage: python -m nnpack_toolchain.model_zoo NAME PATH   (NAME: {', '.join(MODELS)})",
              file=sys.stderr)
        return 2
    try:
        written = write_model(args[0], args[1])
    except ConfigurationError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
