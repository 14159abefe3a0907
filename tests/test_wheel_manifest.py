"""Where two wheels differ, file by file and section by section (src/nnpack_toolchain/wheel_manifest.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from nnpack_toolchain.wheel_manifest import compare, load, main, manifest


def library(tmp_path: Path, text: str) -> bytes:
    """A real shared library (the host's gcc) whose read-only data holds `text`."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc on this machine (invoke setup installs it)")
    source = tmp_path / f"lib-{text}.c"
    source.write_text(f'const char *banner(void) {{ return "{text}"; }}\nint twice(int x) {{ return 2 * x; }}\n')
    out = tmp_path / f"lib-{text}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wl,--build-id=none", "-o", out, source], check=True)
    return out.read_bytes()


def wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_a_difference_is_named_by_file_and_by_elf_section(tmp_path: Path) -> None:
    one, other = library(tmp_path, "session seventeen"), library(tmp_path, "session eighteen!")
    assert len(one) == len(other) and one != other  # same size, other bytes: what session 18 saw
    first = wheel(tmp_path / "a-1.0-py3-none-any.whl", {"pkg/__init__.py": b"x = 1\n", "pkg/lib.so": one,
                                                         "pkg/gone.py": b""})
    second = wheel(tmp_path / "b-1.0-py3-none-any.whl", {"pkg/__init__.py": b"x = 2\n", "pkg/lib.so": other,
                                                          "pkg/new.py": b""})
    lines = compare(manifest(first), manifest(second))
    assert lines[:2] == ["only in a-1.0-py3-none-any.whl: pkg/gone.py", "only in b-1.0-py3-none-any.whl: pkg/new.py"]
    assert lines[2] == "differs: pkg/__init__.py (6 vs 6 bytes)"
    (elf_line,) = [line for line in lines if "pkg/lib.so" in line]
    assert ".rodata" in elf_line and ".text" not in elf_line and ".dynsym" not in elf_line, elf_line
    assert compare(manifest(first), manifest(first)) == []
    assert manifest(first)["files"]["pkg/__init__.py"].get("sections") is None  # not an ELF file


def test_the_command_writes_a_manifest_and_compares_it_with_a_wheel(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    one = library(tmp_path, "same")
    first = wheel(tmp_path / "a-1.0-py3-none-any.whl", {"pkg/lib.so": one})
    kept = tmp_path / "kept.json"
    assert main([str(first), "--write", str(kept)]) == 0
    assert load(kept) == manifest(first)
    assert main([str(kept), str(first)]) == 0 and "same bytes" in capsys.readouterr().out
    second = wheel(tmp_path / "b-1.0-py3-none-any.whl", {"pkg/lib.so": library(tmp_path, "diff")})
    assert main([str(kept), str(second)]) == 1 and "differs: pkg/lib.so" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"files": {}}))
    assert main([str(tmp_path / "bad.json"), str(first)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a wheel manifest" in err
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    assert main([str(tmp_path / "broken.whl")]) == 2 and "not a wheel" in capsys.readouterr().err
