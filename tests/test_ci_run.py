""".ci/run, the CI entry point: it stops before anything when the run cannot fit on the disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnpack_toolchain.procgroup import run_group

REPO = Path(__file__).resolve().parents[1]


def run_ci(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """.ci/run in a process group of its own, stopped whole if it outlives a minute (had the check
    let it through, it would bootstrap and run the whole suite)."""
    return run_group(["bash", str(REPO / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)


def run_probe(tests: Path, base: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """pytest with the project's settings (pyproject.toml) on a probe directory of test files."""
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tests),
                           "-p", "no:cacheprovider", "--basetemp", str(base), str(tests)],
                          capture_output=True, text=True, timeout=120, check=False, env=env)


def test_ci_run_stops_at_once_when_the_temporary_file_system_is_too_small(tmp_path: Path) -> None:
    # More GiB than any disk has: the run must refuse in one line, before the bootstrap starts,
    # and leave nothing under TMPDIR (its fresh directory is removed).
    env = {**os.environ, "TMPDIR": str(tmp_path), "NNTC_CI_MIN_FREE_GIB": str(2**40)}
    proc = run_ci(env)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"GiB free under {tmp_path}, the test run needs {2**40} GiB" in lines[0]
    assert "set TMPDIR" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setting", ["12G", "-1", "1.5", str(2**64)])
def test_ci_run_refuses_a_free_space_setting_that_is_not_a_number(tmp_path: Path, setting: str) -> None:
    # `[ 12 -lt 12G ]` is an error, which `if` takes as false: the run would go on unchecked.
    env = {**os.environ, "TMPDIR": str(tmp_path), "NNTC_CI_MIN_FREE_GIB": setting}
    proc = run_ci(env)
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert proc.stderr == f"ci: NNTC_CI_MIN_FREE_GIB must be a whole number of GiB, not '{setting}'\n"
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
    proc = run_probe(tests, tmp_path / "base")
    assert proc.returncode == 1, proc.stdout  # one test fails on purpose
    passed, failed = (Path(p) for p in (tmp_path / "seen").read_text().split())
    assert passed.name.startswith("test_passes") and not passed.exists()
    assert failed.name.startswith("test_fails") and failed.exists()


def test_module_tmp_goes_with_its_module_unless_one_of_its_tests_failed(tmp_path: Path) -> None:
    # tmp_path_factory.mktemp in a module's fixture lives until the whole run ends (and here, with
    # --basetemp, after it): module_tmp (tests/tmpdirs.py) removes it when the module is done.
    tests = tmp_path / "probe"
    tests.mkdir()
    (tests / "conftest.py").write_text("from tmpdirs import module_tmp  # noqa: F401\n")
    module = ("import pytest\n\n"
              "@pytest.fixture(scope='module')\n"
              "def home(module_tmp, tmp_path_factory):\n"
              "    made, kept = module_tmp(__name__), tmp_path_factory.mktemp('kept')\n"
              "    open(%r, 'a').write(f'{__name__} {made} {kept}\\n')\n"
              "    return made\n\n"
              "def test_one(home):\n"
              "    (home / 'sysroot').write_bytes(b'0' * 4096)\n"
              "    assert %s\n\n"
              "def test_two(home):\n"
              "    assert (home / 'sysroot').exists()\n")
    seen = tmp_path / "seen"
    (tests / "test_a_passes.py").write_text(module % (str(seen), "True"))
    (tests / "test_b_fails.py").write_text(module % (str(seen), "False"))
    (tests / "test_c_after.py").write_text(
        "def test_a_is_gone_before_c_runs():\n"
        "    passed = [line.split() for line in open(%r) if line.startswith('test_a_passes')]\n"
        "    assert passed and not __import__('pathlib').Path(passed[0][1]).exists()\n" % str(seen))
    proc = run_probe(tests, tmp_path / "base", env={**os.environ, "PYTHONPATH": str(REPO / "tests")})
    assert proc.returncode == 1 and "1 failed, 4 passed" in proc.stdout, proc.stdout
    rows = {name: (Path(made), Path(kept)) for name, made, kept in (line.split() for line in seen.read_text().splitlines())}
    assert not rows["test_a_passes"][0].exists() and rows["test_a_passes"][1].exists()
    assert rows["test_b_fails"][0].is_dir() and (rows["test_b_fails"][0] / "sysroot").is_file()
