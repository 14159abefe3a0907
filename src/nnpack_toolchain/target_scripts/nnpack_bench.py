"""The on-board benchmark, shipped in the wheel: `python3 -m mxnet.nnpack_bench`.

The wheel stage (mxnet_wheel.py) packs this file as `mxnet/nnpack_bench/__init__.py`, next to
copies of the toolchain's own model_zoo.py (and the errors.py it imports), bench_models.py and
nnpack_layers.py, so a board needs nothing but the installed wheel: the networks are built from
the same symbol builders as `invoke check-model zoo:NAME` and timed by the same method as
`invoke bench` (bench_models.py: random weights, 224x224, MXNET_NNPACK_POLICY never / always /
auto alternating pass by pass in one process after a warm-up and the auto policy's tuning).

    python3 -m mxnet.nnpack_bench --json out.json                 # every network, batches 1,2,4,8
    python3 -m mxnet.nnpack_bench --networks resnet18 --batches 1 --passes 9 --threads 4
    python3 -m mxnet.nnpack_bench --correctness                   # NNPACK vs MXNet's own output only

Each (network, batch) runs in a process of its own (MXNET_CPU_NNPACK_NTHREADS and OMP_NUM_THREADS
are read once per process, and a process's peak RSS is its high-water mark), which reports per
policy the median images/sec and the lowest and highest of --passes timed passes, the process's
peak RSS (getrusage), NNPACK's memory (mx.runtime.nnpack_status) and the auto policy's choice per
layer shape (mx.runtime.nnpack_export_tuning). A cell that fails (a board out of memory for
VGG-16) is recorded in `errors` and the others still run (exit code 1 at the end). Under QEMU user
mode the emulated Python cannot exec itself: NNPACK_BENCH_PYTHON gives the command that starts it.
--correctness (used under QEMU, where timings mean nothing) runs each network once with NNPACK off
and on, in this process, and fails (exit code 1) when an output differs by more than
CHECK_TOLERANCE or no convolution ran on NNPACK.

The JSON (--json) is `invoke bench`'s bench.json format, which `invoke bench --import FILE`
renders on the build machine; README "The benchmark on a board" documents every key.
"""

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

FORMAT = "nnpack-bench"
FORMAT_VERSION = 1
"""What `invoke bench --import` checks (nnpack_toolchain.bench.BENCH_FORMAT and BENCH_FORMAT_VERSION)."""
POLICIES = ("never", "always", "auto")
CHECK_POLICIES = ("never", "always")
"""--correctness: the auto policy's trial passes would multiply the time under QEMU (as invoke bench)."""
CHECK_TOLERANCE = 1e-3
"""Largest relative difference allowed between NNPACK's and MXNet's own network outputs (bench.py's)."""
DEFAULT_BATCHES = (1, 2, 4, 8)
DEFAULT_PASSES = 5
LABELS = {"never": "MXNet (OpenBLAS)", "always": "NNPACK always", "auto": "NNPACK auto"}
TARGETS = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "armv7", "armv8l": "armv7"}
"""platform.machine() -> the toolchain's target name (armv8l: a 32-bit process on a 64-bit kernel)."""
MiB = 1 << 20


# Device -----------------------------------------------------------------------------------------


def read_text(path):
    try:
        with open(path, errors="replace") as stream:
            return stream.read()
    except OSError:
        return ""


def cpuinfo_fields(text):
    """Every `key : value` of /proc/cpuinfo, values of a key in order of appearance."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields.setdefault(key.strip(), []).append(value.strip())
    return fields


def cpu_model(cpuinfo, device_tree_model=""):
    """A readable name of the device and its CPU from /proc/cpuinfo (and /proc/device-tree/model):
    x86's `model name`; ARM boards name themselves in `Model` or `Hardware`, the cores in `model name`
    (armv7) or only by `CPU implementer` / `CPU part` (arm64)."""
    fields = cpuinfo_fields(cpuinfo)
    board = device_tree_model.strip("\0 \n") or next(iter(fields.get("Model", []) + fields.get("Hardware", [])), "")
    cores = list(dict.fromkeys(fields.get("model name", []) + fields.get("Processor", [])))
    if not cores and fields.get("CPU part"):
        parts = list(dict.fromkeys(zip(fields.get("CPU implementer", []), fields["CPU part"])))
        cores = [f"CPU implementer {i} part {p}" for i, p in parts]
    name = ", ".join(x for x in [board, " + ".join(cores)] if x)
    return name or platform.processor() or platform.machine()


def mem_total_bytes(meminfo):
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024  # kB
    return None


def emulated(machine, cpuinfo):
    """Best effort: an ARM process whose /proc/cpuinfo describes an x86 host runs under QEMU user mode."""
    return not machine.startswith(("x86", "i686")) and ("vendor_id" in cpuinfo or "\nflags" in cpuinfo)


def device_info():
    import numpy
    import mxnet as mx

    cpuinfo = read_text("/proc/cpuinfo")
    machine = platform.machine()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        libc = " ".join(platform.libc_ver())
    try:
        from importlib.metadata import version
        wheel = version("mxnet")
    except Exception:  # not installed as a distribution (PYTHONPATH)
        wheel = mx.__version__
    features = cpuinfo_fields(cpuinfo)
    return {
        "model": cpu_model(cpuinfo, read_text("/proc/device-tree/model")),
        "machine": machine,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "mem_total_bytes": mem_total_bytes(read_text("/proc/meminfo")),
        "cpu_features": (features.get("Features") or features.get("flags") or [""])[0],
        "glibc": libc,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "mxnet": mx.__version__,
        "mxnet_wheel": wheel,
        "nnpack": bool(mx.runtime.Features().is_enabled("NNPACK")),
        "emulated": emulated(machine, cpuinfo),
    }


# One cell, in a process of its own ---------------------------------------------------------------


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def emit(**record):
    print("RESULT " + json.dumps(record), flush=True)


def tuning_choices(network, batch):
    """The auto policy's decisions (mx.runtime.nnpack_export_tuning) as bench.json's auto_choices."""
    import mxnet as mx

    export = getattr(mx.runtime, "nnpack_export_tuning", None)
    text = export() if export else None
    if not text:
        return []
    return [{"network": network, "batch": batch, "layer_shape": f"{p['layer']} {','.join(map(str, p['shape']))}",
             "transforms": p.get("transforms", 0), "chosen": p["choice"], "ms": p.get("median_ms", {})}
            for p in json.loads(text).get("plans", [])]


def cell_records(networks, batches, passes, correctness):
    """The records of these networks and batches, measured in this process."""
    import mxnet as mx

    from . import bench_models, model_zoo

    for network in networks:
        symbol = mx.sym.load_json(json.dumps(model_zoo.get_model(network)))
        for batch in batches:
            executor = bench_models.bind(symbol, batch)
            if correctness:
                errors, counts = bench_models.check_outputs(executor, list(CHECK_POLICIES))
                yield dict(kind="check", network=network, batch=batch, rel_err=errors, nnpack_calls=counts,
                           peak_rss_bytes=peak_rss_bytes())
                continue
            samples = bench_models.sample_policies(executor, list(POLICIES), passes)
            status = mx.runtime.nnpack_status() if hasattr(mx.runtime, "nnpack_status") else None
            status = status or {}
            yield dict(kind="network", network=network, batch=batch, **bench_models.timing_fields(batch, samples),
                       threads=os.environ.get("MXNET_CPU_NNPACK_NTHREADS", "4"),
                       peak_rss_bytes=peak_rss_bytes(), memory_budget_bytes=status.get("memory_budget_bytes"),
                       transform_bytes=status.get("transform_bytes"), workspace_bytes=status.get("workspace_bytes"),
                       auto_choices=tuning_choices(network, batch))
            del executor


def python_command():
    """What starts this Python for a cell: $NNPACK_BENCH_PYTHON (a command line, e.g. QEMU user mode's
    `qemu-aarch64 -L SYSROOT .../python3`, where the emulated interpreter cannot exec itself without
    binfmt_misc), else sys.executable."""
    override = os.environ.get("NNPACK_BENCH_PYTHON", "").strip()
    return shlex.split(override) if override else [sys.executable]


def run_child(args, networks, batches, log):
    """Run cells in a child process (its own thread settings and peak RSS); its RESULT records,
    or an error record when it fails."""
    command = [*python_command(), "-m", __name__, "--cell", "--networks", ",".join(networks),
               "--batches", ",".join(map(str, batches)), "--passes", str(args.passes)]
    env = {**os.environ, "MXNET_CPU_NNPACK_NTHREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    begin = time.monotonic()
    try:
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    except OSError as error:
        why = (f"cannot start {command[0]} ({error.strerror}); under QEMU user mode set NNPACK_BENCH_PYTHON to "
               "the command that starts this Python")
        log(f"  {','.join(networks)} batch {','.join(map(str, batches))}: FAILED: {why}")
        return [{"kind": "error", "networks": networks, "batches": batches, "error": why}]
    records = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0:
        why = f"exit code {proc.returncode}" if proc.returncode > 0 else f"killed by signal {-proc.returncode}"
        last = (proc.stderr.strip().splitlines() or [why])[-1]
        records.append({"kind": "error", "networks": networks, "batches": batches,
                        "error": f"{why}: {last}" if last != why else why})
        log(f"  {','.join(networks)} batch {','.join(map(str, batches))}: FAILED ({why}); stderr ends: {last}")
    else:
        log(f"  {','.join(networks)} batch {','.join(map(str, batches))}: {time.monotonic() - begin:.1f} s")
    return records


# Results, tables --------------------------------------------------------------------------------


def check_failures(checks):
    """Networks whose NNPACK output is not MXNet's own within CHECK_TOLERANCE, or ran nothing on NNPACK."""
    failures = []
    for c in checks:
        worst = max(c["rel_err"].values())
        if worst > CHECK_TOLERANCE:
            failures.append(f"{c['network']} batch {c['batch']}: max rel. difference {worst:.1e}")
    # MXNet's NNPACK call counters add up over the process: the last check holds the run's total.
    if checks and not (checks[-1].get("nnpack_calls") or {}).get("convolution"):
        failures.append("no convolution ran on NNPACK")
    return failures


def text_table(title, headers, rows, left=(0,)):
    """Plain text (a board may have no Rich): columns `left` left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([title, line(headers), line("-" * w for w in widths), *map(line, rows)])


def network_table(results):
    """The columns of `invoke bench`'s table, plus each policy's spread and the cell's peak RSS."""
    rows = []
    for r in results["networks"]:
        ips, spread = r["images_per_second"], r.get("images_per_second_range", {})
        cells = [r["network"], r["batch"]]
        for p in POLICIES:
            low, high = spread.get(p, (ips[p], ips[p]))
            cells.append(f"{ips[p]:.2f} ({low:.2f}-{high:.2f})")
        cells += [f"{ips[p] / ips['never']:.2f}x" for p in ("always", "auto")]
        cells.append(f"{r['peak_rss_bytes'] / MiB:.0f}" if r.get("peak_rss_bytes") else "-")
        rows.append(cells)
    title = (f"images/sec [{results['target']}] on {results['host_cpu']}, {results['threads']} threads "
             f"(median of {results['iterations']} passes, lowest-highest)")
    return text_table(title, ["network", "batch", *(LABELS[p] for p in POLICIES), "always / MXNet",
                              "auto / MXNet", "peak RSS MiB"], rows)


def check_table(results):
    rows = [[r["network"], r["batch"], f"{max(r['rel_err'].values()):.1e}",
             ", ".join(str((r.get("nnpack_calls") or {}).get(k)) for k in ("convolution", "pooling", "fully_connected"))]
            for r in results["checks"]]
    return text_table(f"correctness [{results['target']}]: NNPACK vs MXNet's own output",
                      ["network", "batch", "max rel. difference", "NNPACK calls (conv, pool, fc)"], rows)


def choices_table(results):
    rows = []
    for c in results["auto_choices"]:
        nnpack = ", ".join(f"{n.replace('NNPACK ', '')} {ms:.2f}" for n, ms in c["ms"].items() if n != "MXNet")
        mxnet = c["ms"].get("MXNet")
        rows.append([c["network"], c["batch"], c["layer_shape"], c["chosen"],
                     f"{mxnet:.2f}" if mxnet is not None else "-", nnpack])
    return text_table("auto policy: chosen per layer shape (median ms of each choice)",
                      ["network", "batch", "layer shape", "chosen", "MXNet", "NNPACK algorithms (ms)"], rows,
                      left=(0, 2, 3, 5))


def positive_ints(text, what):
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: comma-separated whole numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{what}: whole numbers of at least 1, not {text!r}")
    return values


def parse_args(argv, models):
    parser = argparse.ArgumentParser(prog="python3 -m mxnet.nnpack_bench",
                                     description="MXNet with and without NNPACK on this device: images/sec, "
                                                 "peak RSS and the auto policy's choices per network and batch.")
    parser.add_argument("--networks", default=",".join(models),
                        help=f"comma list of networks (default all: {','.join(models)})")
    parser.add_argument("--batches", type=lambda t: positive_ints(t, "--batches"),
                        help="comma list of batch sizes (default 1,2,4,8; --correctness: 1)")
    parser.add_argument("--passes", type=lambda t: positive_ints(t, "--passes")[0], default=DEFAULT_PASSES,
                        help=f"timed passes per network, batch and policy (median reported; default {DEFAULT_PASSES})")
    parser.add_argument("--threads", type=lambda t: positive_ints(t, "--threads")[0], default=os.cpu_count() or 1,
                        help="MXNET_CPU_NNPACK_NTHREADS and OMP_NUM_THREADS (default: number of cores)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON (invoke bench --import FILE reads it)")
    parser.add_argument("--correctness", action="store_true",
                        help="only check NNPACK's output against MXNet's own (fast; for QEMU)")
    parser.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batches is None:
        args.batches = (1,) if args.correctness else DEFAULT_BATCHES
    args.networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in args.networks if n not in models]
    if unknown or not args.networks:
        parser.error(f"unknown network(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(models)}")
    return args


def main(argv=None):
    from . import model_zoo

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, list(model_zoo.MODELS))
    if args.cell:
        for record in cell_records(args.networks, args.batches, args.passes, args.correctness):
            emit(**record)
        return 0
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    device = device_info()
    results = {
        "format": FORMAT, "version": FORMAT_VERSION, "source": "board",
        "target": TARGETS.get(device["machine"], device["machine"]), "wheel": f"mxnet-{device['mxnet_wheel']}",
        "host_cpu": device["model"], "cores": device["cores"], "emulated": device["emulated"],
        "threads": args.threads, "iterations": args.passes, "batches": list(args.batches),
        "correctness_only": args.correctness, "device": device,
        "networks": [], "layers": [], "thread_sweep": [], "checks": [], "memory": [], "auto_choices": [],
        "errors": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log(f"nnpack_bench: {device['model']}, {device['cores']} cores, "
        f"{(device['mem_total_bytes'] or 0) / MiB:.0f} MiB, {device['glibc']}, python {device['python']}, "
        f"numpy {device['numpy']}, mxnet {device['mxnet_wheel']} (NNPACK {'on' if device['nnpack'] else 'MISSING'})")
    if args.correctness:  # in this process (QEMU cannot exec the emulated Python): NNPACK off and on
        os.environ["MXNET_CPU_NNPACK_NTHREADS"] = str(args.threads)  # read at NNPACK's first use
        records = []
        try:
            for record in cell_records(args.networks, args.batches, args.passes, True):
                records.append(record)
                log(f"  {record['network']} batch {record['batch']}: checked")
        except Exception as error:  # noqa: BLE001 (a failing network is a result, reported with the rest)
            done = {(r["network"], r["batch"]) for r in records}
            records.append({"kind": "error", "networks": [n for n in args.networks
                                                          if any((n, b) not in done for b in args.batches)],
                            "batches": list(args.batches), "error": f"{type(error).__name__}: {error}"})
    else:
        records = []
        for network in args.networks:
            for batch in args.batches:
                records += run_child(args, [network], [batch], log)
    for record in records:
        kind = record.pop("kind")
        if kind == "network":
            results["auto_choices"] += record.pop("auto_choices", [])
            results["networks"].append(record)
        elif kind == "check":
            results["checks"].append(record)
        else:
            results["errors"].append(record)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    failures = [f"{', '.join(e['networks'])} batch {', '.join(map(str, e['batches']))}: {e['error']}"
                for e in results["errors"]]
    if args.correctness:
        failures += check_failures(results["checks"])
        if results["checks"]:
            print(check_table(results))
    else:
        if results["networks"]:
            print(network_table(results))
        if results["auto_choices"]:
            print()
            print(choices_table(results))
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as stream:
            json.dump(results, stream, indent=2)
            stream.write("\n")
        os.replace(tmp, args.json)
        log(f"nnpack_bench: wrote {args.json}; render it on the build machine with: "
            f"invoke bench --import {os.path.basename(args.json)}")
    for failure in failures:
        log(f"nnpack_bench: FAILED: {failure}")
    return 1 if failures else 0
