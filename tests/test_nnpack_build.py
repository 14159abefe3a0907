"""NNPACK for every target from the pinned sources: builds, test suites, artifacts, reruns.

Marked slow (a few minutes per target on 2 cores); skipped, naming the missing source, when the
source cache lacks NNPACK's pinned archive.
"""

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import require_sources, run_invoke, shared_source_cache
from nnpack_toolchain.errors import PatchError
from nnpack_toolchain.nnpack import build_nnpack, pins_for_backend
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.sources import load_pins
from nnpack_toolchain.targets import TARGETS

pytestmark = pytest.mark.slow


# The fast backend's kernels, by the names NNPACK's sources give them (PeachPy's AVX2/FMA3 kernels
# on x86-64, the NEON intrinsics and, on ARMv7, the aarch32 assembly kernels), and suffixes of the
# kernels of backends that must not be in the library.
FAST_KERNELS = {
    "x86_64": {"nnp_sgemm_only_4x24__fma3", "nnp_conv1x1_only_2x4__fma3", "nnp_fft8x8_with_offset_and_stream__avx2",
               "nnp_maxpool_2x2_2x2__avx2", "nnp_relu__avx2"},
    "armv7": {"nnp_sgemm_only_6x8__aarch32_neon", "nnp_s4gemm_only_3x3__aarch32_neon", "nnp_sgemm_only_6x8__neon",
              "nnp_conv1x1_only_4x4__neon"},
    "arm64": {"nnp_sgemm_only_6x8__neon", "nnp_conv1x1_only_4x4__neon", "nnp_s4gemm_only_3x3__neon"},
}
FOREIGN_KERNELS = {"x86_64": ("__psimd", "__neon", "__scalar"), "armv7": ("__fma3", "__avx2", "__scalar"),
                   "arm64": ("__aarch32_neon", "__fma3", "__avx2", "__scalar")}
SPAWN_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty"}
_spawn_records: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if _spawn_records and event in SPAWN_EVENTS:
        _spawn_records[-1].append(f"{event} {args[1] if event == 'subprocess.Popen' else args[:2]}")


sys.addaudithook(_audit)  # records only inside processes_started()


@contextmanager
def processes_started() -> Iterator[list[str]]:
    """Every process this Python process starts inside the block (an audit hook: no import style escapes it)."""
    started: list[str] = []
    _spawn_records.append(started)
    try:
        yield started
    finally:
        _spawn_records.remove(started)


def exported_functions(library: str) -> set[str]:
    """Functions libnnpack.so defines in its dynamic symbol table, as readelf lists them."""
    listing = subprocess.run(["readelf", "--dyn-syms", "-W", library], capture_output=True, text=True,
                             check=True).stdout
    return {f[7].split("@")[0] for f in (line.split() for line in listing.splitlines())
            if len(f) >= 8 and f[3] == "FUNC" and f[6] != "UND"}


def require_all_sources(target):
    require_sources(*[p.name for p in pins_for_backend(target.nnpack_backend)])


@pytest.mark.parametrize("target_name", ["arm64", "armv7", "x86_64"])
def test_nnpack_builds_and_passes_its_tests_on_target(target_name, build_settings):
    target = TARGETS[target_name]
    require_all_sources(target)
    result = build_nnpack(target, build_settings)
    assert not result.up_to_date
    file_output = subprocess.run(["file", "-L", result.library], capture_output=True, text=True).stdout
    assert {"x86_64": "x86-64", "armv7": "ARM, EABI5", "arm64": "ARM aarch64"}[target_name] in file_output
    assert "shared object" in file_output
    # NNPACK's quick test suite ran on the target and passed; the list is kept in the result.
    assert result.tests.ran == 16 and result.tests.failed == 0, result.tests
    assert "convolution-inference-smoketest" in result.tests.names
    headers = {p.name for d in result.include_dirs for p in Path(d).iterdir()}
    assert {"nnpack.h", "pthreadpool.h"} <= headers
    assert result.backend == {"x86_64": "x86-64", "armv7": "neon", "arm64": "neon"}[target_name]  # README
    functions = exported_functions(result.library)
    assert FAST_KERNELS[target_name] <= functions, sorted(FAST_KERNELS[target_name] - functions)
    foreign = sorted(f for f in functions if f.endswith(FOREIGN_KERNELS[target_name]))
    assert not foreign, f"kernels of another backend in the {target_name} library: {foreign}"
    assert any("nnpack/0.0.0.cci.20230202" in line and "verified" in line for line in result.sources)
    # A second run with nothing changed does no work: it starts no process (no Conan, CMake, Ninja,
    # make, compiler or QEMU) and does not even open the step's log again.
    log = build_settings.logs_dir / f"nnpack-{target_name}.log"
    log_before = log.read_text()
    with processes_started() as started:
        again = build_nnpack(target, build_settings)
    assert started == [], started
    assert again.up_to_date and again.library_sha256 == result.library_sha256
    assert log.read_text() == log_before


def test_tampered_tarball_is_refused_and_dropped(tmp_path):
    require_sources("nnpack")
    pin = load_pins()["nnpack"]
    cache = tmp_path / "cache"
    shutil.copytree(shared_source_cache(), cache)
    tarball = cache / "s" / pin.mirrors[0].sha256
    tarball.write_bytes(tarball.read_bytes()[:-100])  # truncated
    proc = run_invoke("nnpack", "--arch", "arm64", "--offline", "--home", str(tmp_path / "home"),
                      "--source-cache", str(cache))
    assert proc.returncode == 4, proc.stderr
    assert "sha256 mismatch" in proc.stderr and pin.mirrors[0].sha256 in proc.stderr
    assert not tarball.exists(), "the bad file must not stay in the cache"
    assert not (tmp_path / "home" / "conan" / "p").exists(), "nothing may be built"


def test_patch_that_no_longer_applies_names_patch_and_file(tmp_path, build_settings):
    require_all_sources(TARGETS["arm64"])
    # A local NNPACK tree whose CMakeLists.txt no longer matches the ADD_TEST patch.
    pin = load_pins()["nnpack"]
    tree = tmp_path / "NNPACK"
    tree.mkdir()
    subprocess.run(["tar", "-xzf", str(shared_source_cache() / "s" / pin.mirrors[0].sha256), "-C", str(tree),
                    "--strip-components=1"], check=True)
    cmake = tree / "CMakeLists.txt"
    cmake.write_text(cmake.read_text().replace("ADD_TEST(convolution-inference-smoketest",
                                               "ADD_TEST(renamed-smoketest"))
    settings = Settings(home=build_settings.home, source_cache=build_settings.source_cache,
                        local_sources={"nnpack": tree})
    with pytest.raises(PatchError) as info:
        build_nnpack(TARGETS["arm64"], settings)
    assert "0001-add-test-name-command-form.patch" in info.value.message
    assert "CMakeLists.txt" in info.value.message
    assert info.value.log_path and info.value.log_path.is_file()
