"""Progress of long tool runs, read from their output as it streams into the log.

`Counter` turns "N of M done" into a Rich bar with the time left on a terminal, and into a plain
line every few percent elsewhere (CI logs). The followers plug into `runner.run(progress=...)`:
`MakeObjects` counts the compiler commands make echoes (the total from `make -n`, objects
already built on a resumed build count as done) and, given each object's relative cost, estimates
the time left from the cost done rather than the number (an object counts as done once make
starts it); `CtestTests` reads ctest's "3/16 Test #5:" lines.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from . import log

#: A compiler command that makes an object file: `-c` and `-o NAME.o` as separate words.
COMPILE_LINE = re.compile(r"^(?=.*(?:^|\s)-c(?:\s|$))(?=.*(?:^|\s)-o\s*\S+\.o(?:\s|$)).")
OBJECT_NAME = re.compile(r"(?:^|\s)-o\s*(\S+\.o)(?:\s|$)")
#: ctest's line for a finished test: "  3/16 Test  #5: name ....   Passed    0.52 sec".
CTEST_RESULT = re.compile(r"(?:^|\s)(\d+)/(\d+)\s+Test\s+#\s*\d+:")
CTEST_START = re.compile(r"(?:^|\s)Test project \S")
DRY_RUN_TIMEOUT = 300


def duration_text(seconds: float) -> str:
    """A rough duration for a time-left estimate: '45 s', '12 min', '1 h 05 min'."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class Counter:
    """Shows `done` of `total` `unit` with an estimate of the time left (from this run's rate).

    With `work_total` the rate is of work (units of unequal cost), otherwise of units.
    """

    label: str
    unit: str
    console: Console = field(default_factory=lambda: log.console)
    clock: Callable[[], float] = time.monotonic
    every_percent: int = 5
    every_unknown: int = 25
    total: int | None = None
    done: int = 0
    done_at_start: int = 0
    started: float = 0.0
    work_total: float | None = None
    work_done: float = 0.0
    work_at_start: float = 0.0
    begun: bool = field(default=False, init=False)
    _last_step: int = field(default=-1, init=False, repr=False)
    _bar: Progress | None = field(default=None, init=False, repr=False)
    _task: TaskID | None = field(default=None, init=False, repr=False)

    def begin(self, total: int | None, done: int = 0, *, started: float | None = None,
              work: tuple[float, float] | None = None) -> None:
        """Start counting; `done` were finished before this run (they do not count for the rate).

        `work` = (the whole work, the part done before this run) makes the rate one of work.
        """
        self.total, self.done, self.done_at_start, self.begun = total, done, done, True
        if work is not None:
            self.work_total, self.work_done = work
            self.work_at_start = self.work_done
        self.started = self.clock() if started is None else started
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn(f"  {escape(self.label)} {escape(self.unit)}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), TextColumn("{task.fields[eta]}"),
                console=self.console, transient=True, auto_refresh=False, redirect_stdout=False,
                redirect_stderr=False)
            self._task = self._bar.add_task(self.label, total=total, completed=done, eta=self.eta(self.started))
            self._bar.start()
            self._bar.refresh()
        else:
            self._last_step = self._step()
            if total is not None:
                self._plain(f"{max(0, total - done)} to go" + (f", {done} done before" if done else ""))

    def update(self, done: int, work: float | None = None) -> None:
        """`done` units (and `work`) are finished now, counted from the start with those done before."""
        if done == self.done:
            return
        self.done = done
        if work is not None:
            self.work_done = work
        if self.total is not None and done > self.total:
            self.total = done  # the estimate of the total was low
        eta = self.eta(self.clock())  # one clock reading per update, shown or not
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=self.total, eta=eta)
            self._bar.refresh()
            return
        step = self._step()
        if step > self._last_step:
            self._last_step = step
            self._plain(eta)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def eta(self, now: float) -> str:
        """The time left at `now`, from the rate of this run (units done before it do not count)."""
        if self.total is None:
            return ""
        remaining = self.total - self.done
        if remaining <= 0:
            return "finishing"
        done_here = self.done - self.done_at_start
        if self.work_total is not None:
            done_here, remaining = self.work_done - self.work_at_start, self.work_total - self.work_done
        if done_here <= 0:
            return "estimating the time left"
        elapsed = now - self.started
        return f"about {duration_text(elapsed / done_here * max(0.0, remaining))} left"

    def _step(self) -> int:
        if self.total is None:
            return self.done // self.every_unknown
        if self.total == 0:
            return 100 // self.every_percent
        return (100 * self.done // self.total) // self.every_percent

    def _plain(self, note: str) -> None:
        if self.total is None:
            text = f"{self.unit} {self.done} (total unknown)"
        else:
            percent = 100 * self.done // self.total if self.total else 100
            text = f"{self.unit} {self.done}/{self.total} ({percent}%), {note}"
        self.console.print(f"  {escape(self.label)}: {escape(text)}")


def compiled_objects(text: str) -> list[str]:
    """The object files (as `-o` names them) of the compiler commands in make's output."""
    names = []
    for line in text.splitlines():
        if COMPILE_LINE.match(line):
            match = OBJECT_NAME.search(line)
            names.append(match.group(1) if match else "")
    return names


@dataclass
class Follower:
    """What runner.run feeds a tool's output to: a labelled Counter of some unit."""

    label: str
    unit: str = ""
    console: Console | None = None
    clock: Callable[[], float] = time.monotonic
    counter: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.counter = Counter(self.label, self.unit, self.console or log.console, self.clock)


@dataclass
class MakeObjects(Follower):
    """Objects compiled by make, of all it would compile from scratch (`make -n -B`).

    `weights` maps an object's name (as its `-o` gives it) to its relative cost; an object it does
    not name costs the median. Without weights every object costs the same.
    """

    unit: str = "objects"
    weights: Mapping[str, float] | None = None
    compiled: int = 0
    work: float = 0.0
    _median: float | None = field(default=None, init=False, repr=False)

    def start(self, argv: Sequence[str], cwd: Path | None, env: Mapping[str, str]) -> None:
        to_build = self._dry_run(argv, cwd, env, [])
        everything = self._dry_run(argv, cwd, env, ["-B"]) if to_build is not None else None
        if to_build is None or everything is None:
            self.counter.begin(None)
            return
        total = max(len(everything), len(to_build))
        work = None
        if self.weights:
            whole = max(sum(map(self.cost, everything)), sum(map(self.cost, to_build)))
            work = (whole, whole - sum(map(self.cost, to_build)))
            self.work = work[1]
        self.counter.begin(total, total - len(to_build), work=work)

    def cost(self, name: str) -> float:
        """An object's relative cost: its weight, or the median weight for an object not weighed."""
        if not self.weights:
            return 1.0
        if self._median is None:
            self._median = statistics.median(self.weights.values())
        return self.weights.get(name, self._median)

    def line(self, text: str) -> None:
        if COMPILE_LINE.match(text):
            self.compiled += 1
            match = OBJECT_NAME.search(text)
            self.work += self.cost(match.group(1) if match else "")
            self.counter.update(self.counter.done_at_start + self.compiled, self.work if self.weights else None)

    def finish(self, ok: bool) -> None:
        self.counter.close()

    @staticmethod
    def _dry_run(argv: Sequence[str], cwd: Path | None, env: Mapping[str, str], extra: list[str]) -> list[str] | None:
        """The objects make would compile (None when the dry run fails)."""
        try:
            dry = subprocess.run([argv[0], "-n", *extra, *argv[1:]], cwd=cwd, env=dict(env), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                 timeout=DRY_RUN_TIMEOUT, errors="replace", check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return compiled_objects(dry.stdout) if dry.returncode == 0 else None


@dataclass
class CtestTests(Follower):
    """ctest's finished tests of its total, wherever ctest runs inside the tool (e.g. `conan create`)."""

    unit: str = "tests"
    _suite_started: float | None = None

    def start(self, argv: Sequence[str], cwd: Path | None, env: Mapping[str, str]) -> None:
        """Nothing to ask beforehand: the total comes with ctest's first result line."""

    def line(self, text: str) -> None:
        if CTEST_START.search(text):
            self._suite_started = self.clock()
            return
        match = CTEST_RESULT.search(text)
        if not match:
            return
        done, total = int(match.group(1)), int(match.group(2))
        if not self.counter.begun or total != self.counter.total or done < self.counter.done:
            self.counter.close()
            started = self._suite_started if self._suite_started is not None else self.clock()
            self.counter = Counter(self.label, self.unit, self.counter.console, self.clock)
            self.counter.begin(total, 0, started=started)
        self.counter.update(done)

    def finish(self, ok: bool) -> None:
        self.counter.close()
