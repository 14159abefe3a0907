"""Bad input to `invoke fetch`, through the CLI: one line saying what to do, an exit code, and
nothing written (no source cache, no log, no half-imported archive)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import run_invoke
from nnpack_toolchain.sources import load_pins

NNPACK_COMMIT = "70a77f485e8b934224f3a79efd8edcd84cd377b8"  # recipes/nnpack/conandata.yml


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git = ["git", "-C", str(path), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    (path / "README").write_text("not NNPACK\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "unrelated"], check=True)
    return path


def test_unknown_package(tmp_path):
    home = tmp_path / "home"
    result = run_invoke("fetch", "--package", "nope", "--home", str(home))
    assert result.returncode == 2
    packages = ", ".join(load_pins())
    assert error_line(result) == f"error: unknown package nope (--package/--from-git); pinned packages: {packages}"
    assert files_under(home) == []


@pytest.mark.parametrize("kind", ["missing", "plain", "inside-a-work-tree", "without-the-commit"])
def test_from_git_that_is_not_a_clone_of_the_pinned_commit(tmp_path, kind):
    home = tmp_path / "home"
    directory = {
        "missing": tmp_path / "nowhere",
        "plain": tmp_path / "plain",
        "inside-a-work-tree": tmp_path / "other" / "src",  # git -C would find the repository above it
        "without-the-commit": tmp_path / "other",
    }[kind]
    if kind == "plain":
        directory.mkdir()
    if kind in ("inside-a-work-tree", "without-the-commit"):
        git_repo(tmp_path / "other")
        (tmp_path / "other" / "src").mkdir()
    result = run_invoke("fetch", "--from-git", f"nnpack={directory}", "--home", str(home))
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    given = f"error: --from-git nnpack={directory}: "
    clone = "give a git clone of https://github.com/Maratyszcza/NNPACK"
    expected = {
        "missing": f"{given}no such directory; {clone}",
        "plain": f"{given}not a git repository (no .git in it); {clone}",
        "inside-a-work-tree": f"{given}not a git repository (no .git in it); {clone}",
        "without-the-commit": f"{given}the repository lacks the pinned commit {NNPACK_COMMIT}; fetch it "
                              f"('git -C {directory} fetch https://github.com/Maratyszcza/NNPACK {NNPACK_COMMIT}') "
                              "or give another clone",
    }[kind]
    assert line == expected
    assert files_under(home) == []  # checked before anything was fetched: no cache, no log


def test_from_git_for_a_package_without_a_github_archive(tmp_path):
    home = tmp_path / "home"
    result = run_invoke("fetch", "--from-git", f"six={git_repo(tmp_path / 'six')}", "--home", str(home))
    assert result.returncode == 2
    assert error_line(result) == ("error: --from-git six: six/1.16.0 has no GitHub commit archive to rebuild from "
                                  "git; fetch it with 'invoke fetch --package six'")
    assert files_under(home) == []
