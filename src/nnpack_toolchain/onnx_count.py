"""Instructions per image of ONNX Runtime and of the project's MXNet on one exported model, under the
host's QEMU 7.2 with its insn plugin (step 3 of onnx_compare.py; insn_count.py runs the plugin).

Single-threaded (intra_op_num_threads = inter_op_num_threads = 1, sequential execution,
OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = 1; the plugin's per-vCPU lines confirm one thread). One
process (target_scripts/onnx_cell.py) loads the model, builds the session and runs its warm-up
passes, then forks grandchildren doing K1, K2, K1, K2 passes (after one uncounted fork): the method
of `invoke bench --count`, and its arithmetic (count_layers.fork_counts), so the columns compare.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import insn_count
from .count_layers import REPEAT_TOLERANCE, fork_counts
from .count_runner import counting_env
from .errors import VerificationError
from .settings import Settings
from .smoke import SCRIPTS, parse_records
from .target_env import PythonEnv

if TYPE_CHECKING:
    from .onnx_compare import Exported

COUNT_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
MXNET_COUNT_ENV = {**COUNT_ENV, "MXNET_ENGINE_TYPE": "NaiveEngine", "MXNET_CPU_NNPACK_NTHREADS": "1",
                   "MXNET_ENFORCE_DETERMINISM": "1"}
"""MXNet counted as `invoke bench --count` counts it: one thread, operators on the calling thread."""
COUNT_TIMEOUT = 7200
"""Seconds one counted process may take (VGG-16 at batch 1 takes some 30 minutes here)."""


def per_image(totals: Sequence[int], passes: tuple[int, int], batch: int) -> dict[str, Any]:
    """Instructions per image from the plugin's totals [uncounted fork, K1, K2, K1, K2, parent]
    (count_layers.fork_counts on the four counted forks); the two K2-K1 increments must agree within
    REPEAT_TOLERANCE."""
    if len(totals) != 6:
        raise VerificationError(f"expected 6 instruction totals (5 forks and the process), got {len(totals)}: "
                                "a fork failed or QEMU printed no count")
    _, g0, g1, g2, g3, _ = totals
    counts = fork_counts((g0, g1, g2, g3), passes[0], passes[1], batch)
    d = counts.between_forks
    increments = [g1 - g0 - d, g3 - g2 - d]
    if counts.spread > REPEAT_TOLERANCE:
        raise VerificationError(f"the two counted increments differ by {counts.spread:.2%} (> {REPEAT_TOLERANCE:.1%}): "
                                f"{increments[0]:.0f} vs {increments[1]:.0f}; count more passes (--passes)")
    return {"per_image": counts.insns_per_image, "increments": increments, "fork_overhead": d,
            "spread": counts.spread, "totals": list(totals), "startup": g0, "passes": list(passes), "batch": batch}


def count_onnxruntime(env: PythonEnv, site: Path, exported: Exported, settings: Settings, passes: tuple[int, int],
                      warmup: int, log_path: Path) -> dict[str, Any]:
    """Guest instructions per image of ONNX Runtime on exported, single-threaded, under the host's QEMU 7.2."""
    counts = _count(env, site, ["ort", "--model", exported.model], COUNT_ENV, exported, settings, passes, warmup,
                    log_path, "ONNX Runtime")
    if counts["vcpus"] != [0]:
        raise VerificationError(f"ONNX Runtime ran guest threads on vCPUs {counts['vcpus']}, not one thread",
                                log_path=log_path)
    return {**counts, "session": "intra_op_num_threads=1, inter_op_num_threads=1, ORT_SEQUENTIAL, default "
                                 "optimisations"}


def count_mxnet(env: PythonEnv, site: Path, symbol: Path, exported: Exported, policy: str, settings: Settings,
                passes: tuple[int, int], warmup: int, log_path: Path) -> dict[str, Any]:
    """Guest instructions per image of the project's MXNet (NNPACK policy `policy`) on the same weights and input."""
    return _count(env, site, ["mxnet", "--symbol", symbol, "--policies", policy], MXNET_COUNT_ENV, exported, settings,
                  passes, warmup, log_path, f"MXNet ({policy})")


def _count(env: PythonEnv, site: Path, args: Sequence[str | Path], extra_env: Mapping[str, str], exported: Exported,
           settings: Settings, passes: tuple[int, int], warmup: int, log_path: Path, what: str) -> dict[str, Any]:
    counting = counting_env(env)  # the host's qemu-<arch>: it loads the insn plugin
    command = [*counting.argv, SCRIPTS / "onnx_cell.py", *args, "--input", exported.input,
               "--count", ",".join(map(str, passes)), "--warmup", str(warmup)]
    begin = time.monotonic()
    try:  # not inline: the per-vCPU lines of every process show whether a guest thread was started
        counted = insn_count.run_counted(command, settings, env=counting.environment({"PYTHONPATH": str(site), **extra_env}),
                                         timeout=COUNT_TIMEOUT, log_path=log_path)
    except insn_count.InsnCountError as error:
        raise VerificationError(f"counting {what}: {error.message}", log_path=log_path) from None
    counts = per_image(counted.totals, passes, int(exported.record["batch"]))
    vcpus = sorted({int(m.group(1)) for m in insn_count.PER_VCPU.finditer(counted.plugin_output)})
    [record] = [r for r in parse_records(counted.stdout) if r["kind"].endswith("-count")]
    return {**counts, "seconds": round(time.monotonic() - begin, 1), "qemu": str(counting.argv[0]), "vcpus": vcpus,
            "single_threaded": vcpus == [0], "environment": dict(extra_env), "script": record}
