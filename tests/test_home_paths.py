"""A toolchain home whose path has a space and non-ASCII characters, through a real NNPACK build."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import require_sources, run_invoke, shared_source_cache


@pytest.mark.slow
def test_a_home_with_a_space_and_non_ascii_characters_builds_nnpack(tmp_path: Path) -> None:
    require_sources("nnpack", "cpuinfo", "pthreadpool", "fxdiv", "fp16", "psimd", "googletest")
    home = tmp_path / "Ärger mit Leerzeichen" / "home ü ß"
    proc = run_invoke("nnpack", "--arch", "armv7", "--tests", "quick", "--home", str(home),
                      "--source-cache", str(shared_source_cache()))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads((home / "out" / "armv7" / "nnpack-result.json").read_text())
    library = Path(result["library"])
    assert library.is_relative_to(home) and library.is_file()
    header = subprocess.run(["readelf", "-h", library], capture_output=True, text=True, check=True).stdout
    assert "ARM" in header and "ELF32" in header
    assert result["tests"]["ran"] > 0 and result["tests"]["failed"] == 0, result["tests"]
