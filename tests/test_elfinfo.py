"""libatomic on armv7 (issue 13, MXNet #18536): the wheel stage's check finds a library that calls
`__atomic_*` without linking libatomic, on libraries built by Debian 11's real armhf compiler."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from nnpack_toolchain.compilers import ensure_compilers
from nnpack_toolchain.elfinfo import unlinked_atomics
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS

SOURCE = r"""
#include <stdint.h>
uint64_t counter;
uint64_t get(void) { return __atomic_load_n(&counter, __ATOMIC_SEQ_CST); }
void add(uint64_t x) { __atomic_fetch_add(&counter, x, __ATOMIC_SEQ_CST); }
"""
ARMV6 = ("-march=armv6", "-mfpu=vfp", "-mfloat-abi=hard", "-marm")
"""An ARM core without LDREXD/STREXD: GCC calls libatomic for 64-bit atomics."""


def needed(library: Path) -> str:
    return subprocess.run(["readelf", "-d", library], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def armv7_build(module_tmp: Callable[[str], Path]):
    home = Settings(home=module_tmp("atomics-home"))
    compilers = ensure_compilers(TARGETS["armv7"], home)
    work = module_tmp("atomics")
    (work / "atomics.c").write_text(SOURCE)

    def build(name: str, flags: tuple[str, ...], link: tuple[str, ...] = ()) -> Path:
        library = work / f"lib{name}.so"
        subprocess.run([compilers.cc, *compilers.flags, *flags, "-shared", "-fPIC", "-O2", "-o", library,
                        work / "atomics.c", *link], check=True, capture_output=True)
        return library

    return build


@pytest.mark.network
@pytest.mark.slow
def test_armv7_a_inlines_64_bit_atomics_so_nothing_is_linked(armv7_build) -> None:
    target = TARGETS["armv7"]
    library = armv7_build("v7", target.compiler_flags, target.mxnet_link_flags)
    assert unlinked_atomics(library.read_bytes()) == []
    assert "libatomic" not in needed(library), "--as-needed: libatomic is linked only when called"


@pytest.mark.network
@pytest.mark.slow
def test_calls_without_libatomic_are_found_and_the_targets_link_flags_fix_them(armv7_build) -> None:
    bare = armv7_build("v6", ARMV6)
    calls = unlinked_atomics(bare.read_bytes())
    assert "__atomic_load_8" in calls and "__atomic_fetch_add_8" in calls, calls
    linked = armv7_build("v6linked", ARMV6, TARGETS["armv7"].mxnet_link_flags)
    assert "libatomic.so.1" in needed(linked)
    assert unlinked_atomics(linked.read_bytes()) == []


def test_a_library_without_dynamic_atomics_is_clean(tmp_path: Path) -> None:
    """A host library (this Python's own libc is enough): no __atomic_* imports, nothing reported."""
    import ctypes.util

    libc = Path("/lib/x86_64-linux-gnu") / (ctypes.util.find_library("c") or "libc.so.6")
    if not libc.is_file():
        pytest.skip(f"no {libc} on this host")
    assert unlinked_atomics(libc.read_bytes()) == []


@pytest.mark.network
@pytest.mark.slow
def test_the_wheel_stage_refuses_unlinked_atomics_and_takes_linked_ones(armv7_build, tmp_path: Path) -> None:
    """libatomic.so.1 is on auditwheel's manylinux whitelist (the system provides it, like libstdc++):
    a library that links it gets a manylinux tag with libatomic not grafted."""
    from nnpack_toolchain.configure import BUILD_SYSROOT_PACKAGES
    from nnpack_toolchain.errors import VerificationError
    from nnpack_toolchain.sysroot import build_sysroot
    from nnpack_toolchain.wheel import WheelSpec, build_wheel

    target = TARGETS["armv7"]
    sysroot = build_sysroot(target, Settings(home=tmp_path / "home"), BUILD_SYSROOT_PACKAGES)
    package = Path(__file__).parent / "data" / "wheel_demo" / "nntc_wheel_demo"

    def spec(library: Path) -> WheelSpec:
        return WheelSpec(distribution="nntc-atomics", version="1.0", package_dir=package,
                         native_libraries=(library,), summary="t", license="MIT", readme="# t\n")

    out = tmp_path / "out"
    with pytest.raises(VerificationError, match=r"calls __atomic_fetch_add_8.*does not link libatomic"):
        build_wheel(spec(armv7_build("v6", ARMV6)), target, sysroot, out, tmp_path / "log")
    assert not out.exists() or not list(out.iterdir()), "a refused wheel was left behind"
    result = build_wheel(spec(armv7_build("v6linked", ARMV6, target.mxnet_link_flags)), target, sysroot, out,
                         tmp_path / "log")
    assert "manylinux_2_17_armv7l" in result.platform_tag and not result.grafted, result
    with zipfile.ZipFile(result.wheel) as archive:
        library = archive.read("nntc_wheel_demo/libv6linked.so")
    assert b"libatomic.so.1" in library and unlinked_atomics(library) == []
