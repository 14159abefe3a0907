"""The wheel's on-board benchmark (`python3 -m mxnet.nnpack_bench`) and `invoke bench --import`.

Host side (default run): the packed files are self-contained (no nnpack_toolchain on the board),
device facts are read from /proc texts written here by hand, the options, the correctness rule and
the JSON format agree with invoke bench's; --import renders good files and refuses bad ones with one
line and exit code 2. On the target (marker mxnet_build: needs a wheel in $NNTC_MXNET_BUILD_HOME,
skips naming it): the real wheel plus the benchmark package runs under QEMU for arm64 and armv7.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import MXNET_BUILD_HOME, run_invoke
from nnpack_toolchain import bench, bench_report
from nnpack_toolchain.errors import ToolchainError
from nnpack_toolchain.model_zoo import MODELS
from nnpack_toolchain.mxnet_wheel import BENCH_PACKAGE, bench_files
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.target_scripts import nnpack_bench
from nnpack_toolchain.targets import TARGETS
from nnpack_toolchain.wheel import WheelSpec, stage_package

RPI4_CPUINFO = "".join(f"""processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

""" for i in range(4)) + """Hardware\t: BCM2835
Revision\t: c03114
Serial\t\t: 10000000deadbeef
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
ARMV7_CPUINFO = "".join(f"processor\t: {i}\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nFeatures\t: half thumb "
                        "fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n\n"
                        for i in range(4)) + "Hardware\t: BCM2711\nRevision\t: c03111\n"
X86_CPUINFO = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC 7B13\n"
               "flags\t\t: fpu vme de pse avx2\n\n")


def board_json(**changes: object) -> dict:
    """What nnpack_bench writes on a board (values chosen here)."""
    data = {
        "format": "nnpack-bench", "version": 1, "source": "board", "target": "arm64",
        "wheel": "mxnet-1.9.1+nnpack.70a77f4", "host_cpu": "Raspberry Pi 4 Model B Rev 1.4", "cores": 4,
        "emulated": False, "threads": 4, "iterations": 5, "batches": [1], "correctness_only": False,
        "device": {"machine": "aarch64", "mem_total_bytes": 3884096 * 1024, "glibc": "glibc 2.36",
                   "python": "3.11.2", "numpy": "1.24.2"},
        "networks": [{"network": "resnet18", "batch": 1, "seconds": {"never": 0.1, "always": 0.125, "auto": 0.04},
                      "images_per_second": {"never": 10.0, "always": 8.0, "auto": 25.0},
                      "images_per_second_range": {"never": [9.0, 11.0], "always": [7.5, 8.5], "auto": [24.0, 26.0]},
                      "threads": "4", "peak_rss_bytes": 300 << 20}],
        "layers": [], "thread_sweep": [], "checks": [], "memory": [], "errors": [],
        "auto_choices": [{"network": "resnet18", "batch": 1, "layer_shape": "Convolution 1,64,56,56,64,3,3,1,1,1,1",
                          "transforms": 1, "chosen": "NNPACK wt8x8 precompute",
                          "ms": {"MXNet": 9.5, "NNPACK wt8x8 precompute": 3.25}}],
        "started": "2026-12-04T10:00:00Z", "finished": "2026-12-04T10:05:00Z",
    }
    data.update(changes)
    return data


# The files packed into the wheel --------------------------------------------------------------------


def test_the_packed_benchmark_needs_nothing_of_the_toolchain(tmp_path: Path) -> None:
    """Staged as the wheel stage does it, under a stand-in `mxnet` package, in a Python without
    site-packages (so without nnpack_toolchain): the zoo builds every network, the entry point imports."""
    package = tmp_path / "src" / "mxnet"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    spec = WheelSpec(distribution="mxnet", version="1.9.1", package_dir=package, native_libraries=(),
                     summary="", license="Apache-2.0", readme="# x\n", extra_files=bench_files())
    staging = tmp_path / "staging"
    staging.mkdir()
    stage_package(spec, staging, tmp_path / "log")
    staged = staging / "mxnet" / BENCH_PACKAGE
    assert sorted(p.name for p in staged.iterdir()) == ["__init__.py", "__main__.py", "bench_models.py", "errors.py",
                                                        "model_zoo.py", "nnpack_layers.py"]
    assert {p.stat().st_mode & 0o777 for p in staged.iterdir()} == {0o644}
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "try:\n    import nnpack_toolchain\nexcept ImportError:\n    print('no toolchain')\n"
            "from mxnet.nnpack_bench import model_zoo, FORMAT\n"
            "print(FORMAT, [(n, len(f()['nodes'])) for n, f in model_zoo.MODELS.items()])\n")
    proc = subprocess.run([sys.executable, "-S", "-E", "-c", code, str(staging)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = [(name, len(build()["nodes"])) for name, build in MODELS.items()]
    assert proc.stdout == f"no toolchain\nnnpack-bench {expected}\n"


def test_board_and_toolchain_agree_on_the_format_and_the_rules() -> None:
    assert (nnpack_bench.FORMAT, nnpack_bench.FORMAT_VERSION) == (bench.BENCH_FORMAT, bench.BENCH_FORMAT_VERSION)
    assert nnpack_bench.CHECK_TOLERANCE == bench.CHECK_TOLERANCE
    assert nnpack_bench.POLICIES == bench.POLICIES
    checks = [{"network": "alexnet", "batch": 1, "rel_err": {"never": 0.0, "always": 1.1e-3},
               "nnpack_calls": {"convolution": 5}},
              {"network": "vgg16", "batch": 1, "rel_err": {"never": 0.0, "always": 0.9e-3},
               "nnpack_calls": {"convolution": 0}}]
    assert nnpack_bench.check_failures(checks) == ["alexnet batch 1: max rel. difference 1.1e-03",
                                                   "no convolution ran on NNPACK"]
    assert nnpack_bench.check_failures(checks) == bench.check_failures(checks)


# Device facts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cpuinfo", "tree", "expected"), [
    (RPI4_CPUINFO, "", "Raspberry Pi 4 Model B Rev 1.4, CPU implementer 0x41 part 0xd08"),
    (RPI4_CPUINFO, "Raspberry Pi 4 Model B Rev 1.5\0", "Raspberry Pi 4 Model B Rev 1.5, CPU implementer 0x41 part 0xd08"),
    (ARMV7_CPUINFO, "", "BCM2711, ARMv7 Processor rev 3 (v7l)"),
    (X86_CPUINFO, "", "AMD EPYC 7B13"),
])
def test_the_device_is_named_from_proc_cpuinfo(cpuinfo: str, tree: str, expected: str) -> None:
    assert nnpack_bench.cpu_model(cpuinfo, tree) == expected


def test_memory_and_emulation_from_proc() -> None:
    assert nnpack_bench.mem_total_bytes("MemFree: 12 kB\nMemTotal:        3884096 kB\n") == 3977314304
    assert nnpack_bench.mem_total_bytes("") is None
    assert nnpack_bench.emulated("aarch64", X86_CPUINFO) is True
    assert nnpack_bench.emulated("aarch64", RPI4_CPUINFO) is False
    assert nnpack_bench.emulated("armv7l", ARMV7_CPUINFO) is False
    assert nnpack_bench.emulated("x86_64", X86_CPUINFO) is False


# Options and tables ------------------------------------------------------------------------------------


def test_options() -> None:
    models = list(MODELS)
    args = nnpack_bench.parse_args([], models)
    assert (args.networks, args.batches, args.passes, args.correctness) == (models, (1, 2, 4, 8), 5, False)
    args = nnpack_bench.parse_args(["--correctness", "--networks", "alexnet, resnet18"], models)
    assert (args.networks, args.batches) == (["alexnet", "resnet18"], (1,))
    args = nnpack_bench.parse_args(["--batches", "2,16", "--passes", "9", "--threads", "3"], models)
    assert (args.batches, args.passes, args.threads) == ((2, 16), 9, 3)
    for bad in (["--networks", "lenet"], ["--batches", "0"], ["--batches", "one"], ["--passes", "0"]):
        with pytest.raises(SystemExit) as raised:
            nnpack_bench.parse_args(bad, models)
        assert raised.value.code == 2


def test_the_board_prints_invoke_benchs_columns_with_the_spread() -> None:
    data = board_json()
    text = nnpack_bench.network_table(data)
    header = text.splitlines()[1].split("  ")
    assert [h.strip() for h in header if h.strip()] == ["network", "batch", "MXNet (OpenBLAS)", "NNPACK always",
                                                       "NNPACK auto", "always / MXNet", "auto / MXNet", "peak RSS MiB"]
    row = text.splitlines()[3]
    assert row.split() == ["resnet18", "1", "10.00", "(9.00-11.00)", "8.00", "(7.50-8.50)", "25.00", "(24.00-26.00)",
                           "0.80x", "2.50x", "300"]
    choices = nnpack_bench.choices_table(data).splitlines()[3]
    assert "Convolution 1,64,56,56,64,3,3,1,1,1,1" in choices and "wt8x8 precompute 3.25" in choices


# invoke bench --import ----------------------------------------------------------------------------------


def write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_import_renders_the_board_next_to_the_toolchains_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    measured = board_json(source="toolchain", host_cpu="QEMU", target="arm64", networks=[],
                          checks=[{"network": "resnet18", "batch": 1, "rel_err": {"never": 0.0, "always": 2e-6},
                                   "nnpack_calls": {"convolution": 21, "pooling": 0, "fully_connected": 1}}])
    (home / "out" / "arm64" / "bench").mkdir(parents=True)
    write(home / "out" / "arm64" / "bench" / "bench.json", measured)
    proc = run_invoke("bench", "--import", str(write(tmp_path / "pi4.json", board_json())), "--arch", "aarch64",
                      "--home", str(home))
    assert proc.returncode == 0, proc.stderr
    assert "0.80x" in proc.stderr and "2.50x" in proc.stderr  # always / MXNet = 8/10, auto / MXNet = 25/10
    assert "24.00-26.00" in proc.stderr and "300" in proc.stderr
    assert "checked correctness under QEMU only" in proc.stderr and "2.0e-06" in proc.stderr
    assert (home / "out" / "arm64" / "bench" / "board-pi4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_compares_ratios_with_the_toolchains_timings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    ours = board_json(target="x86_64", host_cpu="Board CPU")
    theirs = board_json(target="x86_64", host_cpu="Build CPU", source="toolchain",
                        networks=[{**ours["networks"][0], "images_per_second": {"never": 10.0, "always": 30.0,
                                                                                "auto": 40.0}}])
    (settings.output_dir("x86_64") / "bench").mkdir(parents=True)
    write(settings.output_dir("x86_64") / "bench" / "bench.json", theirs)
    from rich.console import Console

    table = bench_report.comparison_table(ours, theirs)
    console = Console(width=200, record=True)
    console.print(table)
    row = [line for line in console.export_text().splitlines() if "resnet18" in line][0]
    assert [c.strip() for c in row.strip("│ ").split("│")] == ["resnet18", "1", "0.80x", "3.00x", "2.50x", "4.00x"]
    shown = bench_report.show_import(write(tmp_path / "b.json", ours), None, settings)
    assert shown["measured"] == str(settings.output_dir("x86_64") / "bench" / "bench.json")


@pytest.mark.parametrize(("content", "arch", "message"), [
    (None, None, "no such file"),
    ("{not json", None, "is not JSON"),
    ([1, 2], None, "is not a benchmark result (format 'list'"),
    ({"format": "mxnet-nnpack-tuning", "version": 1}, None, "is not a benchmark result (format 'mxnet-nnpack-tuning'"),
    (board_json(version=2), None, "format version 2; this toolchain reads version 1"),
    (board_json(networks=[{"network": "alexnet", "batch": 1, "images_per_second": {"never": 1.0}}]), None,
     "malformed networks"),
    (board_json(checks={}), None, "malformed checks"),
    (board_json(target="sparc"), None, "unknown target 'sparc'"),
    (board_json(), "armv7", "was measured on arm64, not armv7"),
])
def test_import_refuses_bad_files_in_one_line(content: object, arch: str | None, message: str, tmp_path: Path) -> None:
    path = tmp_path / "board.json"
    if content is not None:
        write(path, content)
    with pytest.raises(ToolchainError) as raised:  # ConfigurationError; an unknown target: UnknownTargetError
        bench_report.load_import(path, arch)
    assert raised.value.exit_code == 2
    assert message in raised.value.message and "\n" not in raised.value.message


def test_invoke_bench_import_exits_2_with_one_line(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.json", write(tmp_path / "text.json", "hello")):
        proc = run_invoke("bench", "--import", str(path), "--home", str(tmp_path / "home"))
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --import"), proc.stderr
    assert not (tmp_path / "home" / "out").exists()


# On the target, under QEMU (needs a real wheel) -----------------------------------------------------------


def built_wheel(name: str) -> Path:
    """The wheel of target `name` in $NNTC_MXNET_BUILD_HOME (default: the user's home); skip when absent."""
    result = MXNET_BUILD_HOME / "out" / name / "wheel-result.json"
    if not result.is_file():
        pytest.skip(f"no {name} wheel in {MXNET_BUILD_HOME / 'out' / name} (invoke wheel --arch {name}, after "
                    "invoke mxnet: over an hour)")
    wheel = Path(json.loads(result.read_text())["wheel"])
    if not wheel.is_file():
        pytest.skip(f"{wheel} is gone (invoke wheel --arch {name})")
    return wheel


def with_bench(wheel: Path, out_dir: Path) -> Path:
    """`wheel` with the benchmark package added as the wheel stage adds it (for a wheel built before it)."""
    from wheel.wheelfile import WheelFile

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp)
        for record in Path(tmp).glob("*.dist-info/RECORD"):
            record.unlink()
        shutil.rmtree(Path(tmp) / "mxnet" / BENCH_PACKAGE, ignore_errors=True)
        for relative, source in bench_files():
            (Path(tmp) / "mxnet" / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, Path(tmp) / "mxnet" / relative)
        with WheelFile(out_dir / wheel.name, "w") as packed:
            packed.write_files(tmp)
    return out_dir / wheel.name


@pytest.fixture(scope="module")
def target_home(module_tmp: Callable[[str], Path]) -> Settings:
    return Settings(home=module_tmp("board-bench-home"))


def installed(name: str, home: Settings, tmp_path: Path):
    from nnpack_toolchain.target_env import python_env

    env = python_env(TARGETS[name], home)
    site = tmp_path / "site"
    env.install_wheel(with_bench(built_wheel(name), tmp_path / "wheel"), site, tmp_path / "log")
    return env, {"PYTHONPATH": str(site)}


@pytest.mark.mxnet_build
@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", ["arm64", "armv7"])
def test_the_wheels_benchmark_checks_nnpack_under_qemu(name: str, target_home: Settings, tmp_path: Path) -> None:
    """`python3 -m mxnet.nnpack_bench --correctness` on the target's Python (Debian 12, under QEMU) passes for
    every network and writes a JSON that invoke bench --import renders; with NNPACK's initialisation
    forced to fail it must fail (nothing ran on NNPACK)."""
    env, extra = installed(name, target_home, tmp_path)
    out = tmp_path / "board.json"
    proc = env.run(["-m", "mxnet.nnpack_bench", "--correctness", "--json", out], extra_env=extra, timeout=7200)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert (data["format"], data["version"], data["target"], data["correctness_only"]) == ("nnpack-bench", 1, name, True)
    assert [(c["network"], c["batch"]) for c in data["checks"]] == [(n, 1) for n in MODELS]
    for check in data["checks"]:
        assert check["rel_err"]["never"] == 0.0 and 0 <= check["rel_err"]["always"] <= bench.CHECK_TOLERANCE, check
        assert check["peak_rss_bytes"] > 100 << 20
    assert data["checks"][-1]["nnpack_calls"]["convolution"] > 0
    device = data["device"]
    assert device["machine"] == {"arm64": "aarch64", "armv7": "armv7l"}[name]
    assert (device["glibc"], device["numpy"].split(".")[:2], device["nnpack"]) == ("glibc 2.36", ["1", "24"], True)
    assert device["mxnet_wheel"].startswith("1.9.1+nnpack.") and device["mem_total_bytes"] > 0
    shown = run_invoke("bench", "--import", str(out), "--arch", name, "--home", str(tmp_path / "home"))
    assert shown.returncode == 0 and "correctness" in shown.stderr, shown.stderr
    failing = env.run(["-m", "mxnet.nnpack_bench", "--correctness", "--networks", "alexnet"],
                      extra_env={**extra, "MXNET_NNPACK_FORCE_INIT_FAILURE": "1"}, timeout=3600)
    assert failing.returncode == 1 and "FAILED: no convolution ran on NNPACK" in failing.stderr, failing.stderr[-3000:]


@pytest.mark.mxnet_build
@pytest.mark.network
@pytest.mark.slow
def test_the_wheels_benchmark_times_the_three_policies_under_qemu(target_home: Settings, tmp_path: Path) -> None:
    """The timing path (one process per cell, started with NNPACK_BENCH_PYTHON: an emulated Python cannot
    exec itself) on arm64: AlexNet at batch 1, one timed pass (minutes: the auto policy's tuning)."""
    env, extra = installed("arm64", target_home, tmp_path)
    out = tmp_path / "board.json"
    proc = env.run(["-m", "mxnet.nnpack_bench", "--networks", "alexnet", "--batches", "1", "--passes", "1",
                    "--threads", "2", "--json", out],
                   extra_env={**extra, "NNPACK_BENCH_PYTHON": shlex.join(env.argv)}, timeout=7200)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (row,) = data["networks"]
    assert (row["network"], row["batch"], row["threads"], data["errors"]) == ("alexnet", 1, "2", [])
    for policy in bench.POLICIES:
        (sample,) = row["samples"][policy]
        assert row["images_per_second"][policy] == pytest.approx(1 / sample)
        assert row["images_per_second_range"][policy] == pytest.approx([1 / sample, 1 / sample])
    assert row["peak_rss_bytes"] > 200 << 20
    shapes = {c["layer_shape"] for c in data["auto_choices"]}
    assert "Convolution 1,3,224,224,96,11,11,4,4,0,0" in shapes, shapes  # AlexNet's conv1, as MXNet keys it
    assert all(c["chosen"] in c["ms"] or c["chosen"].startswith("NNPACK") for c in data["auto_choices"])
    assert "auto / MXNet" in proc.stdout
