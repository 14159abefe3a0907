"""Running external tools with their full output appended to a log file."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from .errors import BuildError, ToolchainError
from .procgroup import run_group

FOLLOW_POLL_SECONDS = 0.25


class LineFollower(Protocol):
    """Sees a tool's output line by line as it streams into the log (e.g. to show progress)."""

    def start(self, argv: Sequence[str], cwd: Path | None, env: Mapping[str, str]) -> None:
        """Called before the tool starts (may run a quick query such as `make -n`)."""

    def line(self, text: str) -> None:
        """One line of output (without its newline), in order; every line is seen exactly once."""

    def finish(self, ok: bool) -> None:
        """The tool ended (ok: exit code 0); also called when the run is interrupted."""


class _LogTail(threading.Thread):
    """Reads what the tool appends to the log from `offset` on and hands each line to a follower."""

    def __init__(self, log_path: Path, offset: int, follower: LineFollower) -> None:
        super().__init__(name=f"follow {log_path.name}", daemon=True)
        self.log_path, self.offset, self.follower = log_path, offset, follower
        self.done = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        pending = b""
        with open(self.log_path, "rb") as stream:
            stream.seek(self.offset)
            while True:
                finished = self.done.is_set()  # read before the last read: nothing written is missed
                chunk = stream.read()
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for raw in lines:
                        self._feed(raw)
                elif finished:
                    break
                else:
                    self.done.wait(FOLLOW_POLL_SECONDS)
        if pending:
            self._feed(pending)

    def _feed(self, raw: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self.follower.line(raw.decode("utf-8", errors="replace").rstrip("\r"))
        except Exception as exc:  # a progress display never fails a build
            self.failure = exc

    def stop(self) -> None:
        self.done.set()
        self.join()


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    error: type[ToolchainError] = BuildError,
    what: str | None = None,
    input_text: str | None = None,
    progress: LineFollower | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv; append its output to log_path; raise `error` (with the log path) on failure.

    `progress` follows the output as it reaches the log (the log keeps all of it).
    """
    args = [str(a) for a in argv]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {shlex.join(args)}\n")
        if cwd:
            log.write(f"# in {cwd}\n")
        log.flush()
        start = log.tell()
        tail = _start_following(progress, args, cwd, full_env, log_path, start)
        ok = False
        try:  # output streams into the log file, so a long build can be followed with tail -f
            proc = run_group(
                args,
                cwd=cwd,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                input=input_text,
                stdin=None if input_text is not None else subprocess.DEVNULL,
            )
            ok = proc.returncode == 0
        except FileNotFoundError as exc:
            raise error(f"{what or args[0]}: command not found: {args[0]}", log_path=log_path) from exc
        finally:
            failure = _stop_following(progress, tail, ok)
        if failure is not None:
            log.write(f"# progress display stopped: {type(failure).__name__}: {failure}\n")
        log.write(f"# exit code {proc.returncode}\n")
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as stream:
            stream.seek(start)
            lines = [line for line in stream.read().strip().splitlines() if not line.startswith("# progress ")]
            last = "\n".join(lines[-16:-1])
        raise error(
            f"{what or args[0]} failed (exit code {proc.returncode}). Last lines:\n{last}",
            log_path=log_path,
        )
    return proc


def _start_following(progress: LineFollower | None, args: list[str], cwd: Path | None, env: Mapping[str, str],
                     log_path: Path, offset: int) -> _LogTail | None:
    if progress is None:
        return None
    try:
        progress.start(args, cwd, env)
    except Exception as exc:  # no progress then, but the tool still runs
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"# progress display off: {type(exc).__name__}: {exc}\n")
        return None
    tail = _LogTail(log_path, offset, progress)
    tail.start()
    return tail


def _stop_following(progress: LineFollower | None, tail: _LogTail | None, ok: bool) -> BaseException | None:
    """Let the follower see the last lines, then close it; returns what went wrong in it, if anything."""
    if progress is None:
        return None
    if tail is not None:
        tail.stop()
    try:
        progress.finish(ok)
    except Exception as exc:
        return tail.failure if tail is not None and tail.failure else exc
    return tail.failure if tail is not None else None


def capture(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None) -> str:
    """Run a quick query command and return its stdout (raises CalledProcessError on failure)."""
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ).stdout
