"""Step logging: one line when a step starts and one when it ends, with target and time.

Full tool output never goes to the terminal: it goes to a per-step log file, whose path is
printed when the step fails.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .errors import ToolchainError

console = Console(stderr=True, highlight=False, soft_wrap=True, force_terminal=None if sys.stderr.isatty() else False)


@dataclass
class Step:
    stage: str
    target: str
    log_path: Path
    started: float
    note: str = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def info(message: str) -> None:
    console.print(f"  {escape(message)}")


def warn(message: str) -> None:
    console.print(f"  [yellow]warning:[/yellow] {escape(message)}")


@contextmanager
def step(stage: str, target: str, what: str, log_dir: Path) -> Iterator[Step]:
    """Announce `what` for `target`, time it, and attach a fresh log file to it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{stage}-{target}.log"
    log_path.write_text(f"# {stage} [{target}]: {what}\n# started {time.ctime()}\n")
    current = Step(stage, target, log_path, time.monotonic())
    console.print(f"[bold blue]>>[/bold blue] {stage} {escape(f'[{target}]')}: {escape(what)}")
    try:
        yield current
    except ToolchainError as error:
        if error.log_path is None:
            error.log_path = log_path
        console.print(
            f"[bold red]!![/bold red] {stage} {escape(f'[{target}]')} failed after {current.elapsed:.1f} s; "
            f"full log: {log_path}"
        )
        raise
    except BaseException:
        console.print(
            f"[bold red]!![/bold red] {stage} {escape(f'[{target}]')} interrupted after {current.elapsed:.1f} s; "
            f"full log: {log_path}"
        )
        raise
    suffix = f" ({current.note})" if current.note else ""
    console.print(f"[bold green]ok[/bold green] {stage} {escape(f'[{target}]')} done in {current.elapsed:.1f} s{escape(suffix)}")

