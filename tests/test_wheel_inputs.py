"""Bad wheels and a bad SOURCE_DATE_EPOCH through the CLI: refused before anything is installed."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import run_invoke
from nnpack_toolchain.targets import TARGETS

X86_NAME = "mxnet-1.9.1+nnpack.70a77f4-py3-none-manylinux_2_35_x86_64.whl"


def library_for(name: str, out: Path) -> Path:
    """A real shared library compiled by the target's cross compiler."""
    target = TARGETS[name]
    source = out / "f.c"
    source.write_text("int f(void) { return 42; }\n")
    library = out / f"libf-{name}.so"
    subprocess.run([target.cc, "-shared", "-fPIC", "-o", library, source], check=True)
    return library


def wheel_with(library: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mxnet/__init__.py", "")
        archive.write(library, "mxnet/libmxnet.so")
    return path


def smoke(wheel: Path, arch: str, home: Path):
    return run_invoke("smoke", "--arch", arch, "--wheel", str(wheel), "--home", str(home))


def test_a_renamed_wheel_is_refused_by_the_machine_of_its_libraries(tmp_path: Path) -> None:
    wheel = wheel_with(library_for("arm64", tmp_path), tmp_path / X86_NAME)
    proc = smoke(wheel, "x86_64", tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    assert "is tagged x86_64 but its mxnet/libmxnet.so is an ELF object for arm64" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "home" / "smoke").exists(), "nothing may be installed from a refused wheel"


def test_a_wheel_of_the_right_machine_passes_the_check(tmp_path: Path) -> None:
    from nnpack_toolchain.wheel import require_wheel_contents

    require_wheel_contents(wheel_with(library_for("x86_64", tmp_path), tmp_path / X86_NAME), TARGETS["x86_64"])


def test_a_truncated_wheel_is_refused(tmp_path: Path) -> None:
    whole = wheel_with(library_for("x86_64", tmp_path), tmp_path / "whole.whl").read_bytes()
    wheel = tmp_path / X86_NAME
    wheel.write_bytes(whole[: len(whole) // 2])
    proc = smoke(wheel, "x86_64", tmp_path / "home")
    assert proc.returncode == 2 and "is not a valid wheel" in proc.stderr, proc.stderr


def test_a_wheel_with_a_damaged_member_is_refused(tmp_path: Path) -> None:
    wheel = wheel_with(library_for("x86_64", tmp_path), tmp_path / X86_NAME)
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("mxnet/libmxnet.so")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # the member's data
    data[start + info.compress_size // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    proc = smoke(wheel, "x86_64", tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    assert "is not a valid wheel" in proc.stderr or "fails its CRC check" in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", ["yesterday", "100", "-5", "1.5e9"])
def test_an_invalid_source_date_epoch_is_refused(value: str, tmp_path: Path) -> None:
    proc = run_invoke("nnpack", "--arch", "arm64", "--home", str(tmp_path / "home"),
                      env={"SOURCE_DATE_EPOCH": value})
    assert proc.returncode == 2, proc.stderr
    assert "SOURCE_DATE_EPOCH must be whole seconds since 1970" in proc.stderr and repr(value) in proc.stderr
    assert not (tmp_path / "home").exists()
