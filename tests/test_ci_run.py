""".ci/run, the CI entry point: it stops before anything when the run cannot fit on the disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_run_stops_at_once_when_the_temporary_file_system_is_too_small(tmp_path: Path) -> None:
    # More GiB than any disk has: the run must refuse in one line, before the bootstrap starts,
    # and leave nothing under TMPDIR (its fresh directory is removed).
    env = {**os.environ, "TMPDIR": str(tmp_path), "NNTC_CI_MIN_FREE_GIB": str(2**40)}
    proc = subprocess.run(["bash", str(REPO / ".ci" / "run")], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"GiB free under {tmp_path}, the test run needs {2**40} GiB" in lines[0]
    assert "set TMPDIR" in lines[0]
    assert "bootstrap" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_passing_tests_temporary_directory_is_removed_with_the_projects_pytest_settings(tmp_path: Path) -> None:
    # A test's toolchain home holds GBs of compilers and sysroots; pytest keeps them by default
    # (three whole runs), which filled a CI machine's disk. With the project's settings a passing
    # test's directory goes when it ends and a failing one's stays for inspection.
    tests = tmp_path / "probe"
    tests.mkdir()
    (tests / "test_probe.py").write_text(
        "def test_passes(tmp_path):\n"
        "    (tmp_path / 'big').write_bytes(b'0' * 4096)\n"
        "    open(%r, 'a').write(str(tmp_path) + '\\n')\n\n"
        "def test_fails(tmp_path):\n"
        "    open(%r, 'a').write(str(tmp_path) + '\\n')\n"
        "    assert False\n" % (str(tmp_path / "seen"), str(tmp_path / "seen")))
    proc = subprocess.run(["python3", "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tests),
                           "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "base"), str(tests)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout  # one test fails on purpose
    passed, failed = (Path(p) for p in (tmp_path / "seen").read_text().split())
    assert passed.name.startswith("test_passes") and not passed.exists()
    assert failed.name.startswith("test_fails") and failed.exists()
