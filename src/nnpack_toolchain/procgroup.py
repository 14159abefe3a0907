"""Long-running tools in their own process group, taken down whole when the toolchain stops.

A build's make forks compilers; a counted guest under QEMU forks children (each a host process).
`subprocess.run` kills only its direct child on a timeout or an interrupt, so those grandchildren
would go on writing into a build tree or burning a core after the toolchain has gone. `run_group`
starts the command as the leader of a new session and, if the toolchain stops waiting for any
reason (timeout, Ctrl-C, SIGTERM or SIGHUP turned into `Terminated`), `stop_group` sends the whole
group SIGTERM, gives it a grace period (reading its output meanwhile), then sends SIGKILL to what
is left, and reaps the leader before the exception goes on. A caller that runs tools from worker
threads (only the main thread gets signals) stops them all with `stop_running`.

A new session is also a new scheduling autogroup (Linux with CONFIG_SCHED_AUTOGROUP, the default
of Debian's and Ubuntu's kernels), and autogroups share the CPU fairly whatever their processes'
nice values: `nice -n 19 invoke ...` would still take a whole core from everything else (measured:
a niced QEMU count took 96 % of a core while the two compilers of a nice-5 build shared the other).
`run_group` therefore gives the new autogroup the toolchain's own niceness (`carry_niceness`).

Being a session of its own, the group does not get the terminal's signals: Ctrl-C, a closed
terminal and SIGTERM reach the toolchain, which passes them on as above; to pause a run, stop the
tools themselves (e.g. `pkill -STOP -f qemu-aarch64`), not only the toolchain's process.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GRACE_SECONDS = 5.0
UNWINDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_running: set[subprocess.Popen[Any]] = set()
"""The groups run_group is waiting on, in any thread (stop_running)."""
_running_lock = threading.Lock()


class Terminated(KeyboardInterrupt):
    """The toolchain got SIGTERM (a CI job cancelled, `kill`) or SIGHUP (its terminal closed): it
    unwinds like Ctrl-C and exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def run_group(argv: Any, *, timeout: float | None = None, input: str | bytes | None = None,
              capture_output: bool = False, grace: float = GRACE_SECONDS, **popen: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(argv, ...) with the command leading its own process group (see the module).
    On a timeout, TimeoutExpired carries what the command printed before it was stopped."""
    if capture_output:
        if "stdout" in popen or "stderr" in popen:
            raise ValueError("stdout and stderr may not be used with capture_output")
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    if input is not None:
        if "stdin" in popen:
            raise ValueError("stdin and input may not both be used")
        popen["stdin"] = subprocess.PIPE
    with subprocess.Popen(argv, start_new_session=True, **popen) as proc:
        carry_niceness(proc.pid)
        with _running_lock:
            _running.add(proc)
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            expired.stdout, expired.stderr = stop_group(proc, grace)
            raise
        except BaseException:
            stop_group(proc, grace)
            raise
        finally:
            with _running_lock:
                _running.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def autogroup_nice(pid: int | str = "self") -> int | None:
    """The nice value of a process's autogroup (/proc/PID/autogroup: "/autogroup-25 nice 0"), None
    without autogroups."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


# Without CAP_SYS_ADMIN the kernel takes one autogroup write per 100 ms, machine-wide, and answers
# EAGAIN to the others (kernel/sched/autogroup.c): two cells started together would leave the
# second at nice 0. A refused write is tried again after the interval, a few times.
AUTOGROUP_RETRY_SECONDS = 0.11
AUTOGROUP_TRIES = 5


def carry_niceness(pid: int) -> None:
    """Give the autogroup of pid (a new session's leader) the niceness the toolchain runs with: its
    own nice value or its autogroup's, whichever is higher. Best effort: nothing without autogroups,
    and a kernel that refuses for good (a negative value needs privileges) leaves the group as it is."""
    own = max(os.nice(0), autogroup_nice() or 0)
    if own <= 0 or autogroup_nice(pid) is None:
        return
    for attempt in range(AUTOGROUP_TRIES):
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(own))
            return
        except OSError as error:
            if error.errno != errno.EAGAIN or attempt == AUTOGROUP_TRIES - 1:
                return
            time.sleep(AUTOGROUP_RETRY_SECONDS)


def stop_group(proc: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> tuple[Any, Any]:
    """SIGTERM to proc's whole process group; up to `grace` seconds for all of it to end (its output
    read meanwhile, so nothing blocks on a full pipe); SIGKILL to whatever is left; the leader reaped.
    A second Ctrl-C or SIGTERM meanwhile is ignored: it cannot cut the SIGKILL short. Returns the
    output read (None where not captured)."""
    with signals_held():
        try:
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            output = _read_until(proc, deadline)
            _wait_gone([proc.pid], deadline)  # members' own clean-up
        finally:
            _signal_group(proc.pid, signal.SIGKILL)
        if output is None:
            output = _read_until(proc, time.monotonic() + grace)
        if output is None:  # a process outside the group (it left it) still holds the pipes
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait()
            output = (None, None)
    return output


def stop_running(grace: float = GRACE_SECONDS) -> int:
    """SIGTERM to every group run_group is waiting on in any thread, up to `grace` seconds for them to
    end, SIGKILL to what is left; the threads' own run_group calls then return (and reap). For a
    caller whose tools run in worker threads, which never see Ctrl-C or SIGTERM. Returns how many
    groups were signalled."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _signal_group(proc.pid, signal.SIGTERM)
    _wait_gone([proc.pid for proc in procs], time.monotonic() + grace)
    for proc in procs:
        _signal_group(proc.pid, signal.SIGKILL)
    return len(procs)


def _read_until(proc: subprocess.Popen[Any], deadline: float) -> tuple[Any, Any] | None:
    try:
        return proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def _wait_gone(pgids: list[int], deadline: float) -> None:
    """Until every group of pgids has ended, or the deadline."""
    while any(_group_alive(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass


@contextmanager
def _handlers(signums: Iterable[int], handler: Any) -> Iterator[None]:
    """handler for each of signums within the block, the previous ones restored after it."""
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP do nothing within the block (main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _handlers((signal.SIGINT, *UNWINDING_SIGNALS), signal.SIG_IGN):
        yield


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block (main thread only), SIGTERM and SIGHUP raise Terminated, so clean-ups and
    run_group's group kill run instead of the process vanishing with its tools still running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Terminated(signum)

    # a signal ignored on purpose (nohup, a supervisor) stays ignored
    with _handlers([signum for signum in UNWINDING_SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN], _raise):
        yield
