"""A tool the toolchain runs is stopped with everything it forked: on a timeout, on Ctrl-C and on
SIGTERM (a cancelled CI job), so no make or counted guest goes on writing after the toolchain left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nnpack_toolchain.procgroup import Terminated, run_group

SRC = Path(__file__).resolve().parents[1] / "src"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has stopped running)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def wait_for_pid(path: Path, seconds: float = 20) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"no pid in {path} after {seconds} s")


def gone_within(pid: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def forks_a_sleeper(pidfile: Path) -> list[str]:
    """A shell that prints a line, forks a long sleep (a grandchild of the caller) and waits for it."""
    return ["bash", "-c", f"echo started; sleep 300 & echo $! > {pidfile}; wait"]


def test_a_timeout_stops_the_grandchildren_too_and_keeps_what_was_printed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_group(forks_a_sleeper(pidfile), timeout=2, capture_output=True, text=True)
    sleeper = wait_for_pid(pidfile)
    try:
        assert gone_within(sleeper), "the forked sleep outlived the timeout (subprocess.run leaves it running)"
        assert "started" in (expired.value.stdout or "")
    finally:
        if alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)


def test_a_finished_command_returns_like_subprocess_run(tmp_path: Path) -> None:
    proc = run_group(["bash", "-c", "cat; echo err >&2; exit 3"], input="in\n", capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "in\n", "err\n")


def test_sigterm_stops_a_task_with_exit_143_and_its_build_tools_with_it(tmp_path: Path) -> None:
    """A task under cli.reports_errors running runner.run (what builds use); SIGTERM to the Python
    process alone, as `kill PID` or a CI runner's cancel sends it."""
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from nnpack_toolchain.cli import reports_errors
        from nnpack_toolchain.runner import run

        @reports_errors
        def task():
            run({forks_a_sleeper(pidfile)!r}, log_path=Path({str(tmp_path / "tool.log")!r}))
            print("runner.run returned")

        task()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(SRC)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sleeper = wait_for_pid(pidfile)
    try:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == Terminated.exit_code == 143, output
        assert "SIGTERM" in output and "runner.run returned" not in output
        assert gone_within(sleeper), "the build tool's child outlived the toolchain"
    finally:
        if alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
