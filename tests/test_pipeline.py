"""invoke build: step order, skip/fail bookkeeping, the JSON report, interruption and reruns."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from conftest import MXNET_BUILD_HOME, REPO, SMOKE_TESTS, require_sources, shared_source_cache
from nnpack_toolchain import pipeline
from nnpack_toolchain.distros import SMOKE_RELEASES
from nnpack_toolchain.errors import BuildError
from nnpack_toolchain.report import read_report, summary_markdown
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS


README_STEPS = ("fetch", "nnpack", "configure", "mxnet", "wheel", "smoke")
"""The order of `invoke build`'s steps as the README documents it (not read from the code)."""


def fake_steps(monkeypatch: pytest.MonkeyPatch, calls: list[str], *, fail: tuple[str, str] | None = None,
               up_to_date: bool | set[str] = False, tmp_path: Path) -> None:
    """Replace every step by a recorder; `up_to_date` is a flag for all steps or the set of steps that are."""
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"x" * 10)

    def make(step: str):
        def run_step(target, settings):
            calls.append(f"{step}:{target.name}")
            if fail == (step, target.name):
                raise BuildError(f"{step} broke", log_path=tmp_path / "log")
            tests = pipeline.TestCounts(passed=3) if step == "smoke" else None
            artifacts = [pipeline.Artifact.from_path("wheel", artifact)] if step == "wheel" else []
            fresh = step in up_to_date if isinstance(up_to_date, set) else up_to_date
            return pipeline.StepOutcome(fresh, f"{step} detail", artifacts, tests)
        return run_step

    monkeypatch.setattr(pipeline, "STEP_FUNCTIONS", {s: make(s) for s in README_STEPS})


def test_steps_run_in_order_and_the_report_validates(monkeypatch, tmp_path: Path) -> None:
    calls: list[str] = []
    fake_steps(monkeypatch, calls, tmp_path=tmp_path)
    report_path = tmp_path / "report.json"
    report = pipeline.run_build([TARGETS["arm64"]], Settings(home=tmp_path / "home"), report_path=report_path)
    assert calls == ["fetch:arm64", "nnpack:arm64", "configure:arm64", "mxnet:arm64", "wheel:arm64", "smoke:arm64"]
    assert report.is_ok
    data = read_report(report_path)  # validates against the schema
    (target,) = data["targets"]
    assert [s["step"] for s in target["steps"]] == list(README_STEPS)
    assert {s["status"] for s in target["steps"]} == {"built"}
    assert target["tests"] == {"passed": 3, "failed": 0, "skipped": 0}
    assert target["artifacts"][0]["size"] == 10


def summary_text(report) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(pipeline.summary_table(report))
    return console.export_text()


def test_each_steps_own_status_reaches_the_report_and_the_summary(monkeypatch, tmp_path: Path) -> None:
    """Mixed outcomes: every step keeps its own status in the JSON report, the table and the Markdown summary."""
    fake_steps(monkeypatch, [], up_to_date={"fetch", "configure", "smoke"}, tmp_path=tmp_path)
    report_path = tmp_path / "report.json"
    report = pipeline.run_build([TARGETS["x86_64"]], Settings(home=tmp_path / "home"), report_path=report_path)
    data = read_report(report_path)
    statuses = {s["step"]: s["status"] for s in data["targets"][0]["steps"]}
    assert statuses == {"fetch": "up_to_date", "nnpack": "built", "configure": "up_to_date", "mxnet": "built",
                        "wheel": "built", "smoke": "up_to_date"}
    assert data["ok"] and data["targets"][0]["ok"]
    table = summary_text(report)
    for line in ("fetch: up to date", "nnpack: built", "configure: up to date", "mxnet: built", "wheel: built",
                 "smoke: up to date"):
        assert line in table, table
    row = next(l for l in summary_markdown(data).splitlines() if l.startswith("| x86_64 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert [c.split()[0] for c in cells[2:8]] == ["up_to_date", "built", "up_to_date", "built", "built",
                                                   "up_to_date"]


def test_the_configure_step_is_up_to_date_exactly_when_config_mk_keeps_its_content(monkeypatch, tmp_path: Path) -> None:
    """A decision the pipeline makes itself: the real configure step, run three times through run_build."""
    from nnpack_toolchain import configure as configure_module
    from nnpack_toolchain.compilers import compilers_for

    from test_configure import fake_nnpack

    fake_steps(monkeypatch, [], tmp_path=tmp_path)
    monkeypatch.setitem(pipeline.STEP_FUNCTIONS, "configure", pipeline.configure_step)
    monkeypatch.setattr(pipeline, "CONFIGURED", {})
    root = {"path": "/opt/nntc"}
    monkeypatch.setattr(configure_module, "load_nnpack",
                        lambda target, settings: fake_nnpack(target.name, root["path"]))
    monkeypatch.setattr(configure_module, "build_sysroot", lambda target, settings, packages: tmp_path / "sysroot")
    monkeypatch.setattr(configure_module, "ensure_compilers", compilers_for)  # paths only
    settings = Settings(home=tmp_path / "home")

    def configure_status() -> str:
        report = pipeline.run_build([TARGETS["arm64"]], settings)
        return {s.step: s.status for s in report.targets[0].steps}["configure"]

    assert configure_status() == "built"  # no config.mk yet
    assert configure_status() == "up_to_date"  # same inputs, same content
    root["path"] = "/srv/elsewhere"  # NNPACK now lives elsewhere: config.mk changes
    assert configure_status() == "built"
    assert "/srv/elsewhere/out/arm64" in (settings.output_dir("arm64") / "config.mk").read_text()


def test_a_failed_step_stops_its_target_and_by_default_the_rest(monkeypatch, tmp_path: Path) -> None:
    calls: list[str] = []
    fake_steps(monkeypatch, calls, fail=("mxnet", "armv7"), tmp_path=tmp_path)
    report_path = tmp_path / "report.json"
    report = pipeline.run_build([TARGETS["armv7"], TARGETS["arm64"]], Settings(home=tmp_path / "home"),
                                report_path=report_path)
    assert not report.is_ok
    assert calls == ["fetch:armv7", "nnpack:armv7", "configure:armv7", "mxnet:armv7"]
    data = read_report(report_path)
    statuses = {s["step"]: s["status"] for s in data["targets"][0]["steps"]}
    assert statuses == {"fetch": "built", "nnpack": "built", "configure": "built", "mxnet": "failed",
                        "wheel": "not_run", "smoke": "not_run"}
    failed = data["targets"][0]["steps"][3]
    assert failed["log"] == str(tmp_path / "log") and "mxnet broke" in failed["detail"]
    assert data["targets"][1] == {**data["targets"][1], "target": "arm64", "ok": False}
    assert {s["status"] for s in data["targets"][1]["steps"]} == {"not_run"}


def test_keep_going_builds_the_other_targets(monkeypatch, tmp_path: Path) -> None:
    calls: list[str] = []
    fake_steps(monkeypatch, calls, fail=("nnpack", "armv7"), tmp_path=tmp_path)
    report = pipeline.run_build([TARGETS["armv7"], TARGETS["arm64"]], Settings(home=tmp_path / "home"),
                                keep_going=True)
    assert [t.is_ok for t in report.targets] == [False, True]
    assert calls[-1] == "smoke:arm64"


def test_clean_removes_only_that_targets_outputs(monkeypatch, tmp_path: Path) -> None:
    fake_steps(monkeypatch, [], tmp_path=tmp_path)
    settings = Settings(home=tmp_path / "home")
    for name in ("arm64", "armv7"):
        (settings.output_dir(name) / "wheel").mkdir(parents=True)
        (settings.home / "build" / name).mkdir(parents=True)
    (settings.home / "sources" / "s").mkdir(parents=True)
    pipeline.run_build([TARGETS["arm64"]], settings, clean=True)
    assert not settings.output_dir("arm64").exists() and not (settings.home / "build" / "arm64").exists()
    assert settings.output_dir("armv7").exists() and (settings.home / "sources" / "s").exists()


def invoke(*args: str, home: Path, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NNPACK_TOOLCHAIN_HOME": str(home), "NNPACK_TOOLCHAIN_SOURCE_CACHE": str(shared_source_cache())}
    return subprocess.run(["python3", "-m", "invoke", *args, "--source-cache", str(shared_source_cache())], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


NNPACK_REF = "nnpack/0.0.0.cci.20230202"
DEPENDENCIES = ("cpuinfo", "pthreadpool", "fxdiv", "fp16", "psimd", "googletest")
NNPACK_COMPILES = re.compile(r"^\[\d+/\d+\] Building C object CMakeFiles/nnpack\.dir/", re.M)
"""Ninja compiling one of NNPACK's own objects: only NNPACK's CMakeLists has a target `nnpack`."""


def nnpack_compiling(log_text: str) -> bool:
    """Conan has entered NNPACK's build() and Ninja compiles NNPACK's own sources."""
    begin = log_text.find(f">>> Build step for {NNPACK_REF}")
    return begin >= 0 and NNPACK_COMPILES.search(log_text, begin) is not None


def conan_binaries(home: Path, name: str) -> list[str]:
    """Package ids of `name` in the Conan cache of a toolchain home (what `conan list` says)."""
    proc = subprocess.run([sys.executable, "-m", "conans.conan", "list", f"{name}/*:*", "--format=json"],
                          env={**os.environ, "CONAN_HOME": str(home / "conan"), "NO_COLOR": "1"},
                          capture_output=True, text=True, check=True)
    found = json.loads(proc.stdout)["Local Cache"]
    return [pid for ref in found.values() for rev in ref.get("revisions", {}).values()
            for pid in rev.get("packages", {})]


def requirement_sources(log_text: str) -> dict[str, str]:
    """From the last 'Requirements' list Conan printed: package name -> Cache | Build | Download ..."""
    lines = re.findall(r"^    ([\w.-]+)/[^#\s]+#\w+:\w+(?:#\w+)? - (\w+)", log_text, re.M)
    return dict(lines)


@pytest.mark.slow
def test_a_build_killed_during_the_nnpack_step_leaves_nothing_a_rerun_trips_over(tmp_path: Path) -> None:
    """Killed while NNPACK's own sources compile (its dependencies already built): the rerun resumes there."""
    require_sources("nnpack", "cpuinfo", "pthreadpool", "fxdiv", "fp16", "psimd", "googletest")
    home = tmp_path / "home"
    env = {**os.environ, "NNPACK_TOOLCHAIN_HOME": str(home)}
    # Without ccache: with a warm one NNPACK's objects come back in seconds and the kill could miss them.
    argv = [sys.executable, "-m", "invoke", "nnpack", "--arch", "arm64", "--tests", "none", "--no-ccache",
            "--source-cache", str(shared_source_cache())]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = home / "logs" / "nnpack-arm64.log"
    hang_guard = time.monotonic() + 3600  # not a speed check: only keeps a stuck build from hanging the suite
    try:
        while proc.poll() is None and time.monotonic() < hang_guard:  # kill once NNPACK itself compiles
            if log.is_file() and nnpack_compiling(log.read_text(errors="replace")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the build ended before NNPACK compiled: " + proc.stdout.read()[-3000:]
        assert nnpack_compiling(log.read_text(errors="replace")), "NNPACK did not start compiling within an hour"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_log = log.read_text(errors="replace")
    assert f"{NNPACK_REF}: Package " not in killed_log, "NNPACK was already packaged when it was killed"
    for name in DEPENDENCIES:  # built and packaged before the kill
        assert f">>> Build step for {name}/" in killed_log, name
        assert conan_binaries(home, name), f"{name} is not in the Conan cache after the kill"
    assert conan_binaries(home, "nnpack") == [], "a killed NNPACK build left a package in the Conan cache"
    assert not (home / "out" / "arm64" / "nnpack-result.json").exists()

    rerun = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rerun_log = log.read_text(errors="replace")  # each run starts the step's log afresh
    sources = requirement_sources(rerun_log)
    assert {name: sources.get(name) for name in DEPENDENCIES} == {name: "Cache" for name in DEPENDENCIES}, sources
    assert sources.get("nnpack") == "Build", sources
    assert re.findall(r"^>>> Build step for ([\w.-]+)/", rerun_log, re.M) == ["nnpack"]  # nothing else rebuilt
    assert nnpack_compiling(rerun_log)
    assert len(conan_binaries(home, "nnpack")) == 1
    result = json.loads((home / "out" / "arm64" / "nnpack-result.json").read_text())
    assert Path(result["library"]).is_file()
    header = subprocess.run(["readelf", "-h", result["library"]], capture_output=True, text=True, check=True).stdout
    assert "AArch64" in header


def existing_build(name: str) -> Path:
    """The MXNet build of target `name` in $NNTC_MXNET_BUILD_HOME (default: the user's home); skip when absent."""
    out = MXNET_BUILD_HOME / "out" / name
    for needed in ("mxnet-result.json", "nnpack-result.json"):
        if not (out / needed).is_file():
            pytest.skip(f"no MXNet build for {name} in {MXNET_BUILD_HOME} (run invoke mxnet --arch {name} "
                        "with the MXNet source: it takes over an hour)")
    library = Path(json.loads((out / "mxnet-result.json").read_text())["library"])
    if not library.is_file():
        pytest.skip(f"{library} is gone")
    return out


@pytest.mark.mxnet_build
def test_mxnet_wheel_is_reproducible(tmp_path: Path) -> None:
    """Two wheel builds from the same MXNet build, in two fresh homes, give the same sha256."""
    from nnpack_toolchain.mxnet_wheel import build_mxnet_wheel

    shas = []
    for home in (tmp_path / "a", tmp_path / "b"):
        settings = home_with_build("x86_64", home)
        result = build_mxnet_wheel(TARGETS["x86_64"], settings)
        assert Path(result.sbom).is_file()
        shas.append(result.wheel_sha256)
    assert shas[0] == shas[1]


@pytest.mark.mxnet_build
def test_an_up_to_date_wheel_gets_the_sbom_this_toolchain_writes(tmp_path: Path) -> None:
    """Session 19: the SBOM came only with a new wheel, so a toolchain that describes a wheel better (the Debian
    packages' exact versions) left every existing wheel's SBOM as it was until MXNet was rebuilt."""
    from nnpack_toolchain.mxnet_wheel import build_mxnet_wheel

    name = next((n for n in TARGETS if (MXNET_BUILD_HOME / "out" / n / "mxnet-result.json").is_file()), "x86_64")
    settings = home_with_build(name, tmp_path / "home")
    first = build_mxnet_wheel(TARGETS[name], settings)
    sbom = Path(first.sbom)
    written = sbom.read_text()
    document = json.loads(written)
    assert any(p["name"] == "nntc:sysroot-packages" for p in document["properties"])
    document["properties"] = [p for p in document["properties"] if not p["name"].endswith("-packages")]
    sbom.write_text(json.dumps(document))  # what an older toolchain wrote
    again = build_mxnet_wheel(TARGETS[name], settings)
    assert again.up_to_date and again.wheel_sha256 == first.wheel_sha256  # not rebuilt
    assert Path(again.sbom) == sbom and sbom.read_text() == written


LOCK_HOLDER = """\
import sys
from pathlib import Path
from nnpack_toolchain import conan_config
from nnpack_toolchain.settings import Settings
name, journal = sys.argv[2], Path(sys.argv[3])
with conan_config.conan_lock(Settings(home=Path(sys.argv[1]))):
    with journal.open("a") as out:
        out.write(f"{name} in\\n")
    print("holding", flush=True)
    sys.stdin.readline()  # the test says when to let go
    with journal.open("a") as out:
        out.write(f"{name} out\\n")
"""


def test_two_builds_take_the_shared_conan_home_one_after_the_other(tmp_path: Path) -> None:
    """A second build (another target, another shell) waits for the Conan home instead of clobbering it.

    A handshake instead of sleeps: the first holder keeps the lock until the test writes to its stdin,
    and only after the second has said it waits; the journal then shows who was inside when.
    """
    journal = tmp_path / "journal"

    def holder(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path), name, str(journal)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = holder("first")
    second = None
    try:
        assert first.stdout.readline() == "holding\n"  # the first build holds the lock
        second = holder("second")
        second.stdin.write("\n")  # the second lets go as soon as it is in
        second.stdin.flush()
        said = second.stderr.readline()  # "" if it ended (got in) without waiting
        assert "waiting for another build using the Conan home" in said, said + second.stderr.read()
        assert journal.read_text() == "first in\n", "the second build entered while the first held the lock"
        first.communicate("\n", timeout=60)  # let go
        out, err = second.communicate(timeout=60)
        assert out == "holding\n" and second.returncode == 0, err
        assert journal.read_text() == "first in\nfirst out\nsecond in\nsecond out\n"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def home_with_build(name: str, home: Path) -> Settings:
    """A fresh toolchain home that reuses the default home's MXNet build of target `name`."""
    out = existing_build(name)
    settings = Settings(home=home, source_cache=shared_source_cache())
    settings.output_dir(name).mkdir(parents=True)
    for result in ("mxnet-result.json", "nnpack-result.json"):
        shutil.copy(out / result, settings.output_dir(name) / result)
    return settings


@pytest.mark.mxnet_build
@pytest.mark.parametrize("name", list(TARGETS))
def test_mxnet_wheel_passes_the_smoke_suite_on_its_target(name: str, tmp_path: Path) -> None:
    """With an MXNet build in the home: the wheel, auditwheel's view of it, and the smoke suite there."""
    from nnpack_toolchain.smoke import run_smoke
    from nnpack_toolchain.mxnet_wheel import build_mxnet_wheel
    from nnpack_toolchain.wheel import machine_of

    settings = home_with_build(name, tmp_path / "home")
    target = TARGETS[name]
    wheel = build_mxnet_wheel(target, settings)
    assert wheel.platform_tag.startswith("manylinux_2_") and wheel.platform_tag.endswith(machine_of(target))
    assert f'platform tag: "{wheel.platform_tag}"' in wheel.auditwheel_show.replace("\n", " ")
    assert any(n.startswith("libopenblas") for n in wheel.grafted), wheel.grafted
    result = run_smoke(target, settings)
    assert result.failed == 0, [(t.test, t.detail) for t in result.tests if not t.ok]
    assert [(t.python, t.test) for t in result.tests] == [(r, n) for r in SMOKE_RELEASES for n in SMOKE_TESTS]
