"""Invoke tasks: one thin task per stage. Logic lives in src/nnpack_toolchain."""

import subprocess
import sys
from pathlib import Path

from invoke import task

from nnpack_toolchain import doctor as host
from nnpack_toolchain.cli import make_settings, parse_count, reports_errors
from nnpack_toolchain.configure import configure as render_config_mk
from nnpack_toolchain.fetch import fetch_sources
from nnpack_toolchain.log import console
from nnpack_toolchain.mxnet import build_mxnet
from nnpack_toolchain.nnpack import build_nnpack
from nnpack_toolchain.settings import parse_local_sources
from nnpack_toolchain.targets import parse_targets

COMMON_HELP = {
    "arch": "target: x86_64, armv7, arm64 (aliases amd64, armhf, aarch64), a comma list, or all",
    "jobs": "parallel compile jobs (default: number of cores)",
    "offline": "never touch the network; fail naming any source missing from the cache",
    "source": "NAME=DIR: build package NAME from a local source directory (unverified); repeatable",
    "backend": "NNPACK backend: fast (AVX2/FMA3 on x86-64, NEON on ARM), psimd or scalar",
    "tests": "NNPACK test suite: quick (default), all (adds the slow VGG/training tests), none",
    "home": "toolchain home (cache, Conan home, logs, artifacts); default $NNPACK_TOOLCHAIN_HOME or ~/.cache/nnpack-toolchain",
    "source_cache": "source cache directory (Conan download cache); default <home>/sources",
    "no_ccache": "compile without ccache",
    "base": "base distribution whose GCC and glibc build the targets: debian11 (default: glibc 2.31, "
            "manylinux_2_31) or debian12 (glibc 2.36)",
    "distribute": "HOST[:PORT] of an icecream scheduler: MXNet's compiles run on its cluster (this machine's "
                  "iceccd must be in it; make -j follows the cluster); unreachable: local, said in one line",
}


@task(help={"arch": COMMON_HELP["arch"]})
@reports_errors
def doctor(c, arch="all"):
    """Check the host tools for the given targets and name the Debian package of each missing one."""
    checks = host.check(parse_targets(arch))
    for item in checks:
        mark = "[green]ok[/green]     " if item.ok else "[red]missing[/red]"
        console.print(f"{mark} {item.tool:28} {item.found or item.provider}")
    missing = [i for i in checks if not i.ok]
    if missing:
        console.print("fix: invoke setup   (or: " + "; ".join(sorted({i.provider for i in missing})) + ")")
        raise SystemExit(3)


@task(help={"arch": COMMON_HELP["arch"]})
def setup(c, arch="all"):
    """Install the Debian packages the given targets need (cross compilers, QEMU, Ninja, ...)."""
    packages = " ".join(host.debian_packages(parse_targets(arch)))
    sudo = "" if c.run("id -u", hide=True).stdout.strip() == "0" else "sudo "
    c.run(f"{sudo}apt-get update -q", pty=False)
    c.run(f"DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -q --no-install-recommends {packages}", pty=False)
    # Debian's icecc package starts an iceccd service that joins any icecream scheduler of the LAN;
    # this toolchain only uses icecream when asked (--distribute), with the daemon the user runs.
    if Path("/run/systemd/system").is_dir():
        c.run(f"{sudo}systemctl disable --now iceccd.service icecc-scheduler.service", pty=False, warn=True, hide=True)


@task(iterable=["source", "from_git", "package"],
      help={"offline": COMMON_HELP["offline"], "home": COMMON_HELP["home"], "source_cache": COMMON_HELP["source_cache"],
            "from_git": "NAME=DIR: rebuild NAME's GitHub archive from a git clone (same bytes, verified); repeatable",
            "package": "fetch only this package; repeatable"})
@reports_errors
def fetch(c, offline=False, home=None, source_cache=None, from_git=None, package=None):
    """Fill the source cache with every pinned source (verified by sha256)."""
    settings = make_settings(home=home, source_cache=source_cache, offline=offline)
    fetch_sources(settings, names=package or None, from_git=parse_local_sources(from_git, "--from-git"))


@task(iterable=["source"], help={k: v for k, v in COMMON_HELP.items() if k != "distribute"})
@reports_errors
def nnpack(c, arch="", jobs=None, offline=False, source=None, backend="fast", tests="quick", home=None,
           source_cache=None, no_ccache=False, base=None):
    """Build NNPACK shared libraries for a target, run its test suite there, print where they are."""
    settings = make_settings(base=base, home=home, source_cache=source_cache, jobs=jobs, offline=offline, source=source,
                             backend=backend, tests=tests, ccache=not no_ccache)
    for target in parse_targets(arch):
        result = build_nnpack(target, settings)
        console.out(f"nnpack [{target.name}] {result.reference}, backend {result.backend}")
        console.out(f"  library:  {result.library} ({result.library_size} bytes, sha256 {result.library_sha256})")
        console.out(f"  includes: {' '.join(result.include_dirs)}")
        console.out(f"  tests:    {result.tests.passed}/{result.tests.ran} NNPACK tests passed ({settings.tests})")


@task(help={"arch": COMMON_HELP["arch"], "output": "write config.mk here (default <home>/out/<target>/config.mk)",
            "home": COMMON_HELP["home"]})
@reports_errors
def configure(c, arch="", output=None, home=None, base=None):
    """Write MXNet's config.mk for a target from config.mk.template (needs 'invoke nnpack' first)."""
    from pathlib import Path

    settings = make_settings(base=base, home=home)
    targets = parse_targets(arch)
    if output and len(targets) > 1:
        raise SystemExit("--output takes one target")
    for target in targets:
        result = render_config_mk(target, settings, Path(output).resolve() if output else None)
        console.out(f"config.mk [{target.name}]: {result.config_mk}")


@task(iterable=["source"], help={k: v for k, v in COMMON_HELP.items() if k not in ("backend", "tests")})
@reports_errors
def mxnet(c, arch="", jobs=None, offline=False, source=None, home=None, source_cache=None, no_ccache=False, base=None,
          distribute=None):
    """Build MXNet 1.9.1's libmxnet.so with USE_NNPACK=1 for a target (needs 'invoke nnpack' first)."""
    settings = make_settings(base=base, home=home, source_cache=source_cache, jobs=jobs, offline=offline, source=source,
                             ccache=not no_ccache, distribute=distribute)
    for target in parse_targets(arch):
        result = build_mxnet(target, settings)
        state = "up to date" if result.up_to_date else f"built in {result.build_seconds} s"
        console.out(f"mxnet [{target.name}] {state}: {result.library} ({result.library_size} bytes)")
        console.out(f"  NEEDED: {', '.join(result.needed)}")
        console.out(f"  source: {result.source}")


@task(auto_shortflags=False, help={"arch": COMMON_HELP["arch"], "home": COMMON_HELP["home"]})
@reports_errors
def wheel(c, arch="", home=None, base=None):
    """Package the target's MXNet build as a wheel (libmxnet.so, libnnpack.so, auditwheel-repaired)."""
    from nnpack_toolchain.mxnet_wheel import build_mxnet_wheel

    settings = make_settings(base=base, home=home)
    for target in parse_targets(arch):
        result = build_mxnet_wheel(target, settings)
        state = "up to date" if result.up_to_date else "built"
        console.out(f"wheel [{target.name}] {state}: {result.wheel}")
        console.out(f"  {result.wheel_size} bytes, sha256 {result.wheel_sha256}, tag {result.platform_tag}")
        console.out(f"  grafted from Debian {target.debian_arch}: {', '.join(result.grafted) or 'nothing'}")


@task(help={"arch": COMMON_HELP["arch"], "home": COMMON_HELP["home"],
            "wheel": "smoke-test this wheel file instead of the target's current one",
            "force": "run even if this wheel already passed"})
@reports_errors
def smoke(c, arch="", wheel=None, force=False, home=None, base=None):
    """Install the target's wheel into the target's Python (QEMU on ARM) and run the smoke suite there."""
    from pathlib import Path

    from nnpack_toolchain.smoke import run_smoke, smoke_table

    settings = make_settings(base=base, home=home)
    targets = parse_targets(arch)
    if wheel and len(targets) > 1:
        raise SystemExit("--wheel takes one target")
    for target in targets:
        result = run_smoke(target, settings, Path(wheel).resolve() if wheel else None, force=force)
        if result.up_to_date:
            console.print(smoke_table(result))
            console.out(f"smoke [{target.name}] up to date: {result.passed}/{len(result.tests)} passed for {result.wheel}")


@task(help={"arch": COMMON_HELP["arch"], "remote": "name of the Conan remote (the binary cache)",
            "url": "add or update the remote first: http(s)://HOST:PORT of a conan_server, or an Artifactory Conan repository URL",
            "user": "log in to the remote as USER (password from $NNTC_CONAN_PASSWORD)",
            "index": "also upload each target's wheel (twine) to this PyPI-compatible index, e.g. http://HOST:8080/ "
                     "of a pypiserver; boards install with pip --index-url INDEX/simple/",
            "index_user": "user on the index (password from $NNTC_INDEX_PASSWORD)",
            "source": "NAME=DIR as given to the build (MXNet's package names its source), for builds that did "
                      "not record it; repeatable",
            "backend": COMMON_HELP["backend"], "tests": COMMON_HELP["tests"], "home": COMMON_HELP["home"]},
      iterable=["source"])
@reports_errors
def publish(c, arch="", remote="", url=None, user=None, index=None, index_user=None, backend="fast", tests="quick",
            home=None, base=None, source=None):
    """Upload NNPACK's Conan graph (--remote) and the wheels (--index) of each target, for other machines."""
    from pathlib import Path

    from nnpack_toolchain import publish as sharing
    from nnpack_toolchain.prebuilt import publish_prebuilt
    from nnpack_toolchain.smoke import current_wheel
    from nnpack_toolchain.wheel_index import simple_url, upload_wheels

    if not remote and not index:
        raise SystemExit("give the Conan remote (--remote NAME; add it with --url URL the first time), "
                         "the wheel index (--index URL), or both")
    settings = make_settings(base=base, home=home, backend=backend, tests=tests, source=source)
    if url:
        sharing.add_remote(settings, remote, url, user=user)
    elif user:
        raise SystemExit("--user needs --url")
    for target in parse_targets(arch):
        if remote:
            result = sharing.publish(settings, target, remote)
            console.out(f"published [{target.name}] {result.reference} to {remote}: "
                        f"{len(result.recipes)} recipes, {result.binaries} binaries")
            if (settings.output_dir(target.name) / "wheel-result.json").is_file():
                package = publish_prebuilt(settings, target, remote, render_config_mk(target, settings))
                console.out(f"published [{target.name}] MXNet and its wheel to {remote}: {package}")
            else:
                console.out(f"publish [{target.name}]: no MXNet build and wheel here, only NNPACK was published")
        if index:
            wheel = Path(current_wheel(target, settings).wheel)
            upload = upload_wheels([wheel], index, user=index_user)
            state = "uploaded" if upload.uploaded else "already on the index"
            console.out(f"wheel [{target.name}] {state}: {wheel.name}; install with "
                        f"pip install --index-url {simple_url(index)} mxnet=={wheel.name.split('-')[1]}")


@task(help={"remote": "name of the Conan remote", "url": "its URL", "user": "log in as USER ($NNTC_CONAN_PASSWORD)",
            "remove": "NAME: forget this remote instead", "home": COMMON_HELP["home"]})
@reports_errors
def use_remote(c, remote="", url="", user=None, remove=None, home=None):
    """Use a Conan remote as binary cache: later 'invoke nnpack' runs download what it holds."""
    from nnpack_toolchain import publish as sharing

    if remove:
        sharing.remove_remote(make_settings(home=home), remove)
        return
    if not remote or not url:
        raise SystemExit("give both --remote NAME and --url URL (or --remove NAME)")
    sharing.add_remote(make_settings(home=home), remote, url, user=user)


@task(iterable=["source"], help={
    **COMMON_HELP,
    "arch": COMMON_HELP["arch"] + " (default all)",
    "keep_going": "after a target fails, go on with the next target (exit code still non-zero)",
    "clean": "first delete the target's outputs and MXNet build tree (source cache, Conan packages and ccache stay)",
    "report": "write the build summary as JSON (schema: src/nnpack_toolchain/report_schema.json) to this file",
    "prebuilt": "MXNet from the team's Conan remote (invoke use-remote): auto (default: download it if a remote "
                "holds this very build, else build here), require (fail instead of building), never",
})
@reports_errors
def build(c, arch="all", jobs=None, offline=False, source=None, backend="fast", tests="quick", keep_going=False,
          clean=False, report=None, home=None, source_cache=None, no_ccache=False, base=None, prebuilt="auto",
          distribute=None):
    """The whole pipeline for each target: fetch, nnpack, configure, mxnet, wheel, smoke (unchanged steps are skipped)."""
    from pathlib import Path

    from nnpack_toolchain.pipeline import run_build

    settings = make_settings(base=base, home=home, source_cache=source_cache, jobs=jobs, offline=offline, source=source,
                             backend=backend, tests=tests, ccache=not no_ccache, prebuilt=prebuilt,
                             distribute=distribute)
    result = run_build(parse_targets(arch), settings, keep_going=keep_going, clean=clean,
                       report_path=Path(report).resolve() if report else None)
    if not result.is_ok:
        raise SystemExit(1)


@task(help={"model": "MXNet *-symbol.json file, or zoo:NAME (alexnet, vgg16, resnet18, inception-bn, mobilenet)",
            "batch": "batch size to check for (default 1)",
            "shape": "data shape without the batch (default 3,224,224)",
            "json": "print JSON (per layer and totals) on stdout instead of the table",
            "write": "also save the zoo model as an MXNet symbol file at this path"})
@reports_errors
def check_model(c, model, batch=None, shape="3,224,224", json=False, write=None):
    """Show which layers of an MXNet model are eligible for NNPACK (this build and MXNet 1.0 rules) and their FLOP share."""
    from nnpack_toolchain.check_model_report import main as check_model_main
    from nnpack_toolchain.errors import ConfigurationError
    from nnpack_toolchain.model_zoo import write_model

    if model in ("-h", "--help"):  # invoke takes a required positional's value before its own --help
        raise SystemExit(subprocess.call([sys.executable, "-m", "invoke", "--help", "check-model"],
                                         cwd=Path(__file__).parent))
    if not model:
        raise ConfigurationError("give the model: invoke check-model model-symbol.json (or zoo:vgg16)")
    if write:
        if not model.startswith("zoo:"):
            raise ConfigurationError("--write saves zoo models only; give zoo:NAME")
        console.print(f"wrote {write_model(model[4:], write)}")
    check_model_main(model, batch=parse_count(batch, "--batch") or 1, shape=shape, as_json=json, console=console)


@task(help={"arch": COMMON_HELP["arch"], "home": COMMON_HELP["home"],
            "networks": "comma list of zoo networks (default alexnet,vgg16,resnet18,inception-bn; with --count also "
                        "mobilenet)",
            "batches": "comma list of batch sizes (default 1,2,4,8,16,32; with --count 1,8)",
            "iterations": "timed forward passes per network, batch and column (median is reported; default 3)",
            "threads": "MXNET_CPU_NNPACK_NTHREADS and OMP_NUM_THREADS for the main table (default: number of cores)",
            "sweep": "thread counts for the thread sweep at batch 1 (default 1,2,4; empty to skip)",
            "no_pypi": "leave out the PyPI mxnet 1.9.1 (oneDNN) column on x86-64",
            "no_layers": "leave out the per-layer convolution times",
            "memory": "also measure peak RSS and the auto policy's tuning cost per network, batch and policy "
                      "(one process per cell; on ARM under QEMU too)",
            "no_timing": "leave out the speed table (with --memory: memory cells only)",
            "count": "instead of timings: guest instructions per image under QEMU (ARM targets), single-threaded and "
                     "deterministic, per network, batch and policy (MXNet, NNPACK always, auto chosen from the counts) "
                     "and per convolution layer and NNPACK algorithm (--no-layers: networks only); resumes an "
                     "interrupted run",
            "onnxruntime": "x86-64: add an ONNX Runtime column (the networks exported with MXNet's own exporter, "
                           "run by PyPI's onnxruntime in the PyPI column's venv)",
            "jobs": "with --count: cells counted at once, each one single-threaded QEMU process (default: the number "
                    "of cores; the counts do not depend on it)",
            "cells": "with --count: comma list of count-cells.json files (another machine's run, a kept one) to "
                     "take already counted cells from; only cells of the same wheel, QEMU and scripts are taken",
            "inline": "with --count: QEMU's inline instruction counter, 1.7-2.0x faster, the same counts within "
                      "3.2e-6 on a measured cell, but without the runner's one-thread check",
            "budget_mb": "with --count: MXNET_NNPACK_MEMORY_BUDGET_MB of every cell, the device the counts are for "
                         "(default 512: patch 0007's default on a 4 GB board; under QEMU the guest would see this "
                         "machine's memory)",
            "import": "FILE: show a board's own run (python3 -m mxnet.nnpack_bench --json FILE) next to what "
                      "this toolchain measured for its target; measures nothing (--arch: refuse another target's)"},
      auto_shortflags=False)  # long options only: invoke took '-' from "no-layers" as a short flag
@reports_errors
def bench(c, arch="", networks=None, batches=None, iterations=None, threads=None, sweep="1,2,4", no_pypi=False,
          no_layers=False, memory=False, no_timing=False, count=False, onnxruntime=False, home=None, base=None,
          import_=None, jobs=None, cells=None, budget_mb=None, inline=False):
    """MXNet vs NNPACK images/sec (same libmxnet.so, run-time switch), per layer and per thread count;
    --memory: peak RSS and the auto policy's tuning cost per network, batch and policy;
    --count: guest instructions per image under QEMU, per network, policy, layer and algorithm."""
    from nnpack_toolchain import bench as benchmark
    from nnpack_toolchain import bench_report
    from nnpack_toolchain import bench_count
    from nnpack_toolchain.count_cells import COUNT_BATCHES, COUNT_NETWORKS

    if import_:
        bench_report.show_import(Path(import_), arch or None, make_settings(base=base, home=home))
        return
    default_networks = COUNT_NETWORKS if count else benchmark.DEFAULT_NETWORKS
    default_batches = COUNT_BATCHES if count else benchmark.DEFAULT_BATCHES
    options = benchmark.BenchOptions(
        networks=tuple(n.strip() for n in networks.split(",") if n.strip()) if networks else default_networks,
        batches=benchmark.parse_int_list(batches, "--batches") if batches else default_batches,
        iterations=parse_count(iterations, "--iterations") or 3,
        thread_sweep=benchmark.parse_int_list(sweep, "--sweep"), pypi=not no_pypi, layers=not no_layers,
        memory=memory, timing=not no_timing and not count, count=count, onnxruntime=onnxruntime,
        **({"threads": parse_count(threads, "--threads")} if threads else {}),
        **({"jobs": parse_count(jobs, "--jobs")} if jobs else {}),
        cells=tuple(Path(f.strip()) for f in cells.split(",") if f.strip()) if cells else (),
        budget_mb=parse_count(budget_mb, "--budget-mb") if budget_mb else None, inline=inline)
    settings = make_settings(base=base, home=home)
    for target in parse_targets(arch):
        results = benchmark.run_bench(target, settings, options)
        if results.get("count"):
            counted = results["count"]
            console.print(bench_count.network_table(counted))
            if counted["layers"]:
                console.print(bench_count.layer_table(counted))
            console.out(f"bench [{target.name}]: {counted['json']}  {'  '.join(counted['plots'])}")
            if not results["memory"]:
                continue
        if results["memory"]:
            from nnpack_toolchain import bench_memory

            console.print(bench_memory.memory_table(results["memory"], target.name, benchmark.POLICY_LABELS,
                                                    benchmark.POLICIES))
            for violation in results["memory_violations"]:
                console.out(f"bench [{target.name}]: over the memory budget: {violation}")
        if results["emulated"]:
            if results["checks"]:
                console.print(bench_report.check_table(results))
            console.out(f"bench [{target.name}]: timings under QEMU are not meaningful for a real board and are "
                        "not reported; run invoke bench on the board itself")
            continue
        if results["networks"]:
            console.print(bench_report.network_table(results))
            spread = bench_report.spread_table(results)
            if spread is not None:
                console.print(spread)
        if results["layers"]:
            console.print(bench_report.layer_table(results))
            console.print(bench_report.choices_table(results))
        if results["thread_sweep"]:
            console.print(bench_report.sweep_table(results))
        console.out(f"bench [{target.name}]: {results['json']}  {results.get('plot', '')}")


@task(help={"arch": "arm64 (default; instruction counts under QEMU) or x86_64 (outputs only)", "home": COMMON_HELP["home"],
            "networks": "comma list of zoo networks (default resnet18; also alexnet, vgg16, inception-bn, mobilenet)",
            "batches": "comma list of batch sizes (default 1)",
            "passes": "K1,K2: forward passes of the counted forks (default 0,1; more for small networks)",
            "no_count": "outputs only, no instruction counts",
            "wheel": "the project's MXNet wheel to compare with on the target (default: the home's current one)",
            "mxnet_count": "MXNet policies counted beside ONNX Runtime with the project's wheel (default never,always; "
                           "none: only ONNX Runtime's count, e.g. at batch 8 where invoke bench --count has MXNet's)"})
@reports_errors
def onnx_compare(c, arch="arm64", networks="resnet18", batches="1", passes="0,1", no_count=False, wheel=None,
                 mxnet_count="never,always", home=None, base=None):
    """ONNX Runtime beside MXNet (issue 14): export with MXNet's exporter, run onnxruntime on the target,
    check its outputs against MXNet's, count its guest instructions per image under QEMU."""
    from nnpack_toolchain import onnx_compare as compare
    from nnpack_toolchain.bench import parse_int_list

    k1, k2 = (parse_int_list(passes, "--passes") + (0, 0))[:2]
    options = compare.OnnxOptions(networks=tuple(n.strip() for n in networks.split(",") if n.strip()),
                                  batches=parse_int_list(batches, "--batches"), count=not no_count, passes=(k1, k2),
                                  mxnet_wheel=Path(wheel) if wheel else None,
                                  mxnet_count=compare.parse_policies(mxnet_count))
    settings = make_settings(base=base, home=home)
    for target in parse_targets(arch):
        results = compare.run_onnx_compare(target, settings, options)
        console.print(compare.table(results))
        console.out(f"onnx-compare [{target.name}]: {results['json']}")
