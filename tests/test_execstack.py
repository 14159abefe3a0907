"""Libraries asking for an executable stack (glibc 2.41 refuses to load them): found, cleared in the
wheel, and the wheel still loads on Debian 13 (armv7, as Debian 11's armhf OpenBLAS did)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from nnpack_toolchain.configure import BUILD_SYSROOT_PACKAGES
from nnpack_toolchain.distros import DISTRIBUTIONS
from nnpack_toolchain.elfinfo import requests_executable_stack
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.sysroot import build_sysroot
from nnpack_toolchain.target_env import python_env
from nnpack_toolchain.targets import TARGETS
from nnpack_toolchain.wheel import build_wheel, clear_executable_stacks
from test_wheel import compile_demo, demo_spec

SOURCE = "int answer(void) { return 42; }\n"


def host_library(tmp_path: Path, name: str, *flags: str) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("needs the host's gcc (Debian package gcc)")
    source = tmp_path / "answer.c"
    source.write_text(SOURCE)
    library = tmp_path / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", library, source, *flags], check=True)
    return library


def test_the_executable_stack_request_is_read_from_the_program_headers(tmp_path: Path) -> None:
    asks = host_library(tmp_path, "libasks.so", "-Wl,-z,execstack")
    plain = host_library(tmp_path, "libplain.so", "-Wl,-z,noexecstack")
    assert requests_executable_stack(asks.read_bytes())
    assert not requests_executable_stack(plain.read_bytes())
    subprocess.run(["patchelf", "--clear-execstack", asks], check=True)
    assert not requests_executable_stack(asks.read_bytes())


def make_wheel(tmp_path: Path, libraries: dict[str, Path]) -> Path:
    """A wheel written as auditwheel writes one (its own dir2zip after rewrite_record): directory
    entries, the files' own modes, RECORD last; not by the code under test's packer."""
    from auditwheel.tools import dir2zip
    from auditwheel.wheeltools import rewrite_record

    tree = tmp_path / "tree"
    (tree / "demo").mkdir(parents=True)
    (tree / "demo" / "__init__.py").write_text("X = 1\n")
    (tree / "demo.libs").mkdir()
    for arcname, library in libraries.items():
        shutil.copy(library, tree / arcname)
        (tree / arcname).chmod(0o755)
    info = tree / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                "Tag: py3-none-linux_x86_64\n")
    rewrite_record(tree)
    (info / "RECORD").chmod(0o600)
    wheel = tmp_path / "demo-1.0-py3-none-linux_x86_64.whl"
    dir2zip(tree, wheel, zipfile.ZIP_DEFLATED, datetime(2022, 5, 10, tzinfo=timezone.utc))
    return wheel


def test_clearing_changes_only_the_flagged_library_and_keeps_every_entry(tmp_path: Path, monkeypatch) -> None:
    from wheel.wheelfile import WheelFile

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1652140800")
    asks = host_library(tmp_path, "libasks.so", "-Wl,-z,execstack")
    plain = host_library(tmp_path, "libplain.so", "-Wl,-z,noexecstack")
    wheel = make_wheel(tmp_path, {"demo.libs/libasks.so": asks, "demo/libplain.so": plain})
    with zipfile.ZipFile(wheel) as before:
        old = {i.filename: (i.external_attr, i.date_time, i.compress_type, before.read(i)) for i in before.infolist()}
    assert any(name.endswith("/") for name in old), "the input has no directory entries to keep"

    assert clear_executable_stacks(wheel, tmp_path / "log") == ["demo.libs/libasks.so"]

    with WheelFile(wheel) as after:  # reading checks every file against RECORD's sha256 and size
        new = {i.filename: (i.external_attr, i.date_time, i.compress_type, after.read(i.filename))
               for i in after.infolist()}
    assert list(new) == list(old), "entries or their order changed"
    changed = sorted(name for name in new if new[name][3] != old[name][3])
    assert changed == ["demo-1.0.dist-info/RECORD", "demo.libs/libasks.so"]
    assert all(new[n][:3] == old[n][:3] for n in new), "modes, timestamps or compression changed"
    assert not requests_executable_stack(new["demo.libs/libasks.so"][3])
    old_record, new_record = (r[3].decode().splitlines() for r in (old["demo-1.0.dist-info/RECORD"],
                                                                   new["demo-1.0.dist-info/RECORD"]))
    assert [a == b for a, b in zip(old_record, new_record)].count(False) == 1, "only the library's line changes"
    again = wheel.read_bytes()
    assert clear_executable_stacks(wheel, tmp_path / "log") == []
    assert wheel.read_bytes() == again, "a wheel with nothing to clear was rewritten"


def test_no_stack_header_means_executable_except_on_aarch64(tmp_path: Path) -> None:
    """Assembly without .note.GNU-stack gives no PT_GNU_STACK: glibc's default stack is executable on
    x86-64 and ARMv7, not on AArch64."""
    library = host_library(tmp_path, "libplain.so", "-Wl,-z,noexecstack").read_bytes()
    elf = ELFFile(io.BytesIO(library))
    offset = elf.header["e_phoff"] + next(i for i, seg in enumerate(elf.iter_segments())
                                          if seg["p_type"] == "PT_GNU_STACK") * elf.header["e_phentsize"]
    without = bytearray(library)
    without[offset:offset + 4] = struct.pack("<I", 0x6474E552)  # PT_GNU_STACK -> PT_GNU_RELRO's type: no stack header
    assert requests_executable_stack(bytes(without))
    aarch64 = bytearray(without)
    aarch64[18:20] = struct.pack("<H", 183)  # e_machine EM_AARCH64
    assert not requests_executable_stack(bytes(aarch64))


@pytest.mark.network
@pytest.mark.slow
def test_an_armv7_library_asking_for_an_executable_stack_loads_on_debian_13(tmp_path: Path) -> None:
    """Debian 13's glibc 2.41 refused the armv7 wheel's OpenBLAS ("cannot enable executable stack as
    shared object requires"); the same request made by the demo library must be cleared by build_wheel."""
    target, home = TARGETS["armv7"], Settings(home=tmp_path / "home")
    library = compile_demo(target, home, tmp_path / "lib", extra_flags=("-Wl,-z,execstack",))
    assert requests_executable_stack(library.read_bytes())
    sysroot = build_sysroot(target, home, BUILD_SYSROOT_PACKAGES)
    result = build_wheel(demo_spec(library), target, sysroot, tmp_path / "out", tmp_path / "log")
    assert result.execstack_cleared == ["nntc_wheel_demo/libnntcdemo.so"]
    env = python_env(target, home, DISTRIBUTIONS["debian13"])
    env.install_wheel(Path(result.wheel), tmp_path / "site", tmp_path / "log")
    proc = env.run(["-c", "import nntc_wheel_demo as d; print(d.describe())"],
                   extra_env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr
    assert "'norm_3_4': 5.0" in proc.stdout, proc.stdout
