"""Running the cells of `invoke bench --count` under QEMU's insn plugin (insn_count.py).

A cell (count_cells.py; target_scripts/count_cell.py: a network under one policy, or a single
Convolution layer at one batch size, bound once with fixed-seed random weights) runs in one process and tries its
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
go to the workers only as one frees, so a cell the run needs now (a network's auto, after its
layers) takes the next free worker instead of queueing behind every prefetched cell (hours, on armv7).
On Ctrl-C or SIGTERM, which only the main thread sees, every running cell's process group is
stopped (procgroup.stop_running).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import log
from .count_cells import Cell, CountOptions
from .count_layers import REPEAT_TOLERANCE, cell_passes, fork_counts
from .errors import ConfigurationError, VerificationError
from .files import atomic_write_text
from .insn_count import run_counted
from .procgroup import GRACE_SECONDS, stop_running
from .settings import Settings
from .smoke import SCRIPTS, parse_records
from .target_env import PythonEnv

FORKS = 6
"""Totals per variant in the plugin's log: an uncounted fork, the K1, K2, K1, K2 forks, the variant's child."""

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
                 f"(K2 = {self.passes(cell)[1]}, {self.warmup(cell)} warm-up, started {time.strftime('%H:%M:%S')})")
        try:
            counted = self._run(argv, self.settings, env=self.environment(), cwd=self.work,
                                timeout=self.options.timeout, inline=self.options.inline, log_path=self.log_path)
        finally:
            variants.unlink(missing_ok=True)
        records = parse_records(counted.stdout)
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
