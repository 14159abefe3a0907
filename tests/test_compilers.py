"""The base distributions' compilers (issue 13): Debian 11's GCC 10 for every target, unpacked in
the home, compiles C++ with threads and OpenMP that needs nothing newer than glibc 2.31 and
GLIBCXX 3.4.28 (manylinux_2_31), and runs on that release's libc (QEMU on ARM)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nnpack_toolchain.compilers import Compilers, compiler_packages, ensure_compilers
from nnpack_toolchain.distros import DISTRIBUTIONS, parse_distribution
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS

PROGRAM = r"""
#include <atomic>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <omp.h>
int main() {
  std::atomic<long long> total{0};
  std::mutex mutex;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { std::lock_guard<std::mutex> l(mutex); total += 1; });
  for (auto& t : threads) t.join();
  int sum = 0;
#pragma omp parallel for reduction(+ : sum) num_threads(2)
  for (int i = 1; i <= 100; ++i) sum += i;
  std::cout << "threads " << std::to_string(total.load()) << " omp " << sum << std::endl;
  return 0;
}
"""


def versions(binary: Path, prefix: str) -> list[tuple[int, ...]]:
    text = subprocess.run(["readelf", "-V", "-W", binary], capture_output=True, text=True, check=True).stdout
    found = {tuple(int(p) for p in v.split(".")) for v in re.findall(rf"\b{prefix}_([0-9.]+[0-9])\b", text)}
    return sorted(found)


def run_on_release(compilers: Compilers, binary: Path) -> subprocess.CompletedProcess[str]:
    target = compilers.target
    if compilers.emulator:
        command = [*compilers.emulator, str(binary)]
    else:  # the release's own loader and libraries, not the host's
        root = compilers.libc_root
        libdirs = f"{root}/lib/{target.gnu_triple}:{root}/usr/lib/{target.gnu_triple}"
        command = [str(root / "lib64" / "ld-linux-x86-64.so.2"), "--library-path", libdirs, str(binary)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_unknown_distribution_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown base distribution 'debian10'; choose one of "
                                                 r"debian11 \(bullseye, glibc 2.31\)"):
        parse_distribution("debian10")
    assert parse_distribution("bullseye") is DISTRIBUTIONS["debian11"]
    assert DISTRIBUTIONS["debian11"].manylinux == "manylinux_2_31"


def test_cross_package_names_follow_debian() -> None:
    names = compiler_packages(TARGETS["armv7"], DISTRIBUTIONS["debian11"])
    assert {"g++-10-arm-linux-gnueabihf", "libc6-dev-armhf-cross", "libstdc++-10-dev-armhf-cross"} <= set(names)
    assert "g++-10" in compiler_packages(TARGETS["x86_64"], DISTRIBUTIONS["debian11"])


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_debian11_compilers_give_glibc_2_31_programs(name: str, tmp_path: Path, build_settings: Settings) -> None:
    target = TARGETS[name]
    distribution = DISTRIBUTIONS["debian11"]
    compilers = ensure_compilers(target, build_settings)
    assert compilers.distribution == distribution  # the default base
    source = tmp_path / "program.cc"
    source.write_text(PROGRAM)
    binary = tmp_path / "program"
    subprocess.run([compilers.cxx, *compilers.flags, *target.compiler_flags, "-O2", "-pthread", "-fopenmp",
                    source, "-o", binary], check=True, capture_output=True, text=True)
    header = subprocess.run(["readelf", "-h", binary], capture_output=True, text=True, check=True).stdout
    assert target.elf_machine in header
    assert versions(binary, "GLIBC")[-1] <= (2, 31)
    assert versions(binary, "GLIBCXX")[-1] <= (3, 4, 28)
    proc = run_on_release(compilers, binary)
    assert proc.stdout.strip() == "threads 4 omp 5050", proc.stderr
    # The second call finds everything in place and downloads nothing.
    assert ensure_compilers(target, build_settings) == compilers
