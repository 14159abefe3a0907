"""Bad option values through the real CLI: one clear line, an exit code, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_invoke


def refused(proc, code: int, *phrases: str) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr, proc.stderr


@pytest.mark.parametrize("task", ["nnpack", "mxnet", "build"])
@pytest.mark.parametrize(("value", "phrase"), [
    ("0", "--jobs must be at least 1, not 0"),
    ("-1", "--jobs must be at least 1, not -1"),
    ("x", "--jobs takes a whole number (1 or more), not 'x'"),
])
def test_bad_jobs_values_are_refused(task: str, value: str, phrase: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused(run_invoke(task, "--arch", "arm64", f"--jobs={value}", "--home", str(home)), 2, phrase)
    assert not home.exists(), "a refused option must not create the home"


def test_jobs_1_is_taken_as_a_number(tmp_path: Path) -> None:
    """The README's out-of-memory advice: --jobs 1 used to crash with a TypeError."""
    proc = run_invoke("nnpack", "--arch", "armv7", "--jobs", "1", "--offline", "--home", str(tmp_path / "home"),
                      "--source-cache", str(tmp_path / "empty"))
    refused(proc, 4, "sources missing from the source cache")  # got past option parsing to the sources step
    assert "tools.build:jobs" not in proc.stderr


def test_bad_tests_choice(tmp_path: Path) -> None:
    refused(run_invoke("nnpack", "--arch", "arm64", "--tests", "bogus", "--home", str(tmp_path / "h")), 2,
            "--tests must be one of quick, all, none, not 'bogus'")


def test_source_directory_that_does_not_exist(tmp_path: Path) -> None:
    refused(run_invoke("nnpack", "--arch", "arm64", "--source", "nnpack=/nonexistent", "--home", str(tmp_path / "h")),
            2, "--source nnpack=/nonexistent: not a directory")


def test_source_of_an_unknown_package(tmp_path: Path) -> None:
    proc = run_invoke("build", "--arch", "arm64", "--source", f"unknown={tmp_path}", "--home", str(tmp_path / "h"))
    refused(proc, 2, "--source names unknown package(s) unknown; packages: ", "nnpack", "mxnet")


def test_a_home_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    refused(run_invoke("nnpack", "--arch", "arm64", "--home", str(blocker / "home")), 2,
            f"toolchain home {blocker / 'home'} is not writable", "--home DIR")


def test_bad_numbers_of_check_model_and_bench(tmp_path: Path) -> None:
    refused(run_invoke("check-model", "zoo:alexnet", "--batch", "zero"), 2, "--batch takes a whole number")
    refused(run_invoke("bench", "--arch", "x86_64", "--iterations", "0", "--home", str(tmp_path / "h")), 2,
            "--iterations must be at least 1")


@pytest.mark.parametrize("keep_going", [False, True])
def test_keep_going_exit_code_and_report_through_the_cli(keep_going: bool, tmp_path: Path) -> None:
    """Both targets fail (offline, empty source cache): exit 1 either way; only --keep-going tries the second."""
    report = tmp_path / "report.json"
    proc = run_invoke("build", "--arch", "armv7,arm64", "--offline", "--home", str(tmp_path / "home"),
                      "--source-cache", str(tmp_path / "empty"), "--report", str(report),
                      *(["--keep-going"] if keep_going else []))
    assert proc.returncode == 1, proc.stderr
    targets = {t["target"]: {s["step"]: s["status"] for s in t["steps"]} for t in json.loads(report.read_text())["targets"]}
    assert targets["armv7"]["fetch"] == "failed"
    assert targets["arm64"]["fetch"] == ("failed" if keep_going else "not_run")
    assert set(targets["arm64"].values()) - {"failed", "not_run"} == set()


def test_from_git_without_a_directory_names_its_own_option(tmp_path: Path) -> None:
    refused(run_invoke("fetch", "--from-git", "nnpack", "--home", str(tmp_path / "h")), 2,
            "--from-git expects NAME=DIR, got 'nnpack'")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_check_model_help_is_help_not_a_model_file(flag: str) -> None:
    """invoke gives a missing required positional the next token, --help too: it was read as a model file."""
    proc = run_invoke("check-model", flag)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no such file" not in proc.stderr
    assert "Usage: inv[oke] [--core-opts] check-model" in proc.stdout and "--batch" in proc.stdout
