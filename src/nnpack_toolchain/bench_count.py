"""`invoke bench --count`: deterministic work counts on ARM, guest instructions per image under QEMU.

Timings under QEMU say nothing about a board; instruction counts do say how much work each way of
running a layer takes, exactly and repeatably. Four modules, data flowing one way:
count_layers.py (shapes, choices, arithmetic) -> count_cells.py (the options, the cells and their
variants) -> count_runner.py (cells run under QEMU's insn plugin, variants forked from one bound
process, a resumable cache) -> this module (what to count, the checks, the table, JSON and plots).

Per network and batch: MXNet's own code (policy never), NNPACK always, and auto with the choice
per layer shape that has the fewest instructions (from the per-layer counts, pinned with
mx.runtime.nnpack_import_tuning; MXNET_ENFORCE_DETERMINISM=1, so nothing is timed and an unlisted
shape, e.g. a FullyConnected layer, runs NNPACK's own algorithm as under always).
Per convolution layer (one cell per distinct shape; a shape repeated in a network or shared by
several is counted once): MXNet, NNPACK always, and each NNPACK algorithm the patched operator can
run there (patch 0007's list: wt8x8, ft8x8, ft16x16, implicit-gemm, direct, and the "precompute"
variants with a kernel transform made once, batch 1 only), forced by pinning it.

One cell is run again at the end, uncached, and its counts per image must agree within
REPEAT_TOLERANCE (0.1 %): the quickest cell the run counted with NNPACK in it (by its first count's
wall time, so which one may differ from run to run), so that the check costs little (at batch 8 on
armv7 a network's cell is an hour; rerunning the first network's doubled the run).
Results: a table, count-<target>.json and two PNG plots next to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from . import log
from .count_layers import (ALWAYS, AUTO, MXNET, NEON_FLOP_PER_INSN, REPEAT_TOLERANCE, ConvLayer, ConvShape,
                           auto_choice, check_layer_record, conv_layers, flop_per_insn, layer_choices,
                           network_flops_per_image, nnpack_rejects, record_over_budget, relative_difference,
                           tuning_table)
from .count_cells import SETTLED_WARMUP, Cell, CountOptions, layer_cell, network_cells
from .count_runner import CellRunner, Measured
from .errors import ConfigurationError, VerificationError
from .files import ResultsJson, save_figure
from .insn_count import installed_qemu_version, run_counted
from .settings import Settings
from .target_env import PythonEnv
from .targets import Target

COLOURS = {MXNET: "tab:blue", ALWAYS: "tab:orange", "wt8x8": "tab:green", "ft8x8": "tab:red",
           "ft16x16": "tab:purple", "implicit-gemm": "tab:brown", "direct": "tab:pink"}
"""Plot colours: one per choice's algorithm, its precompute variant dashed."""


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


def distinct_shapes(network: str, batch: int) -> list[ConvShape]:
    """A network's convolution shapes at a batch size, each once, in network order."""
    return list(dict.fromkeys(layer.shape for layer in conv_layers(network, batch)))


def count_network(runner: CellRunner, results: dict[str, Any], shape_counts: dict[ConvShape, dict[str, Measured]],
                  models: Path, network: str, batch: int, per_layer: bool, log_path: Path) -> list[Cell]:
    """One network at one batch size: its layers (per_layer; into shape_counts and results["layers"]),
    then the network under each policy, auto pinned to the layers' choices (results["networks"]),
    one cell per policy (network_cells), auto's given to the workers first: it alone waited for the layers."""
    flops = network_flops_per_image(network)
    layers = conv_layers(network, batch)
    choices: dict[ConvShape, str] = {}
    if per_layer:
        for layer in layers:
            if layer.shape not in shape_counts:
                shape_counts[layer.shape] = measure_shape(runner, layer.shape)
            per_choice = {name: m.insns_per_image for name, m in shape_counts[layer.shape].items()}
            choices[layer.shape] = auto_choice(per_choice)
            results["layers"].append(layer_row(layer, shape_counts[layer.shape], choices[layer.shape]))
    pins = [(shape, choice) for shape, choice in choices.items() if nnpack_rejects(shape) is None]
    cells = network_cells(models, network, batch, tuning_table(pins) if per_layer else None)
    runner.start(reversed(cells))
    row: dict[str, Any] = {"network": network, "batch": batch, "flops_per_image": flops,
                           "insns_per_image": {}, "flop_per_insn": {}, "forks": {}, "cell_seconds": {}}
    for cell in cells:
        (variant,) = cell.variants
        m = runner.measure(cell)[variant.name]
        want = expected_network_calls(layers, variant.policy, choices)
        got = m.record.get("nnpack_conv_calls_per_pass")
        if got != want:
            raise VerificationError(f"{network} batch {batch}: {variant.name}: NNPACK ran {got} convolutions per pass, "
                                    f"expected {want}", log_path=log_path)
        if variant.policy == "auto":  # a transform over the memory budget runs the algorithm without one
            wanted = sum(1 for layer in layers if choices[layer.shape].endswith(" precompute"))
            row["transforms"] = {"pinned": wanted, "held": m.record.get("transforms")}
            if (m.record.get("transforms") or 0) < wanted:
                log.warn(f"{network} batch {batch}: {wanted} layers are pinned to a precomputed transform, "
                         f"{m.record.get('transforms')} hold one (memory budget)")
        row["insns_per_image"][variant.name] = m.insns_per_image
        row["flop_per_insn"][variant.name] = flop_per_insn(flops, m.insns_per_image)
        row["forks"][variant.name] = fork_json(m)
        row["cell_seconds"][variant.name] = runner.run_cell(cell)["seconds"]
    row["seconds"] = round(sum(row["cell_seconds"].values()), 1)  # counting time, not wall time (cells overlap)
    if per_layer:
        row["auto_choices"] = {layer.name: choices[layer.shape] for layer in layers}
    results["networks"].append(row)
    return cells


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
        "python": env.label, "min_increment": options.min_increment, "warmup": options.warmup, "settled_warmup": SETTLED_WARMUP,
        "inline_counter": options.inline,
        "environment": options.environment(), "memory_budget_mb": options.memory_budget_mb,
        "neon_flop_per_insn": NEON_FLOP_PER_INSN, "networks": [], "layers": [], "shapes": [],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    shape_counts: dict[ConvShape, dict[str, Measured]] = {}
    counted_networks: list[Cell] = []
    saved = ResultsJson(bench_dir, f"count-{target.name}")
    with runner.parallel():
        for index, network in enumerate(options.networks):
            # for the workers (CountOptions.jobs), longest first: this network's never and always cells (a
            # network's cells are the run's longest, and these two need no layer counts), its layer cells, then
            # the next network's; auto's cell goes to the next free worker once its layers are counted
            for name in options.networks[index:index + 2]:
                runner.prefetch(cell for batch in options.batches for cell in network_cells(models, name, batch))
                if options.layers:
                    runner.prefetch(layer_cell(shape, budget_bytes=options.budget_bytes)
                                    for batch in options.batches for shape in distinct_shapes(name, batch))
            for batch in options.batches:
                counted_networks.extend(count_network(runner, results, shape_counts, models, network, batch,
                                                      options.layers, log_path))
                results["shapes"] = shapes_json(runner, shape_counts)
                saved.save_partial(results)
    cells = [cell for cell in [*counted_networks, *(layer_cell(shape, budget_bytes=options.budget_bytes)
                                                    for shape in shape_counts)]
             if any(variant.policy != "never" for variant in cell.variants)]
    if cells:  # the quickest with NNPACK in it (a layer NNPACK cannot run has only MXNet's variant)
        results["repeat"] = repeat_check(runner, min(cells, key=lambda cell: runner.run_cell(cell)["seconds"]))
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    json_path = saved.save(results)
    results["json"] = str(json_path)
    results["plots"] = [str(p) for p in plot_counts(results, bench_dir)]
    repeat = results.get("repeat")
    if repeat and repeat["largest_difference"] > REPEAT_TOLERANCE:
        raise VerificationError(f"two runs of '{repeat['cell']}' gave instructions per image "
                                f"{repeat['largest_difference']:.3%} apart (more than {REPEAT_TOLERANCE:.1%}): counts "
                                f"are not repeatable here; see {json_path}", log_path=log_path)
    return results


def shapes_json(runner: CellRunner, shape_counts: Mapping[ConvShape, Mapping[str, Measured]]) -> list[dict[str, Any]]:
    return [{"shape": asdict(shape), "flops_per_image": shape.flops_per_image, "nnpack": nnpack_rejects(shape) or "eligible",
             "insns_per_image": {n: m.insns_per_image for n, m in per.items()},
             "forks": {n: fork_json(m) for n, m in per.items()},
             "seconds": runner.run_cell(layer_cell(shape, budget_bytes=runner.options.budget_bytes))["seconds"]}
            for shape, per in shape_counts.items()]


def fork_json(m: Measured) -> dict[str, Any]:
    return {"passes": list(m.passes), "totals": list(m.totals), "between_forks": m.between_forks, "spread": m.spread,
            "warmup": m.record.get("warmup")}


def measure_shape(runner: CellRunner, shape: ConvShape) -> dict[str, Measured]:
    """Every way of running one convolution shape: MXNet, NNPACK always and each pinned NNPACK choice
    that fits the memory budget (one that did not is left out: a precompute whose transform did not
    fit ran without one, a batch whose workspace did not ran MXNet's code; record_over_budget)."""
    cell = layer_cell(shape, budget_bytes=runner.options.budget_bytes)
    measured = runner.measure(cell)
    for name, m in measured.items():
        problem = check_layer_record(name, m.record, cell.label, shape)
        if problem:
            raise VerificationError(problem, log_path=runner.log_path)
    dropped = [name for name, m in measured.items() if record_over_budget(name, m.record, shape)]
    if dropped:
        log.warn(f"{cell.label}: {', '.join(dropped)}: over the memory budget of "
                 f"{runner.options.memory_budget_mb} MiB (a batch's workspace, or a kernel transform beside the "
                 "workspace); left out of auto's choices")
    return {name: m for name, m in measured.items() if name not in dropped}


def layer_row(layer: ConvLayer, per: Mapping[str, Measured], choice: str) -> dict[str, Any]:
    flops = layer.shape.flops_per_image
    skipped = [name for name in layer_choices(layer.shape)[1:] if name not in per]  # over the memory budget
    return {"network": layer.network, "batch": layer.batch, "layer": layer.name, "shape": layer.shape.describe(),
            "nnpack": nnpack_rejects(layer.shape) or "eligible", "flops_per_image": flops,
            "insns_per_image": {n: m.insns_per_image for n, m in per.items()},
            "flop_per_insn": {n: flop_per_insn(flops, m.insns_per_image) for n, m in per.items()},
            "auto_choice": choice, **({"over_budget": skipped} if skipped else {})}


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
        figure.suptitle(f"MXNet 1.9.1 inference, {target} under QEMU, single-threaded:\ninstructions per image")
        written.append(save_figure(figure, plt, directory / f"count-{target}-networks.png"))
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
        written.append(save_figure(figure, plt, directory / f"count-{target}-layers.png"))
    return written

