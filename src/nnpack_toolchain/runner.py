"""Running external tools with their full output appended to a log file."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import BuildError, ToolchainError


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    error: type[ToolchainError] = BuildError,
    what: str | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv; append its output to log_path; raise `error` (with the log path) on failure."""
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
        try:  # output streams into the log file, so a long build can be followed with tail -f
            proc = subprocess.run(
                args,
                cwd=cwd,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                input=input_text,
                stdin=None if input_text is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise error(f"{what or args[0]}: command not found: {args[0]}", log_path=log_path) from exc
        log.write(f"# exit code {proc.returncode}\n")
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as stream:
            stream.seek(start)
            tail = "\n".join(stream.read().strip().splitlines()[-16:-1])
        raise error(
            f"{what or args[0]} failed (exit code {proc.returncode}). Last lines:\n{tail}",
            log_path=log_path,
        )
    return proc


def capture(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None) -> str:
    """Run a quick query command and return its stdout (raises CalledProcessError on failure)."""
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ).stdout
