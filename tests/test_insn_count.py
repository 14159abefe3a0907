"""Guest instruction counts under QEMU (issue 14): QEMU's insn plugin, built from Debian's source
of the installed qemu-user, counts deterministically, over every thread, and names failures.

The loops are inline assembly of exactly 4 instructions per iteration (nop, nop, subs, branch),
so the count's growth with the iteration count is known without reading a disassembly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nnpack_toolchain import doctor, insn_count
from nnpack_toolchain.compilers import Compilers, ensure_compilers
from nnpack_toolchain.distros import DISTRIBUTIONS
from nnpack_toolchain.errors import ConfigurationError, MissingToolError
from nnpack_toolchain.insn_count import (InsnCountError, count_instructions, counted_argv, ensure_insn_plugin,
                                         parse_counts, run_counted)
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.target_env import PythonEnv
from nnpack_toolchain.targets import TARGETS

LOOP_BODY = 4
"""Instructions per iteration of spin() below, on both ARM targets."""
PROGRAM = r"""
#include <pthread.h>
#include <stdlib.h>
#ifdef __aarch64__
#define BRANCH "b.ne"
#else
#define BRANCH "bne"
#endif
static long per_thread;
static void spin(long n) {
  if (n > 0) __asm__ volatile("1: nop\n nop\n subs %0, %0, #1\n " BRANCH " 1b\n" : "+r"(n) : : "cc", "memory");
}
static void *work(void *arg) { (void)arg; spin(per_thread); return NULL; }
int main(int argc, char **argv) {
  long n = atol(argv[1]);
  int threads = argc > 2 ? atoi(argv[2]) : 0;  /* 0: the main thread spins */
  if (argc > 3) return atoi(argv[3]);          /* the exit code to fail with */
  if (threads == 0) { spin(n); return 0; }
  pthread_t ids[8];
  per_thread = n / threads;
  for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, work, NULL);
  for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
  return 0;
}
"""
ARM = ["arm64", "armv7"]


def test_parse_counts_takes_the_total_and_the_per_vcpu_lines() -> None:
    text = "detected repeat execution @ 0x4000\ncpu 0 insns: 95\ncpu 1 insns: 600\ntotal insns: 695\n"
    assert parse_counts(text) == (695, {0: 95, 1: 600})
    assert parse_counts("insns: 42\n") == (42, {})  # inline=on
    # A forked child that exits without exec prints first; the parent's count comes last.
    assert parse_counts("cpu 0 insns: 7\ntotal insns: 7\ncpu 0 insns: 9\ntotal insns: 9\n") == (9, {0: 9})
    assert parse_counts("qemu: something else\n") is None


def test_plugin_options_go_right_after_the_emulator(tmp_path: Path) -> None:
    env = PythonEnv(TARGETS["arm64"], DISTRIBUTIONS["debian12"], tmp_path / "root", tmp_path / "root/python3.11",
                    qemu="qemu-aarch64")  # the host's QEMU 7.2: the plugin's API
    argv = counted_argv([*env.argv, "-c", "pass"], Path("/h,1/libinsn.so"), tmp_path / "q.log")
    assert argv == ["qemu-aarch64", "-plugin", "/h,,1/libinsn.so", "-d", "plugin", "-D", str(tmp_path / "q.log"),
                    "-L", str(tmp_path / "root"), str(tmp_path / "root/python3.11"), "-c", "pass"]
    assert counted_argv(["qemu-arm", "prog"], Path("/p.so"), tmp_path / "q", inline=True)[2] == "/p.so,inline=on"
    with pytest.raises(ConfigurationError, match="needs a QEMU user-mode command"):
        counted_argv(["/usr/bin/python3", "-c", "pass"], Path("/p.so"), tmp_path / "q")


def test_missing_glib_names_its_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(insn_count, "missing_libraries", lambda: {"glib-2.0": "libglib2.0-dev"})
    with pytest.raises(MissingToolError, match=r"apt-get install -y libglib2.0-dev") as caught:
        ensure_insn_plugin(Settings(home=tmp_path))
    assert caught.value.exit_code == 3
    assert not list((tmp_path / "tools" / "qemu-plugins").glob("*/libinsn.so"))
    assert "libglib2.0-dev" in doctor.debian_packages() and "glib-2.0" in {c.tool for c in doctor.check()}


@pytest.fixture(scope="module")
def plugin(build_settings: Settings) -> Path:
    return ensure_insn_plugin(build_settings)


@pytest.fixture(scope="module", params=ARM)
def program(request: pytest.FixtureRequest, build_settings: Settings,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Compilers, Path]:
    target = TARGETS[request.param]
    compilers = ensure_compilers(target, build_settings)
    work = tmp_path_factory.mktemp(f"insn-{target.name}")
    (work / "spin.c").write_text(PROGRAM)
    subprocess.run([compilers.cc, *compilers.flags, *target.compiler_flags, "-O2", "-pthread", work / "spin.c",
                    "-o", work / "spin"], check=True, capture_output=True, text=True)
    return compilers, work / "spin"


def command(program: tuple[Compilers, Path], *args: object) -> list[str]:
    compilers, binary = program
    return [*compilers.emulator, str(binary), *map(str, args)]


@pytest.mark.network
@pytest.mark.slow
def test_plugin_is_built_once_from_the_installed_qemus_source(plugin: Path, build_settings: Settings) -> None:
    version = insn_count.installed_qemu_version()
    assert plugin == build_settings.home / "tools" / "qemu-plugins" / version / "libinsn.so"
    symbols = subprocess.run(["readelf", "--dyn-syms", "-W", plugin], capture_output=True, text=True,
                             check=True).stdout
    assert "qemu_plugin_install" in symbols and "qemu_plugin_version" in symbols
    mtime = plugin.stat().st_mtime_ns
    assert ensure_insn_plugin(build_settings) == plugin and plugin.stat().st_mtime_ns == mtime
    assert not list(plugin.parent.parent.glob(".partial-*")), "the build's temporary tree is gone"


@pytest.mark.network
@pytest.mark.slow
def test_counts_grow_by_the_loop_body_and_repeat(plugin: Path, program: tuple[Compilers, Path],
                                                 build_settings: Settings) -> None:
    n = 100_000  # 100000, 200000 and 300000 have as many digits: atol() costs the same
    counts = [count_instructions(command(program, k * n), build_settings) for k in (1, 2, 3)]
    first, second = counts[1] - counts[0], counts[2] - counts[1]
    print(f"{program[0].target.name}: counts {counts}, per iteration {first / n}")
    assert abs(first - LOOP_BODY * n) <= 0.001 * LOOP_BODY * n
    assert abs(second - first) <= 0.001 * first
    again = count_instructions(command(program, n), build_settings)
    assert abs(again - counts[0]) <= 0.001 * counts[0], (again, counts[0])
    # A single-threaded guest: the fast inline counter gives the same total.
    inline = count_instructions(command(program, n), build_settings, inline=True)
    assert abs(inline - counts[0]) <= 0.001 * counts[0], (inline, counts[0])


@pytest.mark.network
@pytest.mark.slow
def test_the_count_covers_every_thread(plugin: Path, program: tuple[Compilers, Path],
                                       build_settings: Settings) -> None:
    n = 2_000_000
    one = run_counted(command(program, n, 1), build_settings)
    two = run_counted(command(program, n, 2), build_settings)
    print(f"{program[0].target.name}: 1 thread {one.total} {one.per_vcpu}; 2 threads {two.total} {two.per_vcpu}")
    assert one.total > LOOP_BODY * n
    assert abs(two.total - one.total) <= 0.01 * one.total
    workers = sorted(two.per_vcpu.values())[-2:]  # the main thread only starts and joins them
    assert len(two.per_vcpu) == 3 and all(abs(w - LOOP_BODY * n / 2) <= 0.01 * LOOP_BODY * n / 2 for w in workers)
    again = run_counted(command(program, n, 2), build_settings)  # threads wait in futexes: tiny variation only
    assert abs(again.total - two.total) <= 0.001 * two.total, (again.total, two.total)


@pytest.mark.network
@pytest.mark.slow
def test_failures_are_named(plugin: Path, program: tuple[Compilers, Path], build_settings: Settings,
                            tmp_path: Path) -> None:
    with pytest.raises(InsnCountError, match=r"spin exited with code 3 under QEMU") as caught:
        count_instructions(command(program, 10, 0, 3), build_settings)
    assert caught.value.exit_code == 10
    compilers, _ = program
    missing = tmp_path / "missing-program"
    with pytest.raises(InsnCountError, match=rf"no program {missing} to count .*check the path"):
        count_instructions([*compilers.emulator, missing], build_settings)
    text = tmp_path / "not-a-program"
    text.write_text("hello\n")
    text.chmod(0o755)
    with pytest.raises(InsnCountError, match=r"QEMU gave no instruction count for not-a-program \(exit code 1, "
                                             r"nothing on stderr\): check that it is an executable for qemu-"):
        count_instructions([*compilers.emulator, text], build_settings)
