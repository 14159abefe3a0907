"""Stage 6: install the target's wheel into each supported release's Python and run the smoke suite there.

For every release in distros.SMOKE_RELEASES (Debian 11, 12 and 13: python3.9 / numpy 1.19,
python3.11 / numpy 1.24, python3.13 / numpy 2.2) the release's own pip installs the wheel into a
sysroot of that release (target_env.py) and the suite (target_scripts/smoke_suite.py) runs there,
under QEMU on ARM, through the sysroot's loader on x86-64, once per SUITE_MODES entry; the
releases run at the same time (each has its own log, joined into the step's log). A release
whose glibc is older than the wheel's manylinux floor must refuse the wheel instead: that is its
check. Results: a table (python, test, result, time), `<home>/out/<target>/smoke-result.json`, and
a VerificationError naming the failed tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from . import log
from .distros import DISTRIBUTIONS, SMOKE_RELEASES
from .errors import ConfigurationError, VerificationError
from .files import atomic_write_text
from .settings import Settings
from .runner import run
from .target_env import PythonEnv, WheelRejectedError, native_python, python_env
from .targets import Target
from .wheel import RESULT_FILE as WHEEL_RESULT_FILE
from .wheel import WheelResult, require_wheel_contents, require_wheel_for

SCRIPTS = Path(__file__).parent / "target_scripts"
RESULT_FILE = "smoke-result.json"
SUITE_MODES = (("all", {}), ("init-failure", {"MXNET_NNPACK_FORCE_INIT_FAILURE": "1"}),
               ("deterministic", {"MXNET_ENFORCE_DETERMINISM": "1"}))
"""smoke_suite.py runs once per mode, each in its own process: these variables are read once per process."""
INIT_FAILURE_WARNING = "NNPACK is not available"
SUITE_TIMEOUT = 900.0
"""Seconds one suite process may take under QEMU (about 60-130 s normally; a hang must not stop the build)."""


@dataclass
class SmokeTest:
    test: str
    ok: bool
    seconds: float
    detail: str = ""
    python: str = ""
    """The release whose Python ran the check (debian11, ...)."""


@dataclass
class SmokeResult:
    target: str
    wheel: str
    tests: list[SmokeTest] = field(default_factory=list)
    seconds: float = 0.0
    wheel_sha256: str = ""
    up_to_date: bool = False

    @property
    def passed(self) -> int:
        return sum(t.ok for t in self.tests)

    @property
    def failed(self) -> int:
        return len(self.tests) - self.passed

    @classmethod
    def load(cls, path: Path) -> "SmokeResult":
        data = json.loads(path.read_text())
        data["tests"] = [SmokeTest(**t) for t in data["tests"]]
        return cls(**data)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def parse_records(output: str) -> list[dict[str, Any]]:
    """The `RESULT {json}` lines a target script prints, parsed."""
    return [json.loads(line[len("RESULT "):]) for line in output.splitlines() if line.startswith("RESULT ")]


def parse_results(output: str) -> list[SmokeTest]:
    return [SmokeTest(**record) for record in parse_records(output)]


def current_wheel(target: Target, settings: Settings) -> WheelResult:
    path = settings.output_dir(target.name) / WHEEL_RESULT_FILE
    if not path.is_file():
        raise ConfigurationError(f"no wheel for {target.name}: run invoke wheel --arch {target.name} first")
    return WheelResult(**json.loads(path.read_text()))


def run_smoke(target: Target, settings: Settings, wheel: Path | None = None, *, force: bool = False) -> SmokeResult:
    """Smoke-test `wheel` (default: the target's current wheel) on the target."""
    if wheel is None:
        built = current_wheel(target, settings)
        wheel, sha256 = Path(built.wheel), built.wheel_sha256
    else:
        from .sources import sha256_of

        sha256 = sha256_of(wheel)
    if not wheel.is_file():
        raise ConfigurationError(f"{wheel} does not exist: run invoke wheel --arch {target.name}")
    require_wheel_for(wheel, target)
    require_wheel_contents(wheel, target)
    result_path = settings.output_dir(target.name) / RESULT_FILE
    if not force and result_path.is_file():
        previous = SmokeResult.load(result_path)
        if previous.wheel_sha256 == sha256 and previous.failed == 0 and previous.tests:
            previous.up_to_date = True
            log.info(f"smoke [{target.name}]: up to date ({previous.passed}/{len(previous.tests)} passed "
                     f"with this wheel, sha256 {sha256[:12]}; --force reruns)")
            return previous
    where = f"under Debian 13's {target.qemu_binary}" if target.qemu_binary else "through each sysroot's loader"
    releases = [DISTRIBUTIONS[name] for name in SMOKE_RELEASES]
    with log.step("smoke", target.name, f"{wheel.name} on {', '.join(r.name for r in releases)} {where}",
                  settings.logs_dir) as step:
        envs = [python_env(target, settings, release) for release in releases]  # one by one: shared sysroots
        natives = [native_python(env, settings) for env in envs]
        tests = [SmokeTest(t.test, t.ok, t.seconds, t.detail, python=env.release.name)
                 for env, found in zip(envs, checks_in_parallel(envs, wheel, settings, step.log_path, natives))
                 for t in found]
        result = SmokeResult(target=target.name, wheel=str(wheel), tests=tests, seconds=round(step.elapsed, 1),
                             wheel_sha256=sha256)
        result.save(result_path)
        log.console.print(smoke_table(result))
        step.note = f"{result.passed}/{len(tests)} passed on {len(releases)} releases"
        if result.failed:
            names = ", ".join(f"{t.python}: {t.test}" for t in tests if not t.ok)
            raise VerificationError(f"smoke tests failed on {target.name}: {names}", log_path=step.log_path)
    return result


def wheel_glibc(wheel: Path) -> tuple[int, int]:
    """The glibc a manylinux wheel needs, from its file name (manylinux_2_31_aarch64 -> (2, 31))."""
    floors = [(int(m.group(1)), int(m.group(2))) for m in re.finditer(r"manylinux_(\d+)_(\d+)_", wheel.name)]
    if not floors:
        raise ConfigurationError(f"{wheel.name} has no manylinux_X_Y platform tag")
    return min(floors)


def checks_in_parallel(envs: list[PythonEnv], wheel: Path, settings: Settings, log_path: Path,
                       natives: list[tuple[list[str], str, str]] | None = None) -> list[list[SmokeTest]]:
    """release_checks on every release at once (each is one emulated process at a time, mostly
    single-threaded); results in the order of `envs`. Each release writes its own log, appended
    to `log_path` in that order when all are done (or one failed)."""
    logs = [log_path.with_name(f"{log_path.stem}-{env.release.name}{log_path.suffix}") for env in envs]
    for env, path in zip(envs, logs):
        path.write_text("")
        log.info(f"  smoke [{env.target.name}]: {env.label} (log {path.name})")
    try:
        with ThreadPoolExecutor(max_workers=len(envs)) as pool:
            futures = [pool.submit(release_checks, env, wheel, settings, path, native)
                       for env, path, native in zip(envs, logs, natives or [None] * len(envs))]
            return [future.result() for future in futures]
    finally:
        with open(log_path, "a") as stream:
            for path in logs:
                stream.write(path.read_text())


def release_checks(env: PythonEnv, wheel: Path, settings: Settings, log_path: Path,
                   native: tuple[list[str], str, str] | None = None) -> list[SmokeTest]:
    """The suite in each mode on one release's Python; or, below the wheel's floor, its refusal.
    `native` (target_env.native_python) byte-compiles the installed wheel first: each suite process
    then imports mxnet's 234 modules from bytecode instead of compiling them under QEMU again."""
    release = env.release
    site = settings.home / "smoke" / env.target.name / release.name / "site"
    needs = wheel_glibc(wheel)
    if tuple(map(int, release.glibc.split("."))) < needs:
        begin = time.monotonic()
        try:
            env.install_wheel(wheel, site, log_path)
        except WheelRejectedError:
            return [SmokeTest(f"pip refuses the wheel (needs glibc {needs[0]}.{needs[1]})", True,
                              time.monotonic() - begin, f"glibc {release.glibc}")]
        return [SmokeTest(f"pip refuses the wheel (needs glibc {needs[0]}.{needs[1]})", False,
                          time.monotonic() - begin, f"pip installed it on glibc {release.glibc}")]
    env.install_wheel(wheel, site, log_path)
    if native is not None:
        argv, _, jobs = native
        run([*argv, "-m", "compileall", "-q", jobs, site], log_path=log_path, what=f"compileall {site}")
    extra = {"PYTHONPATH": f"{site}:{SCRIPTS}", "OMP_NUM_THREADS": "2"}
    tests: list[SmokeTest] = []
    for mode, more_env in SUITE_MODES:
        begin = time.monotonic()
        try:
            proc = env.run([SCRIPTS / "smoke_suite.py", mode], extra_env={**extra, **more_env},
                           timeout=SUITE_TIMEOUT)
        except subprocess.TimeoutExpired as expired:
            output = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else expired.stdout
            found = [t for t in parse_results(output or "") if mode == "all" or t.test != "import mxnet"]
            done = found[-1].test if found else "nothing (not even import mxnet)"
            tests += [*found, SmokeTest(f"suite '{mode}' ran to the end", False, time.monotonic() - begin,
                                        f"stopped after {SUITE_TIMEOUT:.0f} s; the last check done: {done}")]
            with open(log_path, "a") as stream:
                stream.write(f"\n# smoke suite {mode} on {env.label}: no end after {SUITE_TIMEOUT:.0f} s\n"
                             f"{output or ''}\n")
            continue
        with open(log_path, "a") as stream:
            stream.write(f"\n# smoke suite {mode} on {env.label}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n")
        found = parse_results(proc.stdout)
        if mode == "init-failure":
            warnings = proc.stderr.count(INIT_FAILURE_WARNING)
            found.append(SmokeTest("init failure warned exactly once", warnings == 1, 0.0,
                                   f"{warnings} warning(s) '{INIT_FAILURE_WARNING}'"))
        if mode != "all":
            found = [t for t in found if t.test != "import mxnet"]
        if proc.returncode != 0 or not found:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            found.append(SmokeTest(f"suite '{mode}' ran to the end", False, time.monotonic() - begin, last))
        tests += found
    return tests


def smoke_table(result: SmokeResult) -> Table:
    table = Table(title=escape(f"smoke tests [{result.target}]"), title_justify="left")
    table.add_column("python")
    table.add_column("test")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for t in result.tests:
        table.add_row(t.python, t.test, "[green]pass[/green]" if t.ok else "[red]FAIL[/red]", f"{t.seconds:.2f} s", t.detail)
    return table
