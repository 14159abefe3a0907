"""Toolchain homes with unusual paths: spaces work through a real NNPACK build; non-ASCII
characters are refused up front with what to do (Debian 12's pkg-config, pkgconf 1.8.1, escapes
every non-ASCII byte with a backslash, and Meson then fails to decode the flags of the NNPACK
test package: "'utf-8' codec can't decode byte 0xc3")."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import require_sources, run_invoke, shared_source_cache


@pytest.mark.slow
def test_a_home_with_spaces_builds_nnpack_and_runs_its_tests(tmp_path: Path) -> None:
    require_sources("nnpack", "cpuinfo", "pthreadpool", "fxdiv", "fp16", "psimd", "googletest")
    home = tmp_path / "my builds" / "home with spaces"
    proc = run_invoke("nnpack", "--arch", "armv7", "--tests", "quick", "--home", str(home),
                      "--source-cache", str(shared_source_cache()))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads((home / "out" / "armv7" / "nnpack-result.json").read_text())
    library = Path(result["library"])
    assert library.is_relative_to(home) and library.is_file()
    header = subprocess.run(["readelf", "-h", library], capture_output=True, text=True, check=True).stdout
    assert "ARM" in header and "ELF32" in header
    assert result["tests"]["ran"] > 0 and result["tests"]["failed"] == 0, result["tests"]


def test_a_home_with_non_ascii_characters_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    home = tmp_path / "Ärger" / "home ü ß"
    proc = run_invoke("nnpack", "--arch", "armv7", "--home", str(home))
    assert proc.returncode == 2, proc.stderr
    assert "has non-ASCII characters (Ä, ü, ß)" in proc.stderr and "--home DIR" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "Ärger").exists()
