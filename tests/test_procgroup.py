"""A tool the toolchain runs is stopped with everything it forked: on a timeout, on Ctrl-C and on
SIGTERM or SIGHUP (a cancelled CI job, a closed terminal), so no make or counted guest goes on
writing after the toolchain left."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from nnpack_toolchain.procgroup import run_group, stop_group

SRC = Path(__file__).resolve().parents[1] / "src"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has stopped running)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def wait_for(path: Path, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"nothing in {path} after {seconds} s")


def gone_within(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def sleepers():
    """pids to SIGKILL at the end whatever happened (a failed test leaves no sleep behind)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def forks_a_sleeper(pidfile: Path, *, ignore_term: bool = False) -> list[str]:
    """A shell that prints a line, forks a long sleep (a grandchild of the caller) and waits for it."""
    trap = "trap '' TERM; " if ignore_term else ""
    return ["bash", "-c", f"{trap}echo started; sleep 300 & echo $! > {pidfile}; wait"]


def test_a_timeout_stops_the_grandchildren_too_and_keeps_what_was_printed(tmp_path: Path, sleepers) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_group(forks_a_sleeper(pidfile), timeout=8, capture_output=True, text=True)
    sleepers.append(int(wait_for(pidfile)))
    assert gone_within(sleepers[0]), "the forked sleep outlived the timeout (subprocess.run leaves it running)"
    assert "started" in (expired.value.stdout or "")


def test_a_finished_command_returns_like_subprocess_run() -> None:
    proc = run_group(["bash", "-c", "cat; echo err >&2; exit 3"], input="in\n", capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "in\n", "err\n")
    with pytest.raises(ValueError):
        run_group(["true"], input="x", stdin=subprocess.DEVNULL)


def test_members_get_their_grace_and_those_ignoring_sigterm_are_killed(tmp_path: Path, sleepers) -> None:
    """The leader dies at once on SIGTERM; one member cleans up for 0.5 s (it must be let finish),
    another ignores SIGTERM (it must be killed when the grace is over, not waited for)."""
    done, stubborn = tmp_path / "cleaned", tmp_path / "stubborn"
    script = (f"bash -c 'trap \"sleep 0.5; echo ok > {done}; exit 0\" TERM; while :; do sleep 0.1; done' & "
              f"bash -c 'trap \"\" TERM; sleep 300 & echo $! > {stubborn}; wait' & wait")
    proc = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    sleepers.append(int(wait_for(stubborn)))
    begin = time.monotonic()
    assert stop_group(proc, grace=4) == (None, None)
    took = time.monotonic() - begin
    assert done.is_file(), "a member was killed before the end of its SIGTERM clean-up"
    assert gone_within(sleepers[0], 2), "a member that ignores SIGTERM outlived the grace"
    assert 3.5 < took < 15, took
    assert proc.returncode is not None


TASK = """
import signal
import sys
from pathlib import Path
# as a process started from a terminal has them: a test run in the background (CI's `cmd &`) starts
# with SIGINT ignored, and Python then installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
from nnpack_toolchain.cli import reports_errors
from nnpack_toolchain.runner import run

@reports_errors
def task():
    run({argv!r}, log_path=Path({log!r}))
    print("runner.run returned")

task()
"""


def start_task(tmp_path: Path, argv: list[str]) -> subprocess.Popen[str]:
    """A task under cli.reports_errors running runner.run (what builds use), in its own process."""
    script = textwrap.dedent(TASK.format(argv=argv, log=str(tmp_path / "tool.log")))
    return subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(SRC)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_a_task_and_its_build_tools_with_it(tmp_path: Path, sleepers, signum: int) -> None:
    """To the Python process alone, as `kill PID`, a CI runner's cancel or a dropped ssh sends it."""
    pidfile = tmp_path / "pid"
    proc = start_task(tmp_path, forks_a_sleeper(pidfile))
    try:
        sleepers.append(int(wait_for(pidfile)))
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
        expected = 128 + signum if signum != signal.SIGINT else -signal.SIGINT  # Ctrl-C: Python dies of SIGINT
        assert proc.returncode == expected, output
        assert "runner.run returned" not in output
        assert gone_within(sleepers[0]), "the build tool's child outlived the toolchain"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_second_sigterm_does_not_cut_the_kill_short(tmp_path: Path, sleepers) -> None:
    """A tool that ignores SIGTERM, and an impatient second SIGTERM during the grace period."""
    pidfile = tmp_path / "pid"
    proc = start_task(tmp_path, forks_a_sleeper(pidfile, ignore_term=True))
    try:
        sleepers.append(int(wait_for(pidfile)))
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 143, output
        assert gone_within(sleepers[0]), "the tool outlived the toolchain after a second SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(not Path("/proc/self/autogroup").is_file(), reason="needs a kernel with scheduling autogroups "
                    "(/proc/self/autogroup; CONFIG_SCHED_AUTOGROUP)")
@pytest.mark.parametrize("how", ["nice", "autogroup"])
def test_a_niced_toolchain_runs_its_tools_niced(how: str) -> None:
    # A new session is a new autogroup: without carrying the niceness over, the tool's group would
    # compete at nice 0 with everything else, however niced the toolchain.
    lower = "os.nice(7)" if how == "nice" else "open('/proc/self/autogroup', 'w').write('7')"
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(SRC)!r})
        {lower}
        from nnpack_toolchain.procgroup import run_group
        done = run_group(["sh", "-c", "cat /proc/$$/autogroup; cat /proc/self/autogroup"], capture_output=True, text=True)
        print(done.stdout, end="")
        """)
    # its own session, so that its autogroup is not the test's
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         start_new_session=True)
    assert out.returncode == 0, out.stderr
    leader, child = out.stdout.splitlines()
    assert leader.endswith(" nice 7") and child == leader, out.stdout


def niced_toolchain(monkeypatch: pytest.MonkeyPatch, write_text: Any) -> None:
    """carry_niceness as in a toolchain at nice 5 whose tool's autogroup is at 0, its write faked."""
    from nnpack_toolchain import procgroup

    monkeypatch.setattr(procgroup.os, "nice", lambda increment: 5)
    monkeypatch.setattr(procgroup, "autogroup_nice", lambda pid="self": 0)
    monkeypatch.setattr(procgroup.Path, "write_text", write_text)


def test_an_autogroup_write_the_kernel_defers_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unprivileged, the kernel takes one autogroup write per 100 ms machine-wide and answers EAGAIN
    # to the others: a tool started right after another would stay at nice 0.
    from nnpack_toolchain import procgroup

    answers = [OSError(errno.EAGAIN, "Resource temporarily unavailable"), None]
    written, slept = [], []

    def write_text(path: Path, text: str) -> int:
        written.append((str(path), text))
        if (answer := answers.pop(0)) is not None:
            raise answer
        return len(text)

    niced_toolchain(monkeypatch, write_text)
    monkeypatch.setattr(procgroup.time, "sleep", slept.append)
    procgroup.carry_niceness(4242)
    assert written == [("/proc/4242/autogroup", "5")] * 2
    assert slept == [procgroup.AUTOGROUP_RETRY_SECONDS] and slept[0] >= 0.1


def test_an_autogroup_write_refused_for_good_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnpack_toolchain import procgroup

    written = []

    def write_text(path: Path, text: str) -> int:
        written.append(text)
        raise OSError(errno.EACCES, "Permission denied")

    niced_toolchain(monkeypatch, write_text)
    monkeypatch.setattr(procgroup.time, "sleep", lambda seconds: pytest.fail("slept after EACCES"))
    procgroup.carry_niceness(4242)
    assert written == ["5"]
