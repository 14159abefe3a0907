"""`invoke build`: every stage for each target, in order, each skipped when its inputs did not change.

fetch -> nnpack -> configure -> mxnet -> wheel -> smoke. Each stage decides itself whether it is
up to date (source cache by sha256, NNPACK and MXNet by input digests, the wheel by a digest of its
inputs, smoke by the wheel's sha256), so an unchanged rerun takes seconds. The outcome of every
step goes into a `BuildReport` (report.py, validated against report_schema.json): a summary
table at the end and, with `--report FILE`, the same as JSON for CI.

Two builds of different targets may run at the same time in two shells: everything a target
writes is under out/<target>, build/<target>, sysroots/<target>-*, logs/*-<target>.log, and the
shared Conan home is used under a lock (conan_config.conan_lock).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import log
from .errors import ToolchainError
from .report import Artifact, BuildReport, StepRecord, TargetReport, TestCounts
from .settings import Settings
from .targets import Target

if TYPE_CHECKING:
    from .configure import ConfigureResult

STEPS = ("fetch", "nnpack", "configure", "mxnet", "wheel", "smoke")


@dataclass
class StepOutcome:
    up_to_date: bool
    detail: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    tests: TestCounts | None = None
    downloaded: bool = False
    """Fetched from the team's Conan remote instead of built (prebuilt.py)."""


class TargetFailed(Exception):
    """Internal: a step of this target failed (already recorded in the report)."""


def fetch_step(target: Target, settings: Settings) -> StepOutcome:
    from .nnpack import pins_for_backend, resolve_backend
    from .sources import load_pins, source_cache

    pins = list(pins_for_backend(resolve_backend(target, settings)))
    if "mxnet" not in settings.local_sources:
        pins.append(load_pins()["mxnet"])
    cache = source_cache(settings)
    resolved = [cache.resolve(p, offline=settings.offline, local_dir=settings.local_sources.get(p.name))
                for p in pins]
    fresh = [r.pin.name for r in resolved if not r.origin.startswith(("source cache", "local directory"))]
    local = [r.pin.name for r in resolved if not r.verified]
    detail = f"{len(resolved)} sources" + (f", downloaded: {', '.join(fresh)}" if fresh else "") + \
        (f", local (unverified): {', '.join(local)}" if local else "")
    return StepOutcome(up_to_date=not fresh, detail=detail)


def nnpack_step(target: Target, settings: Settings) -> StepOutcome:
    from .nnpack import build_nnpack

    result = build_nnpack(target, settings)
    tests = TestCounts(passed=result.tests.passed, failed=result.tests.failed,
                       skipped=max(0, result.tests.ran - result.tests.passed - result.tests.failed))
    return StepOutcome(result.up_to_date, f"{result.reference}, {result.backend} backend, "
                       f"{result.tests.passed}/{result.tests.ran} NNPACK tests", [Artifact.from_path("libnnpack", result.library)],
                       tests)


# The configure step's result per target, handed to the MXNet step (which would otherwise render it again).
CONFIGURED: dict[str, ConfigureResult] = {}


def configure_step(target: Target, settings: Settings) -> StepOutcome:
    from .configure import configure

    result = CONFIGURED[target.name] = configure(target, settings)
    return StepOutcome(not result.changed, str(result.config_mk), [Artifact.from_path("config_mk", result.config_mk)])


def mxnet_step(target: Target, settings: Settings) -> StepOutcome:
    from .configure import configure
    from .mxnet import build_mxnet
    from .prebuilt import use_prebuilt

    config = CONFIGURED.pop(target.name, None) or configure(target, settings)
    downloaded = use_prebuilt(target, settings, config)
    if downloaded is not None:
        return StepOutcome(downloaded.up_to_date, f"from {downloaded.downloaded_from}, NEEDED {', '.join(downloaded.needed)}",
                           [Artifact.from_path("libmxnet", downloaded.library)], downloaded=not downloaded.up_to_date)
    result = build_mxnet(target, settings, config)
    return StepOutcome(result.up_to_date, f"NEEDED {', '.join(result.needed)}",
                       [Artifact.from_path("libmxnet", result.library)])


def wheel_step(target: Target, settings: Settings) -> StepOutcome:
    from .mxnet_wheel import build_mxnet_wheel

    result = build_mxnet_wheel(target, settings)
    return StepOutcome(result.up_to_date, f"{Path(result.wheel).name} ({result.manylinux_floor})",
                       [Artifact.from_path("wheel", result.wheel), Artifact.from_path("sbom", result.sbom)])


def smoke_step(target: Target, settings: Settings) -> StepOutcome:
    from .smoke import run_smoke

    result = run_smoke(target, settings)
    return StepOutcome(result.up_to_date, f"{result.passed}/{len(result.tests)} smoke tests passed",
                       tests=TestCounts(passed=result.passed, failed=result.failed))


STEP_FUNCTIONS: dict[str, Callable[[Target, Settings], StepOutcome]] = {
    "fetch": fetch_step, "nnpack": nnpack_step, "configure": configure_step,
    "mxnet": mxnet_step, "wheel": wheel_step, "smoke": smoke_step,
}


@contextmanager
def progress_line(step: str, target: Target) -> Iterator[None]:
    """A live spinner with the elapsed time on a terminal; nothing extra in a CI log."""
    if not log.console.is_terminal:
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=log.console,
                  transient=True) as progress:
        progress.add_task(escape(f"{step} [{target.name}]"), total=None)
        yield


def clean_target(target: Target, settings: Settings) -> None:
    """--clean: forget this target's outputs and MXNet build tree (caches of sources, Conan, ccache stay)."""
    for path in (settings.output_dir(target.name), settings.home / "build" / target.name,
                 settings.home / "smoke" / target.name):
        if path.exists():
            log.info(f"clean [{target.name}]: removing {path}")
            shutil.rmtree(path)


def build_target(target: Target, settings: Settings, report: TargetReport) -> None:
    for index, step in enumerate(STEPS):
        begin = time.monotonic()
        try:
            with progress_line(step, target):
                outcome = STEP_FUNCTIONS[step](target, settings)
        except ToolchainError as error:
            report.steps.append(StepRecord(step, "failed", round(time.monotonic() - begin, 1),
                                           str(error.log_path) if error.log_path else None, error.message[:2000]))
            report.steps += [StepRecord(s, "not_run") for s in STEPS[index + 1:]]
            raise TargetFailed(step) from error
        except KeyboardInterrupt:
            report.steps.append(StepRecord(step, "failed", round(time.monotonic() - begin, 1), None, "interrupted"))
            report.steps += [StepRecord(s, "not_run") for s in STEPS[index + 1:]]
            raise
        status = "up_to_date" if outcome.up_to_date else "downloaded" if outcome.downloaded else "built"
        log_path = settings.logs_dir / f"{step}-{target.name}.log"
        report.steps.append(StepRecord(step, status, round(time.monotonic() - begin, 1),
                                       str(log_path) if log_path.is_file() else None, outcome.detail))
        report.artifacts += outcome.artifacts
        if outcome.tests:
            report.tests.add(outcome.tests)


def run_build(targets: list[Target], settings: Settings, *, keep_going: bool = False, clean: bool = False,
              report_path: Path | None = None) -> BuildReport:
    """Build every target; returns the report (written to report_path, if given, even on failure)."""
    report = BuildReport()
    try:
        for target in targets:
            if clean:
                clean_target(target, settings)
            target_report = TargetReport(target.name)
            report.targets.append(target_report)
            try:
                build_target(target, settings, target_report)
            except TargetFailed as failed:
                error = failed.__cause__
                log.console.print(f"[bold red]error:[/bold red] {escape(getattr(error, 'message', str(error)))}")
                if not keep_going:
                    for rest in targets[targets.index(target) + 1:]:
                        report.targets.append(TargetReport(rest.name, [StepRecord(s, "not_run") for s in STEPS]))
                    break
    finally:
        if report_path is not None:
            report.write(report_path)
        log.console.print(summary_table(report))
        if report_path is not None:
            log.console.print(f"report: {report_path}")
    return report


def summary_table(report: BuildReport) -> Table:
    table = Table(title="build summary", title_justify="left")
    for column in ("target", "steps", "artifacts (size, sha256; paths in the JSON report)", "tests"):
        table.add_column(column, overflow="fold")
    for t in report.targets:
        steps = "\n".join(f"{s.step}: {s.status.replace('_', ' ')} {s.seconds:.1f} s" for s in t.steps)
        artifacts = "\n".join(f"{Path(a.path).name} ({a.size} B, {a.sha256[:12]})" for a in t.artifacts)
        tests = f"{t.tests.passed} passed, {t.tests.failed} failed"
        mark = "[green]ok[/green]" if t.is_ok else "[red]FAILED[/red]"
        table.add_row(f"{t.target} {mark}", escape(steps), escape(artifacts), tests)
    return table
