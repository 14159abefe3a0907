"""What `invoke bench --count` counts: its options and its cells, each one count_cell.py process
(target_scripts/count_cell.py) that count_runner.py runs under QEMU's insn plugin.

A cell is a network under one policy (network_cells: MXNet's own code, NNPACK always, or auto
pinned to the layers' choices; one process each) or a single Convolution layer at one batch size
under each way of running it (layer_cell: MXNet, NNPACK always, each NNPACK choice that fits the
memory budget), with the environment every cell runs in (CELL_ENV and the budget) and its
warm-up passes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .count_layers import (ALWAYS, AUTO, MIN_INCREMENT, MXNET, ConvShape, fits_budget, layer_choices,
                           network_flops_per_image, tuning_table)
from .errors import ConfigurationError

COUNT_NETWORKS = ("alexnet", "vgg16", "resnet18", "inception-bn", "mobilenet")
COUNT_BATCHES = (1, 8)
WARMUP = 2
"""Passes before the counted ones where a pass may build a kernel transform: the first call of a graph
node never builds one, the second does (patch 0007), so from the third on every pass does the same work."""
SETTLED_WARMUP = 1
"""Warm-up passes of a cell none of whose passes builds a kernel transform (cell_warmup): its first pass
makes every allocation a pass makes (temp space, NNPACK's workspace, OpenBLAS's buffers), so one does.
A quarter less work in the batch-8 cells, the run's longest (VGG-16 on armv7: its MXNet cell 585 G guest
instructions, counted in session 21, instead of some 775 G). Measured on arm64 at batch 8 against two warm-up passes (README,
"How the counts are made"; benchmarks/results/count-warmup-check-arm64.log): MXNet's, NNPACK always's and
auto's network cells within 2.7e-6, a layer cell's variants within 1e-5."""
CELL_ENV = {
    "MXNET_CPU_NNPACK_NTHREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "MXNET_CPU_WORKER_NTHREADS": "1", "MXNET_ENGINE_TYPE": "NaiveEngine", "PYTHONHASHSEED": "0",
    "MXNET_ENFORCE_DETERMINISM": "1",
}
"""The environment of every cell: one thread everywhere, operators on the calling thread; the auto
policy times nothing (a shape its pinned table does not list runs NNPACK's own algorithm). The memory
budget is set too (CountOptions.memory_budget_mb)."""
MEMORY_BUDGET_MB = 512
"""Patch 0007's default budget (1/8 of physical memory, at most 512 MiB in a 32-bit process) on a 4 GB
board. Pinned in every cell because under qemu-user the guest sees the host's memory: unpinned, which
kernel transforms are held, and so the counts and auto's choices, would depend on the counting machine."""


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
    """QEMU plugin's inline counter (--inline): 1.7-2.0x faster on a real cell, same counts within 3.2e-6
    there, but exact only while one guest thread runs, and it prints no per-vCPU totals, so the
    runner's one-thread check cannot be made (a cell's single thread rests on CELL_ENV alone)."""
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Cells counted at once, each one single-threaded QEMU process (the counts do not depend on it)."""
    memory_budget_mb: int = MEMORY_BUDGET_MB
    """MXNET_NNPACK_MEMORY_BUDGET_MB of every cell: the device whose auto policy the counts are for."""
    seeds: tuple[Path, ...] = ()
    """Other count-cells.json files (another machine's, a kept one) to take counted cells from: a cell
    is taken only under the same key (wheel, QEMU, scripts, cell), so a seed never changes a count."""

    @property
    def budget_bytes(self) -> int:
        return self.memory_budget_mb * 2**20

    def environment(self) -> dict[str, str]:
        """What every cell runs with: CELL_ENV and the memory budget."""
        return {**CELL_ENV, "MXNET_NNPACK_MEMORY_BUDGET_MB": str(self.memory_budget_mb)}

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigurationError(f"--jobs must be at least 1 (cells counted at once), not {self.jobs}")
        if self.min_increment < 0:
            raise ConfigurationError(f"the minimum increment must be positive, not {self.min_increment}")
        if self.memory_budget_mb < 0:
            raise ConfigurationError(f"--budget-mb must be a number of MiB (0 or more), not {self.memory_budget_mb}")
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
    warmup: int | None = None
    """Warm-up passes, if not CountOptions.warmup (cell_warmup)."""


def cell_warmup(batch: int, variants: Sequence[Variant]) -> int | None:
    """SETTLED_WARMUP where no pass builds a kernel transform: at batch > 1 (patch 0007 precomputes one
    for batch-1 convolutions only) and under MXNet's own code alone; else None (CountOptions.warmup)."""
    return SETTLED_WARMUP if batch > 1 or all(variant.policy == "never" for variant in variants) else None


def choice_variant(shape: ConvShape, choice: str) -> Variant:
    """MXNet (policy never), NNPACK always, or a pinned NNPACK choice (policy auto)."""
    if choice == MXNET:
        return Variant(MXNET, "never")
    if choice == ALWAYS:
        return Variant(ALWAYS, "always")
    return Variant(choice, "auto", tuning_table([(shape, choice)]))


def layer_variants(shape: ConvShape, budget_bytes: int = MEMORY_BUDGET_MB * 2**20) -> list[str]:
    """What a layer's cell counts: MXNet, and where NNPACK can run it NNPACK always and each choice
    but a precompute whose kernel transform alone is over the memory budget (it would run as the
    choice without one: over_budget; a choice over it only beside a workspace, or by a batch's
    workspace, is counted and found out from its record: count_layers.record_over_budget)."""
    names = layer_choices(shape)
    counted = [name for name in names[1:] if fits_budget(shape, name, budget_bytes)]
    return [MXNET, ALWAYS, *counted] if len(names) > 1 else names


def layer_cell(shape: ConvShape, choices: Sequence[str] | None = None,
               budget_bytes: int = MEMORY_BUDGET_MB * 2**20) -> Cell:
    names = list(choices) if choices is not None else layer_variants(shape, budget_bytes)
    variants = [choice_variant(shape, name) for name in names]
    return Cell(f"layer {shape.describe()} batch {shape.batch}",
                ["--layer", json.dumps(shape.cell_spec(), separators=(",", ":"))], shape.batch,
                variants, shape.flops_per_image * shape.batch, cell_warmup(shape.batch, variants))


def network_cells(models: Path, network: str, batch: int, auto: dict[str, Any] | None = None) -> list[Cell]:
    """never and always, and auto with the `auto` table when given: one cell per variant. A network's
    variants are the run's longest cells (VGG-16 at batch 8 on armv7, session 21: MXNet's 585 G guest
    instructions in 57 minutes, always's 190 G in 27), and a cell runs in one process: apart, two workers
    count two of them at once, and never and always (which need no layer counts) can start before the
    layers are done. The counts are the
    same either way: each variant's come from its own forks (start-up and binding cancel)."""
    variants = [Variant(MXNET, "never"), Variant(ALWAYS, "always")]
    if auto is not None:
        variants.append(Variant(AUTO, "auto", auto))
    args = ["--models", str(models), "--network", network, "--batch", str(batch)]
    return [Cell(f"{network} batch {batch}, {variant.name}", args, batch, [variant],
                 network_flops_per_image(network) * batch,
                 cell_warmup(batch, [variant])) for variant in variants]
