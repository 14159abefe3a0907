"""Does one warm-up pass count what two did? Network cells of `invoke bench --count` (one policy each,
count_cells.network_cells) counted again with one warm-up pass, against a kept result of the same wheel
counted with two (benchmarks/results/mxnet-count-<target>-<network>-batch<N>.json): instructions per image of
each and their relative difference. Needs that wheel in the toolchain home (invoke build --arch <target>).

    PYTHONPATH=src python3 benchmarks/count_warmup_check.py arm64 8 never resnet18 inception-bn mobilenet
    PYTHONPATH=src python3 benchmarks/count_warmup_check.py arm64 8 always resnet18 mobilenet
    PYTHONPATH=src python3 benchmarks/count_warmup_check.py arm64 8 auto mobilenet inception-bn resnet18

auto's cell is pinned to the kept result's per-layer choices (its auto_choices), as bench_count.count_network
pins them from the layers' counts.

Sessions 20 and 21 (arm64 wheel df87871f): benchmarks/results/count-warmup-check-arm64.log, and the README
beside "How the counts are made repeatable".
"""
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from nnpack_toolchain.bench_count import write_models
from nnpack_toolchain.count_cells import CountOptions, network_cells
from nnpack_toolchain.count_layers import conv_layers, nnpack_rejects, relative_difference, tuning_table
from nnpack_toolchain.count_runner import CellRunner
from nnpack_toolchain.insn_count import installed_qemu_version
from nnpack_toolchain.procgroup import sigterm_unwinds
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.smoke import current_wheel
from nnpack_toolchain.target_env import python_env
from nnpack_toolchain.targets import TARGETS

RESULTS = Path(__file__).parent / "results"
if len(sys.argv) < 5 or sys.argv[3] not in ("never", "always", "auto") or not sys.argv[2].isdigit():
    sys.exit("usage: count_warmup_check.py TARGET BATCH never|always|auto NETWORK...")
target_name, batch, policy, *networks = sys.argv[1:]
settings = Settings()
target = TARGETS[target_name]
built = current_wheel(target, settings)  # the wheel invoke wheel last made, and its sha256
env = python_env(target, settings)
tmp = Path(tempfile.mkdtemp(prefix="warmup-"))
env.install_wheel(Path(built.wheel), tmp / "site", tmp / "pip.log")
write_models(tmp / "models", networks)
with sigterm_unwinds():  # SIGTERM stops the running QEMU's group too (run_group), not this process alone
    for network in networks:
        kept = json.loads((RESULTS / f"mxnet-count-{target_name}-{network}-batch{batch}.json").read_text())
        row = next(row for row in kept["networks"] if row["batch"] == int(batch))
        choices = {layer.shape: row["auto_choices"][layer.name] for layer in conv_layers(network, int(batch))}
        auto = tuning_table([(shape, choice) for shape, choice in choices.items() if nnpack_rejects(shape) is None])
        (cell,) = [c for c in network_cells(tmp / "models", network, int(batch), auto) if c.variants[0].policy == policy]
        warmup = row["forks"][cell.variants[0].name].get("warmup") or kept["warmup"]  # per variant since session 20
        if kept["wheel_sha256"] != built.wheel_sha256 or warmup != 2:
            sys.exit(f"{network}: the kept result is of wheel {kept['wheel_sha256'][:8]} with {warmup} warm-up "
                     f"passes, not of this wheel ({built.wheel_sha256[:8]}) with 2")
        cell = replace(cell, warmup=1)
        runner = CellRunner(env, tmp / "site", tmp / f"work-{network}", settings,
                            CountOptions(inline=kept.get("inline_counter", True), jobs=1),
                            {"wheel_sha256": built.wheel_sha256, "qemu": installed_qemu_version(), "target": target_name},
                            tmp / "count.log")
        name = cell.variants[0].name
        m = runner.measure(cell, use_cache=False)[name]
        want = row["insns_per_image"][name]
        print(f"{network} batch {batch}, {name}: one warm-up pass {m.insns_per_image:,.0f}, two {want:,.0f}: "
              f"{relative_difference(m.insns_per_image, want):.1e} apart ({m.record.get('nnpack_conv_calls_per_pass')} "
              f"NNPACK convolutions per pass)", flush=True)
