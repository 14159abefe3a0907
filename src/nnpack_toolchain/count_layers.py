"""What `invoke bench --count` counts and the arithmetic on the counts (no processes, no I/O).

A convolution at one batch size (ConvShape, from the zoo networks through check_model), the choices
patch 0007's auto policy has for it (layer_choices: "MXNet", "NNPACK <algorithm>" and, at batch 1
in a graph, "NNPACK <algorithm> precompute") and the tuning table that pins one
(mx.runtime.nnpack_import_tuning). From the plugin's totals of one variant's four counted forks
(count_runner.py): instructions per image (fork_counts), effective FLOP per instruction (a direct
convolution's FLOPs, 2*K*C/groups*R*S*P*Q per image, over its instructions; NEON's 128-bit fp32
FMA does 8 per instruction, so a direct method is at most 8, while Winograd and FFT do fewer
multiplications and can exceed it) and auto's choice from counts (the fewest instructions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .check_model import check_model
from .errors import ConfigurationError, VerificationError
from .model_zoo import get_model

MIN_INCREMENT = 2e7
"""Instructions the K2 - K1 extra passes should at least do: the forking process's own instructions
between two forks vary by up to some 5e3 (its heap), which must stay well below 0.1 % of the increment."""
OPTIMISTIC_FLOP_PER_INSN = 16
"""For choosing K2 from a cell's FLOPs: no choice measured does more (Winograd: about 13)."""
MAX_PASSES = 64
NEON_FLOP_PER_INSN = 8
"""128-bit NEON fp32 FMA: 4 lanes x 2 FLOPs per instruction, the limit for a direct method."""
REPEAT_TOLERANCE = 1e-3
"""Two runs of one cell must give the same count within 0.1 %."""
TRANSFORM_RESERVE = 8 * 2**20
"""Patch 0007's MemoryBudget::kReserve: what of the budget transforms and workspaces may not take."""
MXNET = "MXNet"
ALWAYS = "NNPACK always"
AUTO = "NNPACK auto (counts)"


@dataclass(frozen=True)
class ConvShape:
    """A Convolution at one batch size: what its counts depend on (names apart)."""

    batch: int
    in_c: int
    in_h: int
    in_w: int
    out_c: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    no_bias: bool = False
    groups: int = 1
    dilate: tuple[int, int] = (1, 1)

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple((size + 2 * p - (d * (k - 1) + 1)) // s + 1  # type: ignore[return-value]
                     for size, k, s, p, d in zip((self.in_h, self.in_w), self.kernel, self.stride, self.pad,
                                                 self.dilate))

    @property
    def flops_per_image(self) -> int:
        """A direct convolution's FLOPs for one image: 2 * K * C/groups * R * S * P * Q."""
        out_h, out_w = self.out_hw
        return 2 * self.out_c * (self.in_c // self.groups) * self.kernel[0] * self.kernel[1] * out_h * out_w

    def cell_spec(self) -> dict[str, Any]:
        """The --layer argument of count_cell.py."""
        spec: dict[str, Any] = {"input": [self.batch, self.in_c, self.in_h, self.in_w], "num_filter": self.out_c,
                                "kernel": list(self.kernel), "stride": list(self.stride), "pad": list(self.pad),
                                "no_bias": self.no_bias}
        if self.groups != 1:
            spec["num_group"] = self.groups
        if self.dilate != (1, 1):
            spec["dilate"] = list(self.dilate)
        return spec

    def plan_shape(self) -> list[int]:
        """Patch 0007's plan key for a Convolution: batch, in_c, in_h, in_w, out_c, k_h, k_w, s_h, s_w, p_h, p_w."""
        return [self.batch, self.in_c, self.in_h, self.in_w, self.out_c, *self.kernel, *self.stride, *self.pad]

    def describe(self) -> str:
        text = (f"{self.in_c}x{self.in_h}x{self.in_w} -> {self.out_c}, {self.kernel[0]}x{self.kernel[1]}"
                f"/{self.stride[0]} pad {self.pad[0]}")
        return text + (f" groups {self.groups}" if self.groups != 1 else "")


def nnpack_rejects(shape: ConvShape) -> str | None:
    """Why the patched operator does not hand this convolution to NNPACK (None: it does).
    check_model's rules plus the operator's own geometry checks (patch 0007's RunConvolution)."""
    unit_stride = shape.stride == (1, 1)
    if shape.groups != 1:
        return f"num_group {shape.groups}"
    if shape.dilate != (1, 1):
        return "dilated"
    if shape.batch != 1 and not unit_stride:
        return f"stride {shape.stride[0]} with batch {shape.batch}"
    if shape.pad[0] >= shape.kernel[0] or shape.pad[1] >= shape.kernel[1]:
        return "padding >= kernel"
    if shape.batch != 1 and max(shape.kernel) > 16:
        return "kernel larger than 16 with batch > 1"
    if shape.in_h + 2 * shape.pad[0] < shape.kernel[0] or shape.in_w + 2 * shape.pad[1] < shape.kernel[1]:
        return "kernel larger than input"
    return None


def layer_choices(shape: ConvShape) -> list[str]:
    """The choices the auto policy has for this shape, by patch 0007's names and in its order:
    "MXNet" first, then "NNPACK <algorithm>" and, at batch 1 in a graph (a bound executor),
    "NNPACK <algorithm> precompute" (a kernel transform computed once)."""
    if nnpack_rejects(shape) is not None:
        return [MXNET]
    unit = shape.stride == (1, 1)
    k_h, k_w = shape.kernel
    b1 = shape.batch == 1
    names = [MXNET]

    def add(algorithm: str, precompute: bool) -> None:
        names.append(f"NNPACK {algorithm}")
        if precompute and b1:
            names.append(f"NNPACK {algorithm} precompute")

    if shape.kernel == (3, 3) and unit:
        add("wt8x8", True)
    if unit and k_h <= 8 and k_w <= 8:
        add("ft8x8", True)
    if unit and k_h <= 16 and k_w <= 16:
        add("ft16x16", True)
    if b1:
        add("implicit-gemm", True)
    if b1 and shape.kernel == (1, 1) and unit:
        add("direct", False)
    return names


def transform_bytes(shape: ConvShape, choice: str) -> int:
    """Bytes of the kernel transform a "NNPACK <algorithm> precompute" choice holds (0 for other choices):
    NNPACK's size query for nnp_convolution_transform_strategy_precompute (src/convolution-inference.c),
    out_c * in_c * tile elements * 4 for wt8x8 and ft8x8 (8x8 tiles) and ft16x16 (16x16), and
    out_c * in_c * k_h * k_w * 4 for implicit-gemm's packed kernel."""
    if not choice.endswith(" precompute"):
        return 0
    algorithm = choice.removeprefix("NNPACK ").removesuffix(" precompute")
    per_pair = {"wt8x8": 64, "ft8x8": 64, "ft16x16": 256, "implicit-gemm": shape.kernel[0] * shape.kernel[1]}
    if algorithm not in per_pair:
        raise ConfigurationError(f"no precomputed transform is known for {choice!r}")
    return shape.out_c * shape.in_c * per_pair[algorithm] * 4


def output_workspace_bytes(shape: ConvShape, choice: str) -> int:
    """Bytes of the workspace nnp_convolution_output takes for a batch (> 1; MXNet calls it there) on a
    pinned choice: NNPACK's src/convolution-output.c holds the kernel, input and output transforms
    of the whole batch, (out_c * in_c + batch * in_c + batch * out_c) * tile elements floats.
    0 at batch 1 (nnp_convolution_inference's workspace is charged too, but not modelled here) and
    for choices the output call does not run."""
    algorithm = choice.removeprefix("NNPACK ")
    tile = {"wt8x8": 64, "ft8x8": 64, "ft16x16": 256}.get(algorithm)
    if shape.batch == 1 or tile is None:
        return 0
    return (shape.out_c * shape.in_c + shape.batch * (shape.in_c + shape.out_c)) * tile * 4


def workspace_charge(shape: ConvShape, choice: str) -> int:
    """What patch 0007 (Workspace, under auto) charges to the memory budget for that workspace: NNPACK's
    bytes plus 64 of alignment, less what MXNet's own code takes from the same temp space (one image's
    im2col buffer, in_c * k_h * k_w * out_h * out_w floats; nothing for a 1x1/1 unpadded layer)."""
    need = output_workspace_bytes(shape, choice)
    if need == 0:
        return 0
    own_1x1 = shape.kernel == (1, 1) and shape.stride == (1, 1) and shape.pad == (0, 0)
    out_h, out_w = shape.out_hw
    own = 0 if own_1x1 else shape.in_c * shape.kernel[0] * shape.kernel[1] * out_h * out_w * 4
    return max(need + 64 - own, 0)


def fits_budget(shape: ConvShape, choice: str, budget_bytes: int) -> bool:
    """Whether the choice's kernel transform alone fits patch 0007's memory budget (its usable part); one
    that does not is never held, so the auto policy on a device with that budget cannot choose it."""
    return transform_bytes(shape, choice) <= max(budget_bytes - TRANSFORM_RESERVE, 0)


def check_layer_record(choice: str, record: Mapping[str, Any], label: str, shape: ConvShape) -> str | None:
    """What is wrong with a layer variant's record: NNPACK's call counter must show the choice ran
    (unless its batch workspace is over the budget: record_over_budget), and a precompute choice
    (layer_variants counts only those whose transform alone fits) must hold its transform unless
    the record shows it did not fit beside the workspace (record_over_budget)."""
    calls = record.get("nnpack_conv_calls_per_pass")
    if choice == MXNET and calls != 0:
        return f"{label}: MXNet's own code was asked for, but NNPACK ran {calls} convolutions per pass"
    if choice != MXNET and calls != 1 and not (calls == 0 and record_over_budget(choice, record, shape)):
        return f"{label}: {choice}: NNPACK ran {calls} convolutions per pass, not 1"
    if choice.endswith(" precompute") and not record.get("transforms") and not record_over_budget(choice, record, shape):
        mib = 2**20
        return (f"{label}: {choice}: no precomputed kernel transform was held, though its "
                f"{transform_bytes(shape, choice) / mib:,.1f} MiB fit the memory budget of "
                f"{(record.get('memory_budget_bytes') or 0) / mib:,.1f} MiB (workspace held "
                f"{(record.get('workspace_bytes') or 0) / mib:,.1f} MiB); see the log")
    return None


def record_over_budget(choice: str, record: Mapping[str, Any], shape: ConvShape) -> bool:
    """Whether a pinned choice could not run as asked within the record's memory budget, which is what
    the auto policy on such a device would get, so auto cannot choose it: a batch's workspace
    (workspace_charge) over what the budget less its reserve has left, so NNPACK did not run (patch
    0007's ChargeWorkspace; MXNet's own code ran), or a precompute variant's transform that did not fit
    beside the workspace its record shows held (ReserveTransform; the choice ran without one)."""
    budget, workspace = record.get("memory_budget_bytes"), record.get("workspace_bytes")
    if record.get("nnpack_conv_calls_per_pass") == 0 and budget is not None:
        held = (record.get("transform_bytes") or 0) + (workspace or 0)  # ChargeWorkspace's test, exactly
        charge = workspace_charge(shape, choice)
        return charge > 0 and held + charge > max(budget - TRANSFORM_RESERVE, 0)
    if not choice.endswith(" precompute") or budget is None or workspace is None or record.get("transforms"):
        return False
    return transform_bytes(shape, choice) + workspace > max(budget - TRANSFORM_RESERVE, 0)


def tuning_table(pins: Iterable[tuple[ConvShape, str]]) -> dict[str, Any]:
    """A table for mx.runtime.nnpack_import_tuning pinning each shape to a choice (names from layer_choices).
    transforms = 1 at batch 1: an executor's nodes may precompute kernel transforms there."""
    plans = []
    for shape, choice in pins:
        plans.append({"layer": "Convolution", "shape": shape.plan_shape(), "transforms": int(shape.batch == 1),
                      "choice": choice})
    return {"format": "mxnet-nnpack-tuning", "version": 1, "plans": plans}


# Arithmetic --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForkCounts:
    """What four counted grandchildren of one variant (K1, K2, K1, K2 passes) say."""

    insns_per_image: float
    between_forks: float
    """d: the variant's own instructions between two forks (waitpid, Python), taken out."""
    spread: float
    """|first K2-K1 increment - second| over the per-pass work: the in-process repeatability."""


def cell_passes(flops_per_pass: float, min_increment: float = MIN_INCREMENT,
                max_passes: int = MAX_PASSES) -> tuple[int, int]:
    """K1 = 0 and K2 such that K2 passes do at least min_increment instructions even at
    OPTIMISTIC_FLOP_PER_INSN (at most max_passes): 1 for every network, more for small layers.
    (A variant's forks run after its warm-up, so 0 and 1 passes already measure a warm pass; the
    first pass after a fork costs some 1e2 instructions more than later ones, which K2 dilutes.)"""
    estimate = max(flops_per_pass / OPTIMISTIC_FLOP_PER_INSN, 1.0)
    return 0, max(1, min(max_passes, math.ceil(min_increment / estimate)))


def fork_counts(totals: Sequence[int], k1: int, k2: int, batch: int) -> ForkCounts:
    """Instructions per image from the totals of four forks g0..g3 with K1, K2, K1, K2 passes.

    Each total is g_i = A + i*d + W(K_i): A everything before the first fork (start-up, binding,
    warm-up), d the forking process's own work between two forks, W the passes. So
    d = ((g2 - g0) + (g3 - g1)) / 4 and W(K2) - W(K1) = ((g1 - g0) + (g3 - g2)) / 2 - d, per image
    divided by (K2 - K1) * batch.
    """
    if len(totals) != 4:
        raise VerificationError(f"expected the totals of 4 counted forks, got {len(totals)}")
    if not 0 <= k1 < k2 or batch < 1:
        raise ConfigurationError(f"pass counts must grow (K1 {k1} < K2 {k2}) and the batch be positive ({batch})")
    g0, g1, g2, g3 = totals
    d = ((g2 - g0) + (g3 - g1)) / 4
    first, second = g1 - g0, g3 - g2
    work = (first + second) / 2 - d
    if work <= 0:
        raise VerificationError(f"the forks with {k2} passes counted no more instructions than those with {k1} "
                                f"(totals {list(totals)}): the passes did no work; see the log")
    return ForkCounts(work / (k2 - k1) / batch, d, abs(first - second) / work)


def flop_per_insn(flops_per_image: float, insns_per_image: float | None) -> float | None:
    """Effective FLOP per instruction (direct-convolution FLOPs over the instructions that did them)."""
    if not insns_per_image:
        return None
    return flops_per_image / insns_per_image


def auto_choice(per_choice: Mapping[str, float]) -> str:
    """The choice with the fewest instructions per image (the first listed among equals);
    NNPACK always is a policy, not a choice the auto policy has, so it is left out."""
    candidates = [(value, index, name) for index, (name, value) in enumerate(per_choice.items())
                  if name != ALWAYS and value is not None]
    if not candidates:
        raise ConfigurationError("no counted choice to choose from")
    return min(candidates)[2]


def relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1)


# Layers of the zoo networks ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvLayer:
    network: str
    batch: int
    name: str
    shape: ConvShape


def conv_layers(network: str, batch: int) -> list[ConvLayer]:
    """Every Convolution of a zoo network at `batch`, with its input shape from check_model."""
    symbol = get_model(network)
    report = check_model(symbol, batch=batch)
    attrs = {node["name"]: node.get("attrs", {}) for node in symbol["nodes"] if node["op"] == "Convolution"}

    def pair(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
        if not text:
            return default
        values = tuple(int(v) for v in text.strip("()[] ").split(",") if v.strip())
        return (values[0], values[1]) if len(values) == 2 else default

    layers = []
    for layer in report.layers:
        if layer.op != "Convolution":
            continue
        a = attrs[layer.name]
        kernel = pair(a.get("kernel"), (1, 1))
        _, c, h, w = layer.input_shape
        layers.append(ConvLayer(network, batch, layer.name, ConvShape(
            batch=batch, in_c=c, in_h=h, in_w=w, out_c=int(a["num_filter"]), kernel=kernel,
            stride=pair(a.get("stride"), (1, 1)), pad=pair(a.get("pad"), (0, 0)),
            no_bias=a.get("no_bias", "False") in ("True", "true", "1"), groups=int(a.get("num_group", "1")),
            dilate=pair(a.get("dilate"), (1, 1)))))
    return layers


def network_flops_per_image(network: str) -> int:
    """Convolution, FullyConnected and pooling FLOPs of a zoo network for one image (check_model's convention)."""
    return check_model(get_model(network), batch=1).totals().flops
