"""ONNX Runtime beside MXNet (issue 14): what a user who gives up on MXNet gets from ONNX instead.

1. Export: each zoo network (random weights drawn with a fixed seed exactly as
   target_scripts/bench_models.bind draws them, so the same weights and input as `invoke bench`
   and its instruction counts) goes through MXNet 1.9.1's own exporter, `mx.onnx.export_model`,
   natively on x86-64 in a venv of the host's Python with PyPI's mxnet 1.9.1 wheel and onnx
   1.14.1 (`export_env`): MXNet 1.9.1's exporter uses `onnx.mapping.NP_TYPE_TO_TENSOR_TYPE`
   (deprecated since onnx 1.13, still in 1.18; only 1.14.1 was tried) and exports at the onnx
   package's own newest opset (19 for 1.14.1; onnxruntime 1.20.1 runs up to 21). The ONNX file does not
   depend on the machine. The exporter's own MXNet run gives the first reference output
   (target_scripts/onnx_export.py says what the export has to work around).
2. ONNX Runtime on the target: PyPI's onnxruntime wheel for the target's Python (`pip download
   --platform ... --only-binary=:all:` on the host, then installed with the target Python's own
   pip, whose tag check decides, into a site directory of its own; x86-64 runs it in the export
   venv). Its outputs on the exporter's input must agree with MXNet's within TOLERANCE: with
   the exporter's (x86-64, oneDNN) and, given the project's wheel, with the target's MXNet on
   the same weights and input (policy never: MXNet's own code; always: NNPACK, reported).
3. Instructions per image (ARM, onnx_count.py: under the host's QEMU 7.2 with its insn plugin):
   single-threaded (intra_op_num_threads = inter_op_num_threads = 1, sequential execution,
   OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = 1; the plugin's per-vCPU lines confirm one thread).
   One process loads the model, builds the session and runs WARMUP passes, then forks
   grandchildren doing K1, K2, K1, K2 passes (after one uncounted fork). The plugin prints every
   process's total at its exit, a forked child's including everything its parent did before the
   fork, so interpreter start-up, imports, session building and warm-up cancel exactly; the
   parent's own instructions between two forks (d) are measured by the repeats and taken out
   (`onnx_count.per_image`), and the two K2-K1 increments must agree within REPEAT_TOLERANCE. This is the
   method of `invoke bench --count` (bench_count.py) for MXNet, so the columns compare.
4. Timing on x86-64 (`timing_records`): onnxruntime in the export venv beside PyPI mxnet, as
   records in bench.py's format (`images_per_second["onnxruntime"]`), for bench.py to merge.

Results: a table and `<home>/out/<target>/onnx/onnx-compare-<target>.json`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from . import log
from .errors import ConfigurationError, VerificationError
from .files import ResultsJson
from .model_zoo import MODELS, write_model
from .onnx_count import COUNT_ENV, count_mxnet, count_onnxruntime
from .runner import run
from .settings import Settings
from .smoke import SCRIPTS, parse_records
from .target_env import PYTHON_RELEASE, PythonEnv, host_venv, python_env
from .targets import Target

ONNX_NETWORKS = ("alexnet", "vgg16", "resnet18", "inception-bn")
ONNXRUNTIME = "onnxruntime==1.20.1"
"""cp39 .. cp313 wheels for x86-64 and aarch64 (manylinux_2_27/2_28: Debian 11's glibc 2.31 is enough),
numpy >= 1.21.6 (Debian 12's 1.24, the venv's 1.23.5). No armv7 wheel on PyPI."""
EXPORT_PACKAGES = ("mxnet==1.9.1", "numpy==1.23.5", "requests>=2.20,<3", "onnx==1.14.1", "protobuf==7.36.2",
                   ONNXRUNTIME)
"""The export venv: bench.PYPI_MXNET (numpy < 1.24 for mxnet's np.bool) + onnx 1.14.1 (what the exporter was
tried with) + the protobuf it was tested with + onnxruntime for the x86-64 runs."""
WHEEL_PLATFORMS = {"arm64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64"),
                   "x86_64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64")}
TOLERANCE = 1e-4
"""Largest max|ORT - MXNet| / max|MXNet| per output (logits and probabilities) against MXNet's own code."""
MXNET_COUNT_POLICIES = ("never", "always")
"""What --mxnet-count may ask for: MXNet's own code, NNPACK on every layer it can run (auto would time the
layers, or need the pinned table `invoke bench --count` makes from its per-layer counts)."""


@dataclass
class OnnxOptions:
    networks: tuple[str, ...] = ("resnet18",)
    batches: tuple[int, ...] = (1,)
    size: int = 224
    count: bool = True
    passes: tuple[int, int] = (0, 1)
    warmup: int = 2
    mxnet_wheel: Path | None = None
    """The project's wheel for the target (MXNet on the same weights there); None: the home's current one, if any."""
    mxnet_on_target: bool = True
    mxnet_count: tuple[str, ...] = MXNET_COUNT_POLICIES
    """NNPACK policies whose MXNet instructions per image are counted beside ONNX Runtime's (same method, same
    weights and input; needs the project's wheel; empty: none)."""
    symbols: dict[str, Path] = field(default_factory=dict)
    """Extra networks by name -> *-symbol.json (tests: a small net); zoo names need none."""

    def __post_init__(self) -> None:
        unknown = [n for n in self.networks if n not in MODELS and n not in self.symbols]
        if unknown:
            raise ConfigurationError(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigurationError(f"batch sizes must be positive integers, not {self.batches}")
        if len(self.passes) != 2 or not 0 <= self.passes[0] < self.passes[1]:
            raise ConfigurationError(f"--passes takes K1,K2 with 0 <= K1 < K2, not {self.passes}")
        wrong = [p for p in self.mxnet_count if p not in MXNET_COUNT_POLICIES]
        if wrong:
            raise ConfigurationError(f"--mxnet-count takes NNPACK policies from {','.join(MXNET_COUNT_POLICIES)} "
                                     f"(or none alone), not {','.join(wrong)}")


def parse_policies(text: str) -> tuple[str, ...]:
    """--mxnet-count: "never,always" -> ("never", "always"); "none" (or "") -> ()."""
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    return () if names == ("none",) else names


def run_script(env: PythonEnv, script: str, args: Sequence[str | Path], extra_env: Mapping[str, str],
               log_path: Path, what: str, timeout: float = 7200) -> list[dict[str, Any]]:
    proc = env.run([SCRIPTS / script, *args], extra_env=extra_env, timeout=timeout)
    with open(log_path, "a") as stream:
        stream.write(f"\n# {what}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VerificationError(f"{what} failed: {last}", log_path=log_path)
    return parse_records(proc.stdout)


# 1. Export ------------------------------------------------------------------------------------

def export_env(settings: Settings, log_path: Path) -> PythonEnv:
    """A venv of the host's Python with PyPI mxnet 1.9.1, onnx and onnxruntime (x86-64), made once."""
    return host_venv(settings, "x86_64-pypi-mxnet-onnx", EXPORT_PACKAGES, log_path,
                     offline_hint="exporting to ONNX needs PyPI once (mxnet, onnx, onnxruntime); run online")


@dataclass(frozen=True)
class Exported:
    directory: Path
    record: dict[str, Any]

    @property
    def model(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def input(self) -> Path:
        return self.directory / "input.npy"

    @property
    def reference(self) -> Path:
        """The exporter's MXNet outputs (PyPI mxnet, x86-64)."""
        return self.directory / "mxnet.npz"


def export_model(settings: Settings, symbol: Path, batch: int, size: int, log_path: Path) -> Exported:
    """symbol's network with fixed-seed weights as ONNX, input and reference outputs; cached by content."""
    scripts = "".join((SCRIPTS / name).read_text() for name in ("onnx_export.py", "onnx_cell.py", "forking.py"))
    key = hashlib.sha256(f"{symbol.read_text()}\n{batch} {size} 0 {EXPORT_PACKAGES}\n{scripts}".encode()).hexdigest()[:16]
    final = settings.home / "onnx" / "models" / f"{symbol.name.removesuffix('-symbol.json')}-b{batch}-{size}-{key}"
    record_file = final / "export.json"
    if record_file.is_file():
        return Exported(final, json.loads(record_file.read_text()))
    env = export_env(settings, log_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    try:
        [record] = run_script(env, "onnx_export.py", ["--symbol", symbol, "--batch", str(batch), "--size", str(size),
                                                      "--out", work], {}, log_path, f"ONNX export of {symbol.name}")
        (work / "export.json").write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        work.replace(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Exported(final, record)


# 2. ONNX Runtime on the target ----------------------------------------------------------------

def onnxruntime_wheel(target: Target, python: str, settings: Settings, log_path: Path) -> Path:
    """PyPI's onnxruntime wheel for target's CPython `python` (e.g. '3.11'), downloaded once."""
    if target.name not in WHEEL_PLATFORMS:
        raise ConfigurationError(f"PyPI has no {ONNXRUNTIME} wheel for {target.name} (only x86-64 and aarch64)")
    version = python.replace(".", "")
    directory = settings.home / "onnx" / "wheels"
    name = ONNXRUNTIME.split("==")[1]
    found = sorted(directory.glob(f"onnxruntime-{name}-cp{version}-cp{version}-*{target.wheel_platform.split('_', 1)[-1]}.whl"))
    if found:
        return found[-1]
    if settings.offline:
        raise ConfigurationError(f"no {ONNXRUNTIME} wheel for {target.name} cp{version} in {directory}; run once online")
    directory.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in WHEEL_PLATFORMS[target.name] for arg in ("--platform", p)]
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *platforms,
         "--python-version", python, "--implementation", "cp", "--abi", f"cp{version}", "-d", directory, ONNXRUNTIME],
        log_path=log_path, what=f"pip download {ONNXRUNTIME} for {target.name} cp{version}",
        error=ConfigurationError)
    found = sorted(directory.glob(f"onnxruntime-{name}-cp{version}-*.whl"))
    if not found:
        raise ConfigurationError(f"pip downloaded no {ONNXRUNTIME} wheel for {target.name} cp{version}", log_path=log_path)
    return found[-1]


def install_onnxruntime(env: PythonEnv, settings: Settings, log_path: Path) -> Path:
    """onnxruntime installed with the target Python's own pip into a site directory of its own (numpy is the
    release's; its other requirements, for tools this does not use, are left out)."""
    wheel = onnxruntime_wheel(env.target, env.release.python, settings, log_path)
    return env.install_wheel_once(wheel, settings.home / "onnx" / env.target.name / env.release.name / "ort-site",
                                  log_path)


def install_mxnet(env: PythonEnv, wheel: Path, settings: Settings, log_path: Path) -> Path:
    return env.install_wheel_once(wheel, settings.home / "onnx" / env.target.name / env.release.name / "mxnet-site",
                                  log_path)


def relative_errors(reference: Mapping[str, Any], ort: Mapping[str, Any], policy: str,
                    roles: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """max|ORT - MXNet| / max|MXNet| per output role (ONNX output names in the exporter's role order)."""
    import numpy as np

    errors = {}
    for role, name in zip(roles, names):
        ref = np.asarray(reference[f"{policy}:{role}"], dtype=np.float64)
        got = np.asarray(ort[name], dtype=np.float64)
        if ref.shape != got.shape:
            raise VerificationError(f"ONNX Runtime's {name} has shape {got.shape}, MXNet's {role} {ref.shape}")
        errors[role] = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))
    return errors


# The whole comparison -------------------------------------------------------------------------

def symbol_file(name: str, options: OnnxOptions, directory: Path) -> Path:
    return options.symbols.get(name) or write_model(name, directory / f"{name}-symbol.json")


def find_mxnet_wheel(target: Target, settings: Settings, options: OnnxOptions) -> Path | None:
    if not options.mxnet_on_target:
        return None
    if options.mxnet_wheel is not None:
        return options.mxnet_wheel
    from .smoke import current_wheel

    try:
        wheel = Path(current_wheel(target, settings).wheel)
    except ConfigurationError:
        return None
    return wheel if wheel.is_file() else None


def run_onnx_compare(target: Target, settings: Settings, options: OnnxOptions) -> dict[str, Any]:
    import numpy as np

    out_dir = settings.output_dir(target.name) / "onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"target": target.name, "onnxruntime": ONNXRUNTIME, "export_packages": list(EXPORT_PACKAGES),
                               "tolerance": TOLERANCE, "cells": [],
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with log.step("onnx", target.name, f"ONNX Runtime beside MXNet: {', '.join(options.networks)} at batch "
                  f"{options.batches}", settings.logs_dir) as step:
        emulated = target.qemu_binary is not None
        if emulated:
            env = python_env(target, settings, PYTHON_RELEASE)
            ort_site = install_onnxruntime(env, settings, step.log_path)
            results["python"] = env.label
        else:
            env, ort_site = export_env(settings, step.log_path), None
            results["python"] = f"host {sys.version.split()[0]} venv (PyPI mxnet, onnxruntime)"
        wheel = find_mxnet_wheel(target, settings, options) if emulated else None
        mx_site = install_mxnet(env, wheel, settings, step.log_path) if wheel else None
        results["mxnet_wheel"] = wheel.name if wheel else None
        symbols = Path(tempfile.mkdtemp(prefix="nntc-onnx-symbols-"))
        saved = ResultsJson(out_dir, f"onnx-compare-{target.name}")
        try:
            for network, batch in ((n, b) for n in options.networks for b in options.batches):
                exported = export_model(settings, symbol_file(network, options, symbols), batch, options.size,
                                        step.log_path)
                cell: dict[str, Any] = {"network": network, "batch": batch, "size": options.size,
                                        "export": exported.record, "rel_err": {}}
                roles, names = exported.record["output_roles"], exported.record["outputs"]
                work = Path(tempfile.mkdtemp(prefix="nntc-onnx-out-"))
                try:
                    common = ["--model", exported.model, "--input", exported.input]
                    extra = {"PYTHONPATH": str(ort_site)} if ort_site else {}
                    [cell["ort"]] = run_script(env, "onnx_cell.py", ["ort", *common, "--save", work / "ort.npz"],
                                               {**extra, **COUNT_ENV}, step.log_path, f"ONNX Runtime on {network}")
                    ort = dict(np.load(work / "ort.npz"))
                    cell["rel_err"]["MXNet x86-64 (PyPI, exporter)"] = relative_errors(
                        np.load(exported.reference), ort, "default", roles, names)
                    if mx_site is not None:
                        run_script(env, "onnx_cell.py", ["mxnet", "--symbol", symbol_file(network, options, symbols),
                                                         "--input", exported.input, "--save", work / "mxnet.npz",
                                                         "--policies", "never,always"],
                                   {"PYTHONPATH": str(mx_site), **COUNT_ENV}, step.log_path, f"MXNet on {network}")
                        reference = np.load(work / "mxnet.npz")
                        for policy, label in (("never", "MXNet never (target)"), ("always", "NNPACK always (target)")):
                            cell["rel_err"][label] = relative_errors(reference, ort, policy, roles, names)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                cell["failures"] = [f"{label} {role}: {err:.1e}" for label, errs in cell["rel_err"].items()
                                    if "NNPACK" not in label for role, err in errs.items() if err > TOLERANCE]
                if cell["failures"]:  # not counted; the other networks still are, and the run fails at the end
                    log.warn(f"ONNX Runtime's outputs on {network} batch {batch} differ from MXNet's beyond "
                             f"{TOLERANCE:g}: " + "; ".join(cell["failures"]))
                elif emulated and options.count:
                    cell["count"] = count_onnxruntime(env, ort_site, exported, settings, options.passes, options.warmup,
                                                      step.log_path)
                    if mx_site is not None and options.mxnet_count:
                        symbol = symbol_file(network, options, symbols)
                        cell["mxnet_count"] = {
                            policy: count_mxnet(env, mx_site, symbol, exported, policy, settings, options.passes,
                                                options.warmup, step.log_path)
                            for policy in options.mxnet_count}
                results["cells"].append(cell)
                saved.save_partial(results)
        finally:
            shutil.rmtree(symbols, ignore_errors=True)
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        json_path = saved.save(results)
        results["json"] = str(json_path)
        step.note = str(json_path)
        failed = [f"{c['network']} batch {c['batch']} ({'; '.join(c['failures'])})" for c in results["cells"]
                  if c["failures"]]
        if failed:
            raise VerificationError(f"ONNX Runtime's outputs differ from MXNet's beyond {TOLERANCE:g} on "
                                    + ", ".join(failed) + f"; those are not counted; the others are in {json_path}",
                                    log_path=step.log_path)
    return results


def table(results: dict[str, Any]) -> Table:
    table = Table(title=escape(f"ONNX Runtime beside MXNet [{results['target']}] ({ONNXRUNTIME}, single-threaded)"),
                  title_justify="left")
    for column in ("network", "batch", "ORT vs MXNet: max rel. difference", "instructions per image: ORT",
                   "MXNet never", "NNPACK always", "ORT / MXNet never"):
        table.add_column(column)
    for cell in results["cells"]:
        diffs = f"{max(max(e.values()) for label, e in cell['rel_err'].items() if 'NNPACK' not in label):.1e}"
        ort = cell.get("count", {}).get("per_image")
        mxnet = {p: c["per_image"] for p, c in cell.get("mxnet_count", {}).items()}
        table.add_row(cell["network"], str(cell["batch"]), diffs,
                      *(f"{n / 1e6:.1f} M" if n else "-" for n in (ort, mxnet.get("never"), mxnet.get("always"))),
                      f"{ort / mxnet['never']:.2f}" if ort and mxnet.get("never") else "-")
    return table


# 4. Timing on x86-64, for bench.py ----------------------------------------------------------

def timing_records(settings: Settings, networks: Sequence[str], batches: Sequence[int], iterations: int,
                   threads: int, log_path: Path) -> list[dict[str, Any]]:
    """onnxruntime's images/sec per network and batch on this x86-64 host (the export venv), in bench.py's
    record format with the column "onnxruntime"; merged into bench's records by bench.merge_column."""
    env = export_env(settings, log_path)
    records = []
    with tempfile.TemporaryDirectory(prefix="nntc-onnx-symbols-") as tmp:
        for network, batch in ((n, b) for n in networks for b in batches):
            exported = export_model(settings, write_model(network, Path(tmp) / f"{network}-symbol.json"), batch, 224,
                                    log_path)
            [record] = run_script(env, "onnx_cell.py", ["ort", "--model", exported.model, "--input", exported.input,
                                                        "--time", "--iterations", str(iterations), "--threads",
                                                        str(threads)],
                                  {"OMP_NUM_THREADS": str(threads)}, log_path, f"onnxruntime timing {network}")
            samples = record["samples"]
            records.append({"kind": "network", "network": network, "batch": batch,
                            "seconds": {"onnxruntime": record["seconds"]},
                            "images_per_second": {"onnxruntime": batch / record["seconds"]},
                            "images_per_second_range": {"onnxruntime": [batch / max(samples), batch / min(samples)]},
                            "samples": {"onnxruntime": samples}})
    return records

