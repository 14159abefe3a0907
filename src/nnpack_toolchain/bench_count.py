"""`invoke bench --count`: deterministic work counts on ARM, guest instructions per image under QEMU.

Timings under QEMU say nothing about a board; instruction counts do say how much work each way of
running a layer takes, exactly and repeatably. Each cell (target_scripts/count_cell.py: a network
or a single Convolution layer at one batch size, bound once with fixed-seed random weights) runs
in one process under QEMU's insn plugin (insn_count.py) and tries its variants (MXNet's own code,
NNPACK always, each pinned NNPACK choice) one by one in forked children; each child warms up and
forks grandchildren doing K1, K2, K1, K2 counted passes (after one uncounted fork). A fork's total includes everything
before it, so start-up, binding and warm-up cancel exactly: importing mxnet alone is about 6e9
instructions whose count varies by some 1e5 run to run, more than a small layer's pass, so two
separate processes with K1 and K2 passes would not do. Instructions per image =
(W(K2) - W(K1)) / (K2 - K1) / batch, with the forking child's own few instructions between two
forks measured by the repeats and taken out (fork_counts); the two K2-K1 increments must agree
within REPEAT_TOLERANCE.

Single-threaded (CELL_ENV): threads change the schedule, not the work, and spin-waits add
instructions that differ run to run. MXNet's NaiveEngine runs operators on the calling thread.
The host's qemu-user 7.2 runs the cells (counting_env): the target Pythons otherwise run under
Debian 13's static QEMU 10 (emulator.py), which cannot load plugins. QEMU 7.2 aborts when a forked
child of a process that has had threads starts a thread; a cell never has a second thread, and
a cell whose process had more than one vCPU is refused.

Per network and batch: MXNet's own code (policy never), NNPACK always, and auto with the choice
per layer shape that has the fewest instructions (from the per-layer counts, pinned with
mx.runtime.nnpack_import_tuning; MXNET_ENFORCE_DETERMINISM=1, so nothing is timed and an unlisted
shape, e.g. a FullyConnected layer, runs NNPACK's own algorithm as under always).
Per convolution layer (one cell per distinct shape; a shape repeated in a network or shared by
several is counted once): MXNet, NNPACK always, and each NNPACK algorithm the patched operator can
run there (patch 0007's list: wt8x8, ft8x8, ft16x16, implicit-gemm, direct, and the "precompute"
variants with a kernel transform made once, batch 1 only), forced by pinning it.
FLOP per instruction: a direct convolution's FLOPs (2*K*C/groups*R*S*P*Q per image) over its
instructions per image; NEON's 128-bit fp32 FMA does 8 per instruction, so a direct method is
at most 8, while Winograd and FFT do fewer multiplications and can exceed it.

Each cell's counts are kept in `<home>/out/<target>/bench/count/count-cells.json` (keyed by the
wheel, QEMU, the cell, its variants and environment): an interrupted run resumes. One cell is run
again at the end, uncached, and its counts per image must agree within REPEAT_TOLERANCE.
Results: a table, count-<target>.json and two PNG plots next to it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from . import log
from .check_model import check_model
from .errors import ConfigurationError, VerificationError
from .files import atomic_write_text
from .insn_count import installed_qemu_version, run_counted
from .model_zoo import get_model
from .settings import Settings
from .smoke import SCRIPTS
from .target_env import PythonEnv
from .targets import Target

COUNT_NETWORKS = ("alexnet", "vgg16", "resnet18", "inception-bn", "mobilenet")
COUNT_BATCHES = (1, 8)
MIN_INCREMENT = 2e7
"""Instructions the K2 - K1 extra passes should at least do: the forking process's own instructions
between two forks vary by up to some 5e3 (its heap), which must stay well below 0.1 % of the increment."""
OPTIMISTIC_FLOP_PER_INSN = 16
"""For choosing K2 from a cell's FLOPs: no choice measured does more (Winograd: about 13)."""
MAX_PASSES = 64
WARMUP = 2
"""Passes before the counted ones: the first call of a graph node never builds a kernel transform,
the second does (patch 0007), so from the third on every pass does the same work."""
NEON_FLOP_PER_INSN = 8
"""128-bit NEON fp32 FMA: 4 lanes x 2 FLOPs per instruction, the limit for a direct method."""
FORKS = 6
"""Totals per variant in the plugin's log: an uncounted fork, the K1, K2, K1, K2 forks, the variant's child."""
REPEAT_TOLERANCE = 1e-3
"""Two runs of one cell must give the same count within 0.1 %."""
CELL_ENV = {
    "MXNET_CPU_NNPACK_NTHREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "MXNET_CPU_WORKER_NTHREADS": "1", "MXNET_ENGINE_TYPE": "NaiveEngine", "PYTHONHASHSEED": "0",
    "MXNET_ENFORCE_DETERMINISM": "1",
}
"""The environment of every cell: one thread everywhere, operators on the calling thread; the auto
policy times nothing (a shape its pinned table does not list runs NNPACK's own algorithm)."""
MXNET = "MXNet"
ALWAYS = "NNPACK always"
AUTO = "NNPACK auto (counts)"
POLICY_LABELS = {"never": MXNET, "always": ALWAYS, "auto": AUTO}
ALGORITHMS = ("wt8x8", "ft8x8", "ft16x16", "implicit-gemm", "direct")
COLOURS = {MXNET: "tab:blue", ALWAYS: "tab:orange", "wt8x8": "tab:green", "ft8x8": "tab:red",
           "ft16x16": "tab:purple", "implicit-gemm": "tab:brown", "direct": "tab:pink"}
"""Plot colours: one per choice's algorithm, its precompute variant dashed."""


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


# Running cells ------------------------------------------------------------------------------------


@dataclass
class CountOptions:
    networks: tuple[str, ...] = COUNT_NETWORKS
    batches: tuple[int, ...] = COUNT_BATCHES
    layers: bool = True
    """Per-layer counts (and so the auto column, chosen from them)."""
    min_increment: float = MIN_INCREMENT
    """Instructions K2 passes must at least do (K2 from each cell's FLOPs, see cell_passes)."""
    warmup: int = WARMUP
    timeout: float = 12 * 3600
    inline: bool = False
    """QEMU plugin's inline counter: faster, exact only while one guest thread runs at a time."""

    def __post_init__(self) -> None:
        if self.min_increment < 0:
            raise ConfigurationError(f"the minimum increment must be positive, not {self.min_increment}")
        if self.warmup < 2:
            raise ConfigurationError("--count needs at least 2 warm-up passes (a kernel transform is built on the "
                                     "second call)")


@dataclass
class Variant:
    """One way to run a cell's network or layer: a policy, and for auto the pinned choices."""

    name: str
    policy: str
    tuning: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "policy": self.policy, **({"tuning": self.tuning} if self.tuning else {})}


@dataclass
class Cell:
    """One count_cell.py process: a network or a layer at one batch size, and its variants."""

    label: str
    args: list[str]
    batch: int
    variants: list[Variant]
    flops_per_pass: float
    """Direct-convolution (and FC, pooling) FLOPs of one pass: how many passes to count (cell_passes)."""


@dataclass
class Measured:
    variant: str
    insns_per_image: float
    totals: tuple[int, ...]
    between_forks: float
    spread: float
    record: dict[str, Any]
    passes: tuple[int, int] = (0, 1)


def counting_env(env: PythonEnv) -> PythonEnv:
    """env run by the host's qemu-user 7.2 (whose plugin API insn_count.py builds against) instead of
    Debian 13's static QEMU of the smoke suite, which cannot load plugins."""
    if env.target.qemu_binary is None:
        raise ConfigurationError(f"--count counts guest instructions under QEMU: give an ARM target (--arch arm64 or "
                                 f"armv7), not {env.target.name}")
    return replace(env, qemu=env.target.qemu_binary)


class CellRunner:
    """Runs cells under the plugin; keeps every cell's counts in a cache file to resume from."""

    def __init__(self, env: PythonEnv, site: Path, work: Path, settings: Settings, options: CountOptions,
                 identity: Mapping[str, str], log_path: Path,
                 run: Callable[..., Any] = run_counted) -> None:
        self.env, self.site, self.work, self.settings, self.options = counting_env(env), site, work, settings, options
        self.identity = dict(identity)
        self.log_path = log_path
        work.mkdir(parents=True, exist_ok=True)
        self.cache_path = work / "count-cells.json"
        self.cache: dict[str, Any] = json.loads(self.cache_path.read_text()) if self.cache_path.is_file() else {}
        self._run = run
        self.script_digest = hashlib.sha256(b"".join(
            (SCRIPTS / name).read_bytes() for name in ("count_cell.py", "bench_models.py", "nnpack_layers.py"))
        ).hexdigest()[:16]

    def environment(self) -> dict[str, str]:
        return self.env.environment({"PYTHONPATH": str(self.site), **CELL_ENV})

    def key(self, cell: Cell) -> str:
        text = json.dumps([self.identity, self.script_digest, cell.args, [v.to_json() for v in cell.variants],
                           CELL_ENV, self.passes(cell), self.options.warmup, self.options.inline], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def passes(self, cell: Cell) -> tuple[int, int]:
        return cell_passes(cell.flops_per_pass, self.options.min_increment)

    def run_cell(self, cell: Cell, *, use_cache: bool = True) -> dict[str, Any]:
        """The cell's raw result: every process's total, the RESULT records, the run time."""
        key = self.key(cell)
        if use_cache and key in self.cache:
            return {**self.cache[key], "cached": True}
        variants = self.work / "count-variants.json"  # one fixed path: the command line is alike run to run
        variants.write_text(json.dumps([v.to_json() for v in cell.variants], indent=1) + "\n")
        argv = [*self.env.argv, SCRIPTS / "count_cell.py", *cell.args, "--variants", variants,
                "--warmup", str(self.options.warmup), "--passes", ",".join(map(str, self.passes(cell)))]
        started = time.monotonic()
        counted = self._run(argv, self.settings, env=self.environment(), cwd=self.work, timeout=self.options.timeout,
                            inline=self.options.inline, log_path=self.log_path)
        records = [json.loads(line[len("RESULT "):]) for line in counted.stdout.splitlines()
                   if line.startswith("RESULT ")]
        entry = {"totals": list(counted.totals), "threads": len(counted.per_vcpu) or 1, "passes": self.passes(cell),
                 "seconds": round(time.monotonic() - started, 1), "records": records}
        if use_cache:
            self.cache[key] = entry
            atomic_write_text(self.cache_path, json.dumps(self.cache, indent=1, sort_keys=True) + "\n")
        return {**entry, "cached": False}

    def measure(self, cell: Cell, *, use_cache: bool = True) -> dict[str, Measured]:
        """Per variant: instructions per image, from its four forks."""
        raw = self.run_cell(cell, use_cache=use_cache)
        totals = raw["totals"]
        want = FORKS * len(cell.variants) + 1  # per variant its forks and the variant's child, then the cell
        by_variant = {r["variant"]: r for r in raw["records"] if r.get("kind") == "count"}
        if len(totals) != want or len(by_variant) != len(cell.variants):
            raise VerificationError(f"count cell '{cell.label}' gave {len(totals)} instruction totals and "
                                    f"{len(by_variant)} variant records, expected {want} and {len(cell.variants)}",
                                    log_path=self.log_path)
        if raw.get("threads", 1) != 1:
            raise VerificationError(f"count cell '{cell.label}' ran {raw['threads']} guest threads: counts need one "
                                    "(a thread's spin-waits differ run to run, and QEMU 7.2 aborts when a forked child "
                                    "of a threaded process starts a thread); see the environment CELL_ENV sets",
                                    log_path=self.log_path)
        k1, k2 = self.passes(cell)
        measured = {}
        for index, variant in enumerate(cell.variants):
            forks = tuple(totals[FORKS * index + 1:FORKS * index + 5])  # the first fork is not counted
            counts = fork_counts(forks, k1, k2, cell.batch)
            measured[variant.name] = Measured(variant.name, counts.insns_per_image, forks, counts.between_forks,
                                              counts.spread, by_variant[variant.name], (k1, k2))
        state = ("cached, " if raw["cached"] else f"{raw['seconds']:.0f} s, ") + f"K2 = {k2}"
        log.info(f"{cell.label} ({state}): " + ", ".join(f"{m.variant} {m.insns_per_image / 1e6:,.2f} M"
                                                          for m in measured.values()))
        for m in measured.values():
            if m.spread > REPEAT_TOLERANCE:
                raise VerificationError(f"{cell.label}: {m.variant}: two counts of the same passes differ by "
                                        f"{m.spread:.3%} (limit {REPEAT_TOLERANCE:.1%}; totals {list(m.totals)})",
                                        log_path=self.log_path)
        return measured


def choice_variant(shape: ConvShape, choice: str) -> Variant:
    """MXNet (policy never), NNPACK always, or a pinned NNPACK choice (policy auto)."""
    if choice == MXNET:
        return Variant(MXNET, "never")
    if choice == ALWAYS:
        return Variant(ALWAYS, "always")
    return Variant(choice, "auto", tuning_table([(shape, choice)]))


def layer_variants(shape: ConvShape) -> list[str]:
    """What a layer's cell counts: MXNet, and where NNPACK can run it NNPACK always and each choice."""
    names = layer_choices(shape)
    return [MXNET, ALWAYS, *names[1:]] if len(names) > 1 else names


def layer_cell(shape: ConvShape, choices: Sequence[str] | None = None) -> Cell:
    names = list(choices) if choices is not None else layer_variants(shape)
    return Cell(f"layer {shape.describe()} batch {shape.batch}",
                ["--layer", json.dumps(shape.cell_spec(), separators=(",", ":"))], shape.batch,
                [choice_variant(shape, name) for name in names], shape.flops_per_image * shape.batch)


def network_cell(models: Path, network: str, batch: int, auto: dict[str, Any] | None = None) -> Cell:
    """never and always, and auto with the `auto` table when given."""
    variants = [Variant(MXNET, "never"), Variant(ALWAYS, "always")]
    if auto is not None:
        variants.append(Variant(AUTO, "auto", auto))
    return Cell(f"{network} batch {batch}", ["--models", str(models), "--network", network, "--batch", str(batch)],
                batch, variants, network_flops_per_image(network) * batch)


def check_layer_record(choice: str, record: Mapping[str, Any], label: str) -> str | None:
    """What is wrong with a layer variant's record: NNPACK's call counter must show the choice ran."""
    calls = record.get("nnpack_conv_calls_per_pass")
    if choice == MXNET and calls != 0:
        return f"{label}: MXNet's own code was asked for, but NNPACK ran {calls} convolutions per pass"
    if choice != MXNET and calls != 1:
        return f"{label}: {choice}: NNPACK ran {calls} convolutions per pass, not 1"
    if choice.endswith(" precompute") and not record.get("transforms"):
        return f"{label}: {choice}: no precomputed kernel transform was held"
    return None


def expected_network_calls(layers: Sequence[ConvLayer], policy: str, choices: Mapping[ConvShape, str]) -> int:
    """NNPACK convolution calls per pass a network variant must show."""
    if policy == "never":
        return 0
    if policy == "always":
        return sum(1 for layer in layers if nnpack_rejects(layer.shape) is None)
    return sum(1 for layer in layers if choices.get(layer.shape, MXNET) != MXNET)


def write_models(models: Path, networks: Iterable[str]) -> None:
    from .model_zoo import write_model

    models.mkdir(parents=True, exist_ok=True)
    for name in networks:
        write_model(name, models / f"{name}-symbol.json")


def run_count(target: Target, settings: Settings, env: PythonEnv, site: Path, wheel: Path, wheel_sha256: str,
              options: CountOptions, bench_dir: Path, log_path: Path,
              run: Callable[..., Any] = run_counted) -> dict[str, Any]:
    """Count every cell; the results dict (also written as count-<target>.json, with the plots)."""
    if target.qemu_binary is None:
        raise ConfigurationError(f"--count counts guest instructions under QEMU: give an ARM target (--arch arm64 or "
                                 f"armv7), not {target.name}")
    qemu = installed_qemu_version()
    work = bench_dir / "count"
    models = work / "models"
    write_models(models, options.networks)
    runner = CellRunner(env, site, work, settings, options,
                        {"wheel_sha256": wheel_sha256, "qemu": qemu, "target": target.name}, log_path, run)
    results: dict[str, Any] = {
        "target": target.name, "wheel": wheel.name, "wheel_sha256": wheel_sha256, "qemu_user": qemu,
        "python": env.label, "min_increment": options.min_increment, "warmup": options.warmup, "environment": CELL_ENV,
        "neon_flop_per_insn": NEON_FLOP_PER_INSN, "networks": [], "layers": [], "shapes": [],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    shape_counts: dict[ConvShape, dict[str, Measured]] = {}
    first_cell: Cell | None = None
    for network in options.networks:
        flops = network_flops_per_image(network)
        for batch in options.batches:
            layers = conv_layers(network, batch)
            choices: dict[ConvShape, str] = {}
            if options.layers:
                for layer in layers:
                    if layer.shape not in shape_counts:
                        shape_counts[layer.shape] = measure_shape(runner, layer.shape)
                    per_choice = {name: m.insns_per_image for name, m in shape_counts[layer.shape].items()}
                    choices[layer.shape] = auto_choice(per_choice)
                    results["layers"].append(layer_row(layer, shape_counts[layer.shape], choices[layer.shape]))
            pins = [(shape, choice) for shape, choice in choices.items() if nnpack_rejects(shape) is None]
            cell = network_cell(models, network, batch, tuning_table(pins) if options.layers else None)
            first_cell = first_cell or cell
            measured = runner.measure(cell)
            row: dict[str, Any] = {"network": network, "batch": batch, "flops_per_image": flops,
                                   "insns_per_image": {}, "flop_per_insn": {}, "forks": {}}
            for variant in cell.variants:
                m = measured[variant.name]
                want = expected_network_calls(layers, variant.policy, choices)
                got = m.record.get("nnpack_conv_calls_per_pass")
                if got != want:
                    raise VerificationError(f"{cell.label}: {variant.name}: NNPACK ran {got} convolutions per pass, "
                                            f"expected {want}", log_path=log_path)
                if variant.policy == "auto":  # a transform over the memory budget runs the algorithm without one
                    wanted = sum(1 for layer in layers if choices[layer.shape].endswith(" precompute"))
                    row["transforms"] = {"pinned": wanted, "held": m.record.get("transforms")}
                    if (m.record.get("transforms") or 0) < wanted:
                        log.warn(f"{cell.label}: {wanted} layers are pinned to a precomputed transform, "
                                 f"{m.record.get('transforms')} hold one (memory budget)")
                row["insns_per_image"][variant.name] = m.insns_per_image
                row["flop_per_insn"][variant.name] = flop_per_insn(flops, m.insns_per_image)
                row["forks"][variant.name] = fork_json(m)
            row["seconds"] = runner.run_cell(cell)["seconds"]
            if options.layers:
                row["auto_choices"] = {layer.name: choices[layer.shape] for layer in layers}
            results["networks"].append(row)
    results["shapes"] = [{"shape": asdict(shape), "flops_per_image": shape.flops_per_image,
                          "nnpack": nnpack_rejects(shape) or "eligible",
                          "insns_per_image": {n: m.insns_per_image for n, m in per.items()},
                          "forks": {n: fork_json(m) for n, m in per.items()},
                          "seconds": runner.run_cell(layer_cell(shape))["seconds"]}
                         for shape, per in shape_counts.items()]
    if first_cell is None and shape_counts:
        first_cell = layer_cell(next(iter(shape_counts)))
    if first_cell is not None:
        results["repeat"] = repeat_check(runner, first_cell)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    json_path = bench_dir / f"count-{target.name}.json"
    atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    results["json"] = str(json_path)
    results["plots"] = [str(p) for p in plot_counts(results, bench_dir)]
    repeat = results.get("repeat")
    if repeat and repeat["largest_difference"] > REPEAT_TOLERANCE:
        raise VerificationError(f"two runs of '{repeat['cell']}' gave instructions per image "
                                f"{repeat['largest_difference']:.3%} apart (more than {REPEAT_TOLERANCE:.1%}): counts "
                                f"are not repeatable here; see {json_path}", log_path=log_path)
    return results


def fork_json(m: Measured) -> dict[str, Any]:
    return {"passes": list(m.passes), "totals": list(m.totals), "between_forks": m.between_forks, "spread": m.spread}


def measure_shape(runner: CellRunner, shape: ConvShape) -> dict[str, Measured]:
    """Every way of running one convolution shape: MXNet, NNPACK always and each pinned NNPACK choice."""
    cell = layer_cell(shape)
    measured = runner.measure(cell)
    for name, m in measured.items():
        problem = check_layer_record(name, m.record, cell.label)
        if problem:
            raise VerificationError(problem, log_path=runner.log_path)
    return measured


def layer_row(layer: ConvLayer, per: Mapping[str, Measured], choice: str) -> dict[str, Any]:
    flops = layer.shape.flops_per_image
    return {"network": layer.network, "batch": layer.batch, "layer": layer.name, "shape": layer.shape.describe(),
            "nnpack": nnpack_rejects(layer.shape) or "eligible", "flops_per_image": flops,
            "insns_per_image": {n: m.insns_per_image for n, m in per.items()},
            "flop_per_insn": {n: flop_per_insn(flops, m.insns_per_image) for n, m in per.items()},
            "auto_choice": choice}


def repeat_check(runner: CellRunner, cell: Cell) -> dict[str, Any]:
    """Run one cell again, not from the cache: every variant's instructions per image must agree."""
    first = runner.measure(cell)
    again = runner.measure(cell, use_cache=False)
    differences = {name: relative_difference(first[name].insns_per_image, again[name].insns_per_image)
                   for name in first}
    log.info(f"repeat of {cell.label}: per image " + ", ".join(f"{n} {d:.4%} apart" for n, d in differences.items()))
    return {"cell": cell.label, "insns_per_image": {n: [first[n].insns_per_image, again[n].insns_per_image]
                                                    for n in first},
            "differences": differences, "largest_difference": max(differences.values()), "limit": REPEAT_TOLERANCE}


# Output ---------------------------------------------------------------------------------------------


def _millions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def network_table(results: Mapping[str, Any]) -> Table:
    table = Table(title=escape(f"guest instructions per image (millions) [{results['target']}], single-threaded, "
                               f"QEMU {results['qemu_user']}"), title_justify="left")
    for column in ("network", "batch", MXNET, ALWAYS, AUTO, "always / MXNet", "auto / MXNet", "FLOP/insn MXNet",
                   "FLOP/insn auto"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for r in results["networks"]:
        insns = r["insns_per_image"]
        never = insns.get(MXNET)
        ratios = [f"{insns[p] / never:.2f}" if p in insns and never else "-" for p in (ALWAYS, AUTO)]
        fpi = r["flop_per_insn"]
        table.add_row(r["network"], str(r["batch"]), *(_millions(insns.get(p)) for p in (MXNET, ALWAYS, AUTO)),
                      *ratios, *(f"{fpi[p]:.2f}" if fpi.get(p) else "-" for p in (MXNET, AUTO)))
    return table


def layer_table(results: Mapping[str, Any]) -> Table:
    table = Table(title="convolution layers: instructions per image (millions) and FLOP/instruction "
                        f"(NEON direct limit {results['neon_flop_per_insn']})", title_justify="left")
    for column in ("network", "batch", "layer", "shape", "MFLOP", MXNET, ALWAYS, "fewest: choice", "M insns",
                   "FLOP/insn"):
        table.add_column(column, justify="right" if column in ("batch", "MFLOP", MXNET, ALWAYS, "M insns",
                                                               "FLOP/insn") else "left")
    for r in results["layers"]:
        insns = r["insns_per_image"]
        best = r["auto_choice"]
        table.add_row(r["network"], str(r["batch"]), escape(r["layer"]), escape(r["shape"]),
                      f"{r['flops_per_image'] / 1e6:,.1f}", _millions(insns.get(MXNET)), _millions(insns.get(ALWAYS)),
                      escape(best), _millions(insns.get(best)), f"{r['flop_per_insn'][best]:.2f}")
    return table


def plot_counts(results: Mapping[str, Any], directory: Path) -> list[Path]:
    """count-<target>-networks.png (instructions per image per policy) and count-<target>-layers.png
    (per-layer FLOP/instruction per choice, the NEON limit as a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    target = results["target"]
    rows = results["networks"]
    if rows:
        batches = sorted({r["batch"] for r in rows})
        figure, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
        for axis, batch in zip(axes[0], batches):
            at = [r for r in rows if r["batch"] == batch]
            width = 0.8 / 3
            for i, policy in enumerate((MXNET, ALWAYS, AUTO)):
                points = [(j, r["insns_per_image"][policy]) for j, r in enumerate(at) if policy in r["insns_per_image"]]
                if points:
                    xs, ys = zip(*points)
                    axis.bar([x + (i - 1) * width for x in xs], ys, width, label=policy)
            axis.set_xticks(range(len(at)), [r["network"] for r in at])
            axis.set_yscale("log")
            axis.set_ylabel("guest instructions per image")
            axis.set_title(f"batch {batch}")
            axis.legend()
        figure.suptitle(f"MXNet 1.9.1 inference, {target} under QEMU, single-threaded: instructions per image")
        written.append(_save(figure, plt, directory / f"count-{target}-networks.png"))
    layers = results["layers"]
    if layers:
        panels = list(dict.fromkeys((r["network"], r["batch"]) for r in layers))
        columns = min(len(panels), 2)
        lines = (len(panels) + columns - 1) // columns
        figure, axes = plt.subplots(lines, columns, figsize=(8 * columns, 4 * lines), squeeze=False)
        for axis, (network, batch) in zip(axes.flat, panels):
            at = [r for r in layers if r["network"] == network and r["batch"] == batch]
            names = list(dict.fromkeys(n for r in at for n in r["flop_per_insn"]))
            for name in names:
                points = [(i, r["flop_per_insn"][name]) for i, r in enumerate(at) if r["flop_per_insn"].get(name)]
                if points:
                    family = name.removeprefix("NNPACK ").removesuffix(" precompute")
                    axis.plot(*zip(*points), marker="o", markersize=3, linestyle="--" if "precompute" in name else "-",
                              color=COLOURS.get(name, COLOURS.get(family)), label=name)
            axis.axhline(results["neon_flop_per_insn"], color="black", linewidth=1,
                         label=f"NEON limit ({results['neon_flop_per_insn']} FLOP/insn, direct)")
            axis.set_title(f"{network}, batch {batch}")
            axis.set_xlabel("convolution layer")
            axis.set_ylabel("direct-convolution FLOP per instruction")
            axis.legend(fontsize=6)
        for axis in list(axes.flat)[len(panels):]:
            axis.set_visible(False)
        figure.suptitle(f"per-layer FLOP per guest instruction, {target} under QEMU")
        written.append(_save(figure, plt, directory / f"count-{target}-layers.png"))
    return written


def _save(figure: Any, plt: Any, path: Path) -> Path:
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)
    return path
