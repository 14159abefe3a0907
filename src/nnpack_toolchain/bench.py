"""`invoke bench`: what NNPACK buys per target, measured on the project's own wheel.

The wheel's libmxnet.so runs every network twice per timed round, with MXNET_NNPACK_POLICY=never
(MXNet's own code: im2col + OpenBLAS) and with NNPACK allowed, alternating pass by pass in one
process (target_scripts/bench_models.py), so nothing but the switch differs. On x86-64 the PyPI
mxnet 1.9.1 wheel (oneDNN) is a third column, in its own venv. Then per-layer convolution times
and a thread sweep (MXNET_CPU_NNPACK_NTHREADS = OMP_NUM_THREADS = 1, 2, 4, ...).

Under QEMU (ARM targets) timings say nothing about a real board: only correctness runs there
(NNPACK vs MXNet's own output for each network), and no speedup is printed.

Results: `<home>/out/<target>/bench/bench.json` and `bench.png` (matplotlib); bench_report.py renders
the tables (and a board's JSON, `--import FILE`).
`--count` (bench_count.py with count_layers.py, count_cells.py and count_runner.py): instructions per image under
QEMU instead, deterministic, in `count-<target>.json` and two PNG plots.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bench_memory, log
from .errors import ConfigurationError, VerificationError
from .files import atomic_write_text, save_figure
from .locks import exclusive
from .model_zoo import MODELS, write_model
from .settings import Settings
from .smoke import SCRIPTS, current_wheel, parse_records
from .target_env import PythonEnv, host_venv, python_env
from .targets import Target

DEFAULT_NETWORKS = ("alexnet", "vgg16", "resnet18", "inception-bn")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
PYPI_MXNET = ("mxnet==1.9.1", "numpy==1.23.5", "requests>=2.20,<3")
"""The third column on x86-64: upstream's own 1.9.1 wheel (oneDNN), from PyPI; it needs numpy < 1.24 (np.bool)."""
POLICY_LABELS = {"never": "MXNet (OpenBLAS)", "always": "NNPACK always", "auto": "NNPACK auto",
                 "pypi": "PyPI mxnet (oneDNN)", "onnxruntime": "ONNX Runtime (PyPI)"}
POLICIES = ("never", "always", "auto")
"""MXNET_NNPACK_POLICY values compared in one process: off, on for every eligible layer, per-layer fastest."""
BENCH_FORMAT = "nnpack-bench"
BENCH_FORMAT_VERSION = 1
"""bench.json's format, also written by the wheel's on-board benchmark (target_scripts/nnpack_bench.py:
`python3 -m mxnet.nnpack_bench --json FILE`), which `invoke bench --import FILE` reads (README)."""


@dataclass
class BenchOptions:
    networks: tuple[str, ...] = DEFAULT_NETWORKS
    batches: tuple[int, ...] = DEFAULT_BATCHES
    iterations: int = 3
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_sweep: tuple[int, ...] = (1, 2, 4)
    pypi: bool = True
    layers: bool = True
    memory: bool = False
    """Peak RSS and tuning cost per network, batch and policy, one process per cell (bench_memory)."""
    timing: bool = True
    count: bool = False
    """Guest instructions per image under QEMU, per network, batch, policy and convolution layer (bench_count)."""
    onnxruntime: bool = False
    """x86-64: an ONNX Runtime column (the networks exported with MXNet's exporter; onnx_compare.py)."""
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """--count: cells counted at once (CountOptions.jobs)."""
    cells: tuple[Path, ...] = ()
    """--count: count-cells.json files to take counted cells from (CountOptions.seeds)."""
    inline: bool = False
    """--count: QEMU's inline instruction counter (CountOptions.inline)."""
    budget_mb: int | None = None
    """--count: the auto policy's memory budget in every cell (CountOptions.memory_budget_mb; None: its default)."""

    def __post_init__(self) -> None:
        unknown = [n for n in self.networks if n not in MODELS]
        if unknown:
            raise ConfigurationError(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigurationError(f"batch sizes must be positive integers, not {self.batches}")
        if self.iterations < 1:
            raise ConfigurationError("--iterations must be at least 1")


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigurationError(f"{what}: expected comma-separated integers, got {text!r}") from None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_script(env: PythonEnv, site: Path, args: list[str], extra_env: dict[str, str], log_path: Path,
               what: str, choices: list[dict[str, Any]] | None = None,
               script: str = "bench_models.py") -> list[dict[str, Any]]:
    """Run a target script (bench_models.py, memory_cell.py) on the target; `choices` collects the
    auto policy's measured choices."""
    if choices is not None:
        extra_env = {**extra_env, "MXNET_NNPACK_VERBOSE": "1"}
    proc = env.run([SCRIPTS / script, *args], extra_env={"PYTHONPATH": str(site), **extra_env}, timeout=7200)
    with open(log_path, "a") as stream:
        stream.write(f"\n# {what}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VerificationError(f"benchmark run '{what}' failed: {last}", log_path=log_path)
    if choices is not None:
        choices += parse_auto_choices(proc.stderr)
    return parse_records(proc.stdout)


# "NNPACK wt8x8 precompute" (patch 0007 as revised for issue 12; "(precomputed kernel)" before)
CHOICE_NAME = r"MXNet|NNPACK [\w-]+(?: \(precomputed kernel\)| precompute)?"
AUTO_CHOICE = re.compile(rf"NNPACK auto: (?P<key>.+) -> (?P<chosen>{CHOICE_NAME}) \((?P<times>.+)\)\s*$")
CHOICE_TIME = re.compile(rf"(?P<name>{CHOICE_NAME}) (?P<ms>[0-9.e+-]+|inf) ms")


def parse_auto_choices(log_text: str) -> list[dict[str, Any]]:
    """The auto policy's verbose lines: per layer shape, every choice's time and the winner."""
    found = []
    for line in log_text.splitlines():
        match = AUTO_CHOICE.search(line)
        if match:
            times = {m["name"]: float(m["ms"]) for m in CHOICE_TIME.finditer(match["times"])}
            found.append({"layer_shape": match["key"], "chosen": match["chosen"], "ms": times})
    return found


def pypi_env(settings: Settings, log_path: Path) -> PythonEnv:
    """A venv with upstream's mxnet 1.9.1 wheel from PyPI (x86-64 only), made once."""
    return host_venv(settings, "x86_64-pypi-mxnet", PYPI_MXNET, log_path,
                     offline_hint="the PyPI mxnet column needs PyPI once; run online or pass --no-pypi")


def bench_home(settings: Settings, target: Target) -> Path:
    """The target's bench in this home: the installed wheel (site/) and the lock held while a bench runs."""
    return settings.home / "bench" / target.name


def run_bench(target: Target, settings: Settings, options: BenchOptions) -> dict[str, Any]:
    wheel = Path(current_wheel(target, settings).wheel)
    bench_dir = settings.output_dir(target.name) / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    emulated = target.qemu_binary is not None
    results: dict[str, Any] = {
        "format": BENCH_FORMAT, "version": BENCH_FORMAT_VERSION, "source": "toolchain",
        "target": target.name, "wheel": wheel.name, "host_cpu": cpu_name(), "cores": os.cpu_count(),
        "emulated": emulated, "threads": options.threads, "iterations": options.iterations,
        "networks": [], "layers": [], "thread_sweep": [], "checks": [], "memory": [],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if options.count and not emulated:
        raise ConfigurationError(f"--count counts guest instructions under QEMU: give an ARM target (--arch arm64 or "
                                 f"armv7), not {target.name}")
    what = ("instruction counts under QEMU" if options.count else "correctness only: QEMU" if emulated else "")
    # one bench per target and home: a second would reinstall the wheel under the first one's running
    # cells and overwrite its count cache and results files
    with exclusive(bench_home(settings, target) / ".lock", f"bench [{target.name}]: another invoke bench for {target.name} "
                   "is running in this home; waiting for it to end (Ctrl-C to stop waiting, or give --home)"), \
            log.step("bench", target.name, f"{', '.join(options.networks)} at batch {options.batches}"
                     + (f" ({what})" if what else ""), settings.logs_dir) as step:
        env = python_env(target, settings)
        site = bench_home(settings, target) / "site"
        env.install_wheel(wheel, site, step.log_path)
        if options.count:
            from . import bench_count

            built = current_wheel(target, settings)
            results["count"] = bench_count.run_count(
                target, settings, env, site, wheel, built.wheel_sha256,
                bench_count.CountOptions(networks=options.networks, batches=options.batches, layers=options.layers,
                                     jobs=options.jobs, seeds=options.cells, inline=options.inline,
                                     **({"memory_budget_mb": options.budget_mb} if options.budget_mb is not None else {})),
                bench_dir, step.log_path)
            step.note = results["count"]["json"]
            if not (options.timing or options.memory):  # bench.json keeps the last speed/memory run
                return results
        models = Path(tempfile.mkdtemp(prefix="nntc-models-"))
        try:
            for name in options.networks:
                write_model(name, models / f"{name}-symbol.json")
            common = ["--models", str(models), "--networks", ",".join(options.networks),
                      "--iterations", str(options.iterations)]
            threads = {"MXNET_CPU_NNPACK_NTHREADS": str(options.threads), "OMP_NUM_THREADS": str(options.threads)}
            if emulated and options.timing:
                # the auto policy's trial passes would multiply the emulated time: never vs always
                results["checks"] = run_script(env, site, [*common, "--batches", "1", "--check",
                                                           "--policies", "never,always"], threads,
                                               step.log_path, "correctness")
                failures = check_failures(results["checks"])
                if failures:
                    raise VerificationError("NNPACK and MXNet's own outputs differ under QEMU: " + "; ".join(failures),
                                            log_path=step.log_path)
            if options.memory:  # one process per cell: a peak RSS is the whole process's high-water mark
                for network, batch, policy in itertools.product(options.networks, options.batches, POLICIES):
                    results["memory"] += run_script(
                        env, site, ["--models", str(models), "--network", network, "--batch", str(batch),
                                    "--policy", policy, "--iterations", str(options.iterations)],
                        threads, step.log_path, f"memory {network} batch {batch} {policy}", script="memory_cell.py")
                results["memory_violations"] = bench_memory.budget_violations(results["memory"])
            if not emulated and options.timing:
                batches = ",".join(map(str, options.batches))
                results["networks"] = run_script(env, site, [*common, "--batches", batches], threads,
                                                 step.log_path, "networks: MXNet vs NNPACK")
                if options.pypi and target.name == "x86_64":
                    upstream = pypi_env(settings, step.log_path)
                    pypi_site = settings.home / "bench" / "pypi-empty-site"
                    pypi_site.mkdir(parents=True, exist_ok=True)
                    for record in run_script(upstream, pypi_site, [*common, "--batches", batches, "--policies", "pypi"],
                                             {"OMP_NUM_THREADS": str(options.threads)}, step.log_path, "PyPI mxnet"):
                        merge_column(results["networks"], record, "pypi")
                if options.onnxruntime and target.name == "x86_64":
                    add_onnxruntime_column(results, settings, options, step.log_path)
                if options.layers:
                    results["auto_choices"] = []
                    results["layers"] = run_script(env, site, [*common, "--batches", "1", "--layers"], threads,
                                                   step.log_path, "per-layer convolution", results["auto_choices"])
                for count in options.thread_sweep:
                    env_threads = {"MXNET_CPU_NNPACK_NTHREADS": str(count), "OMP_NUM_THREADS": str(count)}
                    results["thread_sweep"] += run_script(env, site, [*common, "--batches", "1"], env_threads,
                                                          step.log_path, f"threads {count}")
        finally:
            shutil.rmtree(models, ignore_errors=True)
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        json_path = bench_dir / "bench.json"
        atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
        results["json"] = str(json_path)
        if results["networks"]:
            results["plot"] = str(plot(results, bench_dir / "bench.png"))
        step.note = str(json_path)
    return results


CHECK_TOLERANCE = 1e-3
"""Largest relative difference allowed between NNPACK's and MXNet's own network outputs."""


def check_failures(checks: list[dict[str, Any]]) -> list[str]:
    """Networks whose NNPACK output is not MXNet's own within CHECK_TOLERANCE, or that ran nothing on NNPACK."""
    failures = [f"{c['network']} batch {c['batch']}: max rel. difference {max(c['rel_err'].values()):.1e}"
                for c in checks if max(c["rel_err"].values()) > CHECK_TOLERANCE]
    # MXNet's NNPACK call counters add up over the process: the last check holds the run's total.
    if checks and not (checks[-1].get("nnpack_calls") or {}).get("convolution"):
        failures.append("no convolution ran on NNPACK")
    return failures


TIMING_FIELDS = ("seconds", "images_per_second", "images_per_second_range", "samples")
"""What a network record holds per column (bench_models.timing_fields)."""


def merge_column(records: list[dict[str, Any]], other: dict[str, Any], column: str) -> None:
    """Add another run's column (PyPI mxnet, ONNX Runtime) to the record of the same network and batch."""
    for record in records:
        if record["network"] == other["network"] and record["batch"] == other["batch"]:
            for name in TIMING_FIELDS:
                if column in other.get(name, {}):
                    record.setdefault(name, {})[column] = other[name][column]


def add_onnxruntime_column(results: dict[str, Any], settings: Settings, options: BenchOptions,
                           log_path: Path) -> None:
    """ONNX Runtime's images/sec beside the others (x86-64, the host's Python, intra-op threads = --threads)."""
    from . import onnx_compare

    for record in onnx_compare.timing_records(settings, options.networks, options.batches, options.iterations,
                                              options.threads, log_path):
        merge_column(results["networks"], record, "onnxruntime")


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = list(dict.fromkeys(r["network"] for r in results["networks"]))
    figure, axes = plt.subplots(1, len(networks), figsize=(5 * len(networks), 4), squeeze=False)
    for axis, network in zip(axes[0], networks):
        rows = [r for r in results["networks"] if r["network"] == network]
        for policy in (*POLICIES, "pypi", "onnxruntime"):
            points = [(r["batch"], r["images_per_second"][policy], (r.get("images_per_second_range") or {}).get(policy))
                      for r in rows if policy in r["images_per_second"]]
            if points:
                xs, ys, spreads = zip(*points)
                # error bars: the lowest and highest pass (none where a row kept only the median)
                bars = [[y - s[0] if s else 0.0 for y, s in zip(ys, spreads)],
                        [s[1] - y if s else 0.0 for y, s in zip(ys, spreads)]]
                axis.errorbar(xs, ys, yerr=bars, marker="o", capsize=3, label=POLICY_LABELS[policy])
        axis.set_xscale("log", base=2)
        axis.set_title(network)
        axis.set_xlabel("batch size")
        axis.set_ylabel("images/sec")
        axis.legend()
    figure.suptitle(f"MXNet 1.9.1 inference, {results['target']}, {results['host_cpu']}, {results['threads']} threads")
    return save_figure(figure, plt, path)
