"""Benchmark: cold `invoke nnpack` vs a hand-run upstream CMake + Ninja build, and a no-op rerun.

Both builds compile the same pinned commits with the same target flags, shared library, the
target's fast backend, no tests, no ccache, -j<cores>. The toolchain's build also builds the
dependencies as separate Conan packages and runs the Meson smoke test under QEMU; the upstream
build compiles its dependencies in-tree (ADD_SUBDIRECTORY). Goals (issue 2): overhead < 10 %,
no-op rerun < 3 s.

    python3 benchmarks/nnpack_build_overhead.py --arch arm64 [--json results.json]

x86-64 uses Debian's python3-peachpy for the upstream build (PYTHON_EXECUTABLE=/usr/bin/python3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nnpack_toolchain.settings import default_home  # noqa: E402
from nnpack_toolchain.sources import SourceCache, pins_for_backend  # noqa: E402
from nnpack_toolchain.targets import parse_target  # noqa: E402


def timed(argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    started = time.monotonic()
    with open(log, "a") as stream:
        subprocess.run(argv, check=True, stdout=stream, stderr=subprocess.STDOUT, cwd=cwd,
                       env={**os.environ, **(env or {})})
    return time.monotonic() - started


def extract(cache: SourceCache, name: str, pins: dict, dest: Path) -> Path:
    mirror = cache.cached_mirror(pins[name])
    if mirror is None:
        raise SystemExit(f"{name} is not in the source cache: run 'invoke fetch'")
    out = dest / name
    out.mkdir(parents=True)
    with tarfile.open(cache.path(mirror.sha256)) as tar:
        for member in tar.getmembers():
            member.name = member.name.split("/", 1)[1] if "/" in member.name else ""
        tar.extractall(out, members=[m for m in tar.getmembers() if m.name], filter="tar")
    return out


def upstream_build(target, source_cache: Path, work: Path, log: Path, jobs: int, tests: str) -> float:
    pins = {p.name: p for p in pins_for_backend(target.nnpack_backend)}
    cache = SourceCache(source_cache)
    names = ["nnpack", "cpuinfo", "pthreadpool", "fxdiv", "psimd", "fp16"] + (["googletest"] if tests != "none" else [])
    dirs = {n: extract(cache, n, pins, work / "src") for n in names}
    for patch in pins["nnpack"].patches:  # the ADD_TEST patch: ctest needs it to run tests under QEMU
        subprocess.run(["patch", "-p1", "-s", "-i", str(patch.file)], cwd=dirs["nnpack"], check=True)
    flags = " ".join(target.compiler_flags)
    args = [
        "cmake", "-G", "Ninja", "-S", str(dirs["nnpack"]), "-B", str(work / "build"),
        "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_C_COMPILER={target.cc}", f"-DCMAKE_CXX_COMPILER={target.cxx}",
        f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}", f"-DCMAKE_ASM_FLAGS={flags}",
        "-DNNPACK_LIBRARY_TYPE=shared", f"-DNNPACK_BACKEND={target.nnpack_backend}",
        f"-DNNPACK_BUILD_TESTS={'OFF' if tests == 'none' else 'ON'}", "-DNNPACK_BUILD_BENCHMARKS=OFF",
        "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
        *[f"-D{n.upper()}_SOURCE_DIR={d}" for n, d in dirs.items() if n != "nnpack"],
    ]
    if not target.is_native:
        args += ["-DCMAKE_SYSTEM_NAME=Linux", f"-DCMAKE_SYSTEM_PROCESSOR={target.cmake_system_processor}",
                 f"-DCMAKE_CROSSCOMPILING_EMULATOR={';'.join(target.emulator)}"]
    else:  # Debian's python3-peachpy (already generated) and six
        debian_python = "/usr/lib/python3/dist-packages"
        args += ["-DPYTHON_EXECUTABLE=/usr/bin/python3", f"-DPYTHON_PEACHPY_SOURCE_DIR={debian_python}",
                 f"-DPYTHON_SIX_SOURCE_DIR={debian_python}"]
    env = {"CCACHE_DISABLE": "1"}
    seconds = timed(args, log, env)
    if "Downloading" in log.read_text():
        raise SystemExit(f"the upstream configure tried to download something; see {log}")
    seconds += timed(["cmake", "--build", str(work / "build"), "-j", str(jobs)], log, env)
    if tests == "quick":
        import yaml

        slow = yaml.safe_load((REPO / "recipes" / "nnpack" / "conandata.yml").read_text())["tests"]["slow_regex"]
        seconds += timed(["ctest", "--test-dir", str(work / "build"), "--parallel", str(jobs), "--no-tests=error",
                          "-E", slow], log, env)
    return seconds


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="arm64")
    parser.add_argument("--source-cache", default=str(default_home() / "sources"))
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--tests", choices=["none", "quick"], default="none",
                        help="none: build only; quick: also build and run NNPACK's quick tests on the target (both sides)")
    args = parser.parse_args()
    target = parse_target(args.arch)
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="nnpack-bench-") as tmp:
        work = Path(tmp)
        log = work / "bench.log"
        invoke = [sys.executable, "-m", "invoke", "nnpack", "--arch", target.name, "--tests", args.tests, "--no-ccache",
                  "--offline", "--home", str(work / "home"), "--source-cache", args.source_cache]
        cold = timed(invoke, log, {"CCACHE_DISABLE": "1"}, cwd=REPO)
        warm = timed(invoke, log, {"CCACHE_DISABLE": "1"}, cwd=REPO)
        upstream = upstream_build(target, Path(args.source_cache), work / "upstream", work / "upstream.log", jobs,
                                  args.tests)
    overhead = (cold - upstream) / upstream * 100
    results = {
        "target": target.name, "tests": args.tests, "host": cpu_name(), "cores": jobs,
        "cold_invoke_nnpack_s": round(cold, 1), "upstream_cmake_ninja_s": round(upstream, 1),
        "overhead_percent": round(overhead, 1), "noop_rerun_s": round(warm, 2),
        "goals": {"overhead_percent_below": 10, "noop_rerun_s_below": 3},
    }
    print(f"{'target':24}{target.name} (tests: {args.tests}; {cpu_name()}, {jobs} cores)")
    print(f"{'cold invoke nnpack':24}{cold:8.1f} s   (deps as Conan packages; smoke test unless tests none)")
    print(f"{'upstream CMake + Ninja':24}{upstream:8.1f} s   (deps in-tree)")
    print(f"{'overhead':24}{overhead:8.1f} %   (goal < 10 %)")
    print(f"{'no-op rerun':24}{warm:8.2f} s   (goal < 3 s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
