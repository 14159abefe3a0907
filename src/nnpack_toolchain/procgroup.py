"""Long-running tools in their own process group, taken down whole when the toolchain stops.

A build's make forks compilers; a counted guest under QEMU forks children (each a host process).
`subprocess.run` kills only its direct child on a timeout or an interrupt, so those grandchildren
would go on writing into a build tree or burning a core after the toolchain has gone. `run_group`
starts the command as the leader of a new session and, if the toolchain stops waiting for any
reason (timeout, Ctrl-C, SIGTERM turned into `Terminated`), sends the whole group SIGTERM, then
SIGKILL after a grace period, and reaps the leader before re-raising.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

GRACE_SECONDS = 10.0


class Terminated(KeyboardInterrupt):
    """The toolchain got SIGTERM (a CI job cancelled, `kill`): unwinds like Ctrl-C, exit code 143."""

    exit_code = 128 + signal.SIGTERM


def run_group(argv: Sequence[str | os.PathLike[str]], *, timeout: float | None = None,
              input: str | bytes | None = None, capture_output: bool = False, grace: float = GRACE_SECONDS,
              **popen: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(argv, ...) with the command leading its own process group (see the module)."""
    if capture_output:
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    with subprocess.Popen(argv, start_new_session=True, **popen) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            stop_group(proc, grace)
            expired.stdout, expired.stderr = proc.communicate()  # what it printed before it was stopped
            raise
        except BaseException:
            stop_group(proc, grace)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def stop_group(proc: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to proc's whole process group, SIGKILL to what is left after `grace` seconds."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers that ignored SIGTERM, and the leader if still there
    proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block (main thread only), SIGTERM raises Terminated, so cleanups and run_group's
    group kill run instead of the process vanishing with its tools still running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
