"""Running the cells of `invoke bench --count` under QEMU's insn plugin (insn_count.py).

A cell (target_scripts/count_cell.py: a network under one policy, or a single Convolution layer at
one batch size, bound once with fixed-seed random weights) runs in one process and tries its
variants (a layer's: MXNet's own code, NNPACK always, each pinned NNPACK choice; a network's: one,
network_cells) one by one in forked children; each child warms
up and forks grandchildren doing K1, K2, K1, K2 counted passes (after one uncounted fork). A
fork's total includes everything before it, so start-up, binding and warm-up cancel exactly:
importing mxnet alone is about 6e9 instructions whose count varies by some 1e5 run to run, more
than a small layer's pass, so two separate processes with K1 and K2 passes would not do
(count_layers.fork_counts takes the per-pass work from the four totals).

The host's qemu-user 7.2 runs the cells (counting_env): the target Pythons otherwise run under
Debian 13's static QEMU 10 (emulator.py), which cannot load plugins. QEMU 7.2 aborts when a forked
child of a process that has had threads starts a thread; a cell never has a second thread
(CELL_ENV: one thread everywhere, NaiveEngine runs operators on the calling thread, set before
mxnet is imported), and the runner refuses a cell whose process had more than one vCPU.
Threads would also change the count: spin-waits add instructions that differ run to run.

Each cell's raw totals are kept in `<work>/count-cells.json` (keyed by the wheel, QEMU, the
scripts, the cell, its variants and environment): an interrupted run resumes.

Cells are independent single-threaded processes, so `CountOptions.jobs` of them run at once
(`CellRunner.parallel`, `prefetch`): worker threads each wait on one QEMU process; the counts do
not change (each is one process's own), only the wall time. Prefetched cells wait in a backlog and
go to the workers only as one frees, so a cell the run needs now (a network's, after its layers)
takes the next free worker instead of queueing behind every prefetched cell (hours, on armv7).
On Ctrl-C or SIGTERM, which only the main thread sees, every running cell's process group is
stopped (procgroup.stop_running).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import log
from .count_layers import (ALWAYS, AUTO, MIN_INCREMENT, MXNET, REPEAT_TOLERANCE, ConvShape,
                           cell_passes, fits_budget, fork_counts, layer_choices, network_flops_per_image,
                           tuning_table)
from .errors import ConfigurationError, VerificationError
from .files import atomic_write_text
from .insn_count import run_counted
from .procgroup import GRACE_SECONDS, stop_running
from .settings import Settings
from .smoke import SCRIPTS
from .target_env import PythonEnv

COUNT_NETWORKS = ("alexnet", "vgg16", "resnet18", "inception-bn", "mobilenet")
COUNT_BATCHES = (1, 8)
WARMUP = 2
"""Passes before the counted ones: the first call of a graph node never builds a kernel transform,
the second does (patch 0007), so from the third on every pass does the same work."""
NEVER_NETWORK_WARMUP = 1
"""Warm-up passes of a network's MXNet cell (policy never): MXNet's own code builds no kernel transform,
and its first pass makes every allocation a pass makes (temp space, OpenBLAS's buffers), so one does.
A quarter less work in the run's longest cells (VGG-16 at batch 8 on armv7: some 575 G guest instructions
instead of 765 G, 2.4 h instead of 3.1 h). Measured on arm64 at batch 8 against two warm-up passes:
MobileNet, ResNet-18 and AlexNet's MXNet counts per image agree within 1e-5 (README, "How the counts
are made")."""
FORKS = 6
"""Totals per variant in the plugin's log: an uncounted fork, the K1, K2, K1, K2 forks, the variant's child."""
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
    """Warm-up passes, if not CountOptions.warmup (a network's MXNet cell: NEVER_NETWORK_WARMUP)."""


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
        for seed in options.seeds:
            for key, entry in read_seed(seed).items():
                self.cache.setdefault(key, entry)
        self._run = run
        self.script_digest = hashlib.sha256(b"".join(
            (SCRIPTS / name).read_bytes() for name in ("count_cell.py", "bench_models.py", "nnpack_layers.py", "forking.py"))
        ).hexdigest()[:16]
        self._lock = threading.RLock()  # the cache, its file, _pending, _backlog (a done callback may run in _give)
        self._pending: dict[str, Future[None]] = {}  # given to the pool: running, or next for a free worker
        self._backlog: deque[tuple[Cell, str]] = deque()  # prefetched, not yet given to the pool
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()

    def environment(self) -> dict[str, str]:
        return self.env.environment({"PYTHONPATH": str(self.site), **self.options.environment()})

    def key(self, cell: Cell) -> str:
        # the work directory (the models' path) is the machine's, not the cell's: a cache moves between homes
        args = [str(a).replace(str(self.work), "<work>") for a in cell.args]
        text = json.dumps([self.identity, self.script_digest, args, [v.to_json() for v in cell.variants],
                           self.options.environment(), self.passes(cell), self.warmup(cell), self.options.inline], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def warmup(self, cell: Cell) -> int:
        return self.options.warmup if cell.warmup is None else cell.warmup

    def passes(self, cell: Cell) -> tuple[int, int]:
        return cell_passes(cell.flops_per_pass, self.options.min_increment)

    @contextmanager
    def parallel(self) -> Iterator[None]:
        """Within the block, cells given to prefetch (and any run_cell) run options.jobs at a time in
        worker threads. Leaving it by an exception (Ctrl-C, SIGTERM, a failed cell) stops every running
        cell's process group and waits for the workers."""
        if self.options.jobs <= 1:
            yield
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.options.jobs, thread_name_prefix="count-cell")
        try:
            yield
        except BaseException:
            self._stopping.set()
            with self._lock:
                self._backlog.clear()
                futures = list(self._pending.values())
            for future in futures:
                future.cancel()
            while not all(future.done() for future in futures):  # a worker may start one more before it sees _stopping
                stop_running(GRACE_SECONDS)
                wait(futures, timeout=0.5)
            raise
        finally:
            with self._lock:
                pool, self._pool = self._pool, None  # a cell finishing now gives the pool no more
                self._backlog.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            with self._lock:
                self._pending.clear()

    def prefetch(self, cells: Iterable[Cell]) -> None:
        """Queue the cells not yet counted (nor queued) for the workers, behind any cell the run asks
        for (run_cell); no-op outside parallel()."""
        with self._lock:
            if self._pool is None:
                return
            queued = {key for _, key in self._backlog}
            for cell in cells:
                key = self.key(cell)
                if key not in self.cache and key not in self._pending and key not in queued:
                    self._backlog.append((cell, key))
                    queued.add(key)
            self._top_up()

    def start(self, cells: Iterable[Cell]) -> None:
        """Give the cells not yet counted to the workers now, in this order and ahead of the prefetched
        ones, without waiting: the cells the run asks for next (a network's variants); no-op outside
        parallel()."""
        for cell in cells:
            self._submit(cell, self.key(cell))

    def _top_up(self) -> None:
        """Give the pool backlog cells while fewer than `jobs` are running or waiting (under _lock)."""
        while self._pool is not None and not self._stopping.is_set() and self._backlog and \
                sum(not f.done() for f in self._pending.values()) < self.options.jobs:
            cell, key = self._backlog.popleft()
            if key not in self.cache and key not in self._pending:
                self._give(cell, key)

    def _give(self, cell: Cell, key: str) -> Future[None]:
        assert self._pool is not None
        future = self._pool.submit(self._worker, cell, key)
        self._pending[key] = future
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[None]) -> None:
        with self._lock:
            self._top_up()

    def _submit(self, cell: Cell, key: str) -> Future[None] | None:
        """The cell the run needs now: its future, given to the pool ahead of the backlog."""
        with self._lock:
            if self._pool is None or key in self.cache:
                return None
            if key in self._pending:
                return self._pending[key]
            self._backlog = deque(item for item in self._backlog if item[1] != key)
            return self._give(cell, key)

    def _worker(self, cell: Cell, key: str) -> None:
        if self._stopping.is_set():
            raise InterruptedError("the count is stopping")
        self._count(cell, key, keep=True)

    def run_cell(self, cell: Cell, *, use_cache: bool = True) -> dict[str, Any]:
        """The cell's raw result: every process's total, the RESULT records, the run time."""
        key = self.key(cell)
        with self._lock:  # one hold: a prefetched cell finishing in between is not counted again here
            if use_cache and key in self.cache:
                return {**self.cache[key], "cached": True}
            future = self._submit(cell, key) if use_cache else None
        if future is None:
            return self._count(cell, key, keep=use_cache)
        future.result()  # the worker's error, if it failed
        with self._lock:
            return {**self.cache[key], "cached": False}

    def _count(self, cell: Cell, key: str, *, keep: bool) -> dict[str, Any]:
        """Count the cell in one process now; keep: into the cache (and its file)."""
        variants = self.work / f"count-variants-{key[:12]}.json"  # alike run to run for the same cell
        variants.write_text(json.dumps([v.to_json() for v in cell.variants], indent=1) + "\n")
        argv = [*self.env.argv, SCRIPTS / "count_cell.py", *cell.args, "--variants", variants,
                "--warmup", str(self.warmup(cell)), "--passes", ",".join(map(str, self.passes(cell)))]
        started = time.monotonic()
        log.info(f"{cell.label}: counting {', '.join(v.name for v in cell.variants)} under QEMU "
                 f"(K2 = {self.passes(cell)[1]}, started {time.strftime('%H:%M:%S')})")
        try:
            counted = self._run(argv, self.settings, env=self.environment(), cwd=self.work,
                                timeout=self.options.timeout, inline=self.options.inline, log_path=self.log_path)
        finally:
            variants.unlink(missing_ok=True)
        records = [json.loads(line[len("RESULT "):]) for line in counted.stdout.splitlines()
                   if line.startswith("RESULT ")]
        entry = {"totals": list(counted.totals), "threads": len(counted.per_vcpu) or 1, "passes": self.passes(cell),
                 "seconds": round(time.monotonic() - started, 1), "records": records}
        if keep:
            with self._lock:
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


def read_seed(path: Path) -> dict[str, Any]:
    """A count-cells.json to take cells from (CountOptions.seeds); ConfigurationError naming what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"--cells {path}: cannot read it as JSON ({exc}); give a count-cells.json that "
                                 "invoke bench --count wrote") from None
    entry_keys = {"totals", "records", "passes", "seconds"}
    bad = [key for key, entry in data.items() if len(key) != 64 or not isinstance(entry, dict)
           or not entry_keys <= set(entry)] if isinstance(data, dict) else ["(not an object)"]
    if bad:
        raise ConfigurationError(f"--cells {path}: not a count-cells.json of invoke bench --count ({len(bad)} entries "
                                 f"unlike a counted cell, e.g. {bad[0][:20]!r})")
    return data


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
    return Cell(f"layer {shape.describe()} batch {shape.batch}",
                ["--layer", json.dumps(shape.cell_spec(), separators=(",", ":"))], shape.batch,
                [choice_variant(shape, name) for name in names], shape.flops_per_image * shape.batch)


def network_cells(models: Path, network: str, batch: int, auto: dict[str, Any] | None = None) -> list[Cell]:
    """never and always, and auto with the `auto` table when given: one cell per variant. A network's
    variants are the run's longest cells (VGG-16 at batch 8 on armv7: some 765 G guest instructions
    for MXNet's, 90 G for always's, from batch 1's per-image counts), and a cell runs in one process: apart, two workers count two of them at once, and never
    and always (which need no layer counts) can start before the layers are done. The counts are the
    same either way: each variant's come from its own forks (start-up and binding cancel)."""
    variants = [Variant(MXNET, "never"), Variant(ALWAYS, "always")]
    if auto is not None:
        variants.append(Variant(AUTO, "auto", auto))
    args = ["--models", str(models), "--network", network, "--batch", str(batch)]
    return [Cell(f"{network} batch {batch}, {variant.name}", args, batch, [variant],
                 network_flops_per_image(network) * batch,
                 NEVER_NETWORK_WARMUP if variant.policy == "never" else None) for variant in variants]
