"""The Invoke tasks as a user runs them: errors are one clear line and an exit code."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_invoke


def host_path_without(bin_dir: Path, missing: set[str]) -> str:
    """A PATH of one directory holding every command of this host's PATH except `missing`.

    python3 there is this interpreter itself (sys.executable, through a two-line wrapper): a pyenv
    shim would put pyenv's directories back on PATH, and a symlink to a venv's python loses the
    venv (its pyvenv.cfg is found next to the path it is started by).
    """
    bin_dir.mkdir()
    wrapper = bin_dir / "python3"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    for directory in [str(Path(sys.executable).parent), *os.environ["PATH"].split(os.pathsep)]:
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = bin_dir / entry.name
            if entry.name in missing or link.exists() or link.is_symlink() or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return str(bin_dir)


def invoke_with_path(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python3 -m invoke ARGS` as a user with this PATH starts it (python3 found on that PATH)."""
    return subprocess.run(["python3", "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PATH": path}, timeout=600)


def test_unknown_target_is_refused_with_the_valid_list(tmp_path):
    proc = run_invoke("nnpack", "--arch", "riscv64", "--home", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown target 'riscv64'" in proc.stderr
    assert "arm64 (also: aarch64" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_cross_compiler_names_the_debian_package(tmp_path):
    # This host's PATH without the ARM64 cross compilers and without QEMU for ARM64.
    path = host_path_without(tmp_path / "bin", {"aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "qemu-aarch64"})
    proc = invoke_with_path(path, "nnpack", "--arch", "arm64", "--home", str(tmp_path / "home"))
    assert proc.returncode == 3, proc.stderr
    assert "aarch64-linux-gnu-gcc" in proc.stderr and "qemu-aarch64" in proc.stderr
    assert "apt-get install -y g++-aarch64-linux-gnu gcc-aarch64-linux-gnu qemu-user" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_offline_with_empty_cache_fails_before_building(tmp_path):
    proc = run_invoke("nnpack", "--arch", "armv7", "--offline", "--home", str(tmp_path),
                      "--source-cache", str(tmp_path / "empty-cache"))
    assert proc.returncode == 4, proc.stderr
    assert "nnpack/0.0.0.cci.20230202" in proc.stderr and "3d8e1462a390dd0309924edbaefb15139d7135ee6be127cc82950b75bd9835bc" in proc.stderr
    assert not (tmp_path / "conan" / "p").exists(), "nothing may be built when sources are missing"


def test_bad_backend_and_bad_source_option(tmp_path):
    proc = run_invoke("nnpack", "--arch", "arm64", "--backend", "x86-64", "--home", str(tmp_path))
    assert proc.returncode == 2 and "not available for arm64" in proc.stderr
    proc = run_invoke("nnpack", "--arch", "arm64", "--source", "nnpack", "--home", str(tmp_path))
    assert proc.returncode == 2 and "NAME=DIR" in proc.stderr


DOCTOR_TOOLS = ("cmake", "ninja", "pkg-config", "ccache", "readelf", "git", "file", "gzip", "xz", "dpkg-source",
                "patch", "make", "python3", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++", "arm-linux-gnueabihf-gcc",
                "arm-linux-gnueabihf-g++", "qemu-arm", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "qemu-aarch64",
                "conan", "meson", "invoke")
"""Every tool the README's setup installs and the pipeline runs (doctor must check each one)."""


def doctor_lines(stderr: str) -> dict[str, str]:
    """tool -> 'ok' or 'missing', from doctor's table."""
    rows = (line.split() for line in stderr.splitlines())
    return {row[1]: row[0] for row in rows if len(row) >= 3 and row[0] in ("ok", "missing")}


def test_doctor_passes_on_a_host_with_every_tool(tmp_path):
    proc = invoke_with_path(host_path_without(tmp_path / "bin", set()), "doctor")
    assert proc.returncode == 0, proc.stderr
    found = doctor_lines(proc.stderr)
    assert {tool: found.get(tool) for tool in DOCTOR_TOOLS} == {tool: "ok" for tool in DOCTOR_TOOLS}, proc.stderr
    assert "missing" not in found.values() and "fix:" not in proc.stderr


def test_doctor_names_the_package_of_a_missing_tool(tmp_path):
    proc = invoke_with_path(host_path_without(tmp_path / "bin", {"qemu-arm", "ninja"}), "doctor")
    assert proc.returncode == 3, proc.stderr
    found = doctor_lines(proc.stderr)
    assert found["qemu-arm"] == "missing" and found["ninja"] == "missing"
    assert {tool for tool, state in found.items() if state == "missing"} == {"qemu-arm", "ninja"}
    assert "apt-get install qemu-user" in proc.stderr and "apt-get install ninja-build" in proc.stderr
    assert "fix: invoke setup" in proc.stderr


def test_every_task_option_has_a_usable_flag():
    """invoke picks short flags from an option's letters; it took '-' from "no-layers" (bench showed `--, --no-layers`)."""
    sys.path.insert(0, str(REPO))
    import tasks

    from invoke import Task

    broken = [(name, names) for name, task in vars(tasks).items() if isinstance(task, Task)
              for names in (argument.names for argument in task.get_arguments())
              if any(not flag.strip("-") or not flag[0].isalnum() for flag in names)]
    assert not broken, broken
