"""What `invoke check-model` reports (the data model): per layer the decision under each rule set and
its reasons, the other layers, the totals. :mod:`nnpack_toolchain.check_model` fills it in,
:mod:`nnpack_toolchain.check_model_report` prints it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from .model_symbol import Shape


class RuleSet(str, Enum):
    """Which NNPACK eligibility rules to apply."""

    BUILD = "build"
    STRICT_1_0 = "strict_1_0"

    @property
    def label(self) -> str:
        return {"build": "this build", "strict_1_0": "MXNet 1.0 rules"}[self.value]


class ReasonCode(str, Enum):
    """Why a layer is not eligible for NNPACK: one per condition the patched operators check."""

    DTYPE = "dtype"
    NOT_2D = "not_2d"
    LAYOUT = "layout"
    GROUPED = "grouped"
    DILATED = "dilated"
    NO_BIAS = "no_bias_strict"
    STRIDE_WITH_BATCH = "stride_with_batch"
    NOT_MAX_POOLING = "not_max_pooling"
    GLOBAL_POOLING = "global_pooling"
    POOLING_CONVENTION = "pooling_convention"
    POOL_KERNEL = "pool_kernel"
    POOL_STRIDE = "pool_stride"
    NOT_VECTORS = "not_vectors"


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    message: str


@dataclass(frozen=True)
class Decision:
    """Eligible for NNPACK or not, under one rule set; `reasons` lists every failed condition."""

    reasons: tuple[Reason, ...] = ()

    @property
    def eligible(self) -> bool:
        """The patched operator may hand the layer to NNPACK (the auto policy may still keep MXNet's code)."""
        return not self.reasons

    @property
    def reason(self) -> str:
        return "; ".join(r.message for r in self.reasons)

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(r.code for r in self.reasons)


@dataclass(frozen=True)
class LayerReport:
    """A Convolution, Pooling or FullyConnected layer: the ops that can be eligible for NNPACK."""

    name: str
    op: str
    input_shape: Shape
    output_shape: Shape
    flops: int
    summary: str
    decisions: Mapping[RuleSet, Decision]

    def decision(self, rules: RuleSet = RuleSet.BUILD) -> Decision:
        return self.decisions[rules]


@dataclass(frozen=True)
class OtherLayer:
    """Any other operator: never eligible for NNPACK, counted as 0 FLOPs."""

    name: str
    op: str
    output_shape: Shape | None


@dataclass(frozen=True)
class Totals:
    rules: RuleSet
    flops: int
    eligible_flops: int
    #: op -> (layers eligible for NNPACK, layers)
    layers: dict[str, tuple[int, int]]

    @property
    def share(self) -> float:
        """The eligible share of the Convolution + FullyConnected + Pooling FLOPs."""
        return self.eligible_flops / self.flops if self.flops else 0.0


@dataclass
class ModelReport:
    model: str
    batch: int
    data_input: str
    data_shape: Shape
    output_shapes: list[Shape | None]
    layers: list[LayerReport]
    other_layers: list[OtherLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mxnet_version: int | None = None

    def layer(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def totals(self, rules: RuleSet = RuleSet.BUILD) -> Totals:
        counts: dict[str, tuple[int, int]] = {}
        eligible_flops = 0
        for layer in self.layers:
            eligible = layer.decision(rules).eligible
            done, total = counts.get(layer.op, (0, 0))
            counts[layer.op] = (done + eligible, total + 1)
            eligible_flops += layer.flops if eligible else 0
        return Totals(rules, sum(layer.flops for layer in self.layers), eligible_flops, counts)
