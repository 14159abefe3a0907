"""invoke build: step order, skip/fail bookkeeping, the JSON report, interruption and reruns."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, require_sources, shared_source_cache
from nnpack_toolchain import pipeline
from nnpack_toolchain.errors import BuildError
from nnpack_toolchain.report import read_report
from nnpack_toolchain.settings import Settings, default_home
from nnpack_toolchain.targets import TARGETS


def fake_steps(monkeypatch: pytest.MonkeyPatch, calls: list[str], *, fail: tuple[str, str] | None = None,
               up_to_date: bool = False, tmp_path: Path) -> None:
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"x" * 10)

    def make(step: str):
        def run_step(target, settings):
            calls.append(f"{step}:{target.name}")
            if fail == (step, target.name):
                raise BuildError(f"{step} broke", log_path=tmp_path / "log")
            tests = pipeline.TestCounts(passed=3) if step == "smoke" else None
            artifacts = [pipeline.Artifact.from_path("wheel", artifact)] if step == "wheel" else []
            return pipeline.StepOutcome(up_to_date, f"{step} detail", artifacts, tests)
        return run_step

    monkeypatch.setattr(pipeline, "STEP_FUNCTIONS", {s: make(s) for s in pipeline.STEPS})


def test_steps_run_in_order_and_the_report_validates(monkeypatch, tmp_path: Path) -> None:
    calls: list[str] = []
    fake_steps(monkeypatch, calls, tmp_path=tmp_path)
    report_path = tmp_path / "report.json"
    report = pipeline.run_build([TARGETS["arm64"]], Settings(home=tmp_path / "home"), report_path=report_path)
    assert calls == [f"{s}:arm64" for s in pipeline.STEPS]
    assert report.is_ok
    data = read_report(report_path)  # validates against the schema
    (target,) = data["targets"]
    assert [s["step"] for s in target["steps"]] == list(pipeline.STEPS)
    assert {s["status"] for s in target["steps"]} == {"built"}
    assert target["tests"] == {"passed": 3, "failed": 0, "skipped": 0}
    assert target["artifacts"][0]["size"] == 10


def test_up_to_date_steps_are_reported_as_such(monkeypatch, tmp_path: Path) -> None:
    fake_steps(monkeypatch, [], up_to_date=True, tmp_path=tmp_path)
    report = pipeline.run_build([TARGETS["x86_64"]], Settings(home=tmp_path / "home"))
    assert {s.status for s in report.targets[0].steps} == {"up_to_date"}


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


@pytest.mark.slow
def test_a_build_killed_during_the_nnpack_step_leaves_nothing_a_rerun_trips_over(tmp_path: Path) -> None:
    require_sources("nnpack", "cpuinfo", "pthreadpool", "fxdiv", "fp16", "psimd")
    home = tmp_path / "home"
    env = {**os.environ, "NNPACK_TOOLCHAIN_HOME": str(home)}
    argv = ["python3", "-m", "invoke", "nnpack", "--arch", "arm64", "--tests", "none",
            "--source-cache", str(shared_source_cache())]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = home / "logs" / "nnpack-arm64.log"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:  # kill while NNPACK itself compiles
        if log.is_file() and "nnpack/0.0.0" in log.read_text(errors="replace") and \
                "Building" in log.read_text(errors="replace"):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the build ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (home / "out" / "arm64" / "nnpack-result.json").exists()
    rerun = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    result = json.loads((home / "out" / "arm64" / "nnpack-result.json").read_text())
    assert Path(result["library"]).is_file()
    header = subprocess.run(["readelf", "-h", result["library"]], capture_output=True, text=True, check=True).stdout
    assert "AArch64" in header


def existing_build(name: str) -> Path:
    """The default home's MXNet build of target `name` (from 'invoke mxnet'); skip when absent."""
    out = default_home() / "out" / name
    for needed in ("mxnet-result.json", "nnpack-result.json"):
        if not (out / needed).is_file():
            pytest.skip(f"no MXNet build for {name} in {default_home()} (run invoke mxnet --arch {name} "
                        "with the MXNet source: it takes over an hour)")
    library = Path(json.loads((out / "mxnet-result.json").read_text())["library"])
    if not library.is_file():
        pytest.skip(f"{library} is gone")
    return out


@pytest.mark.mxnet_build
def test_mxnet_wheel_is_reproducible(tmp_path: Path) -> None:
    """Two wheel builds from the same MXNet build, in two fresh homes, give the same sha256."""
    from nnpack_toolchain.wheel import build_mxnet_wheel

    shas = []
    for home in (tmp_path / "a", tmp_path / "b"):
        settings = home_with_build("x86_64", home)
        result = build_mxnet_wheel(TARGETS["x86_64"], settings)
        assert Path(result.sbom).is_file()
        shas.append(result.wheel_sha256)
    assert shas[0] == shas[1]


def test_two_builds_take_the_shared_conan_home_one_after_the_other(tmp_path: Path) -> None:
    """A second build (another target, another shell) waits for the Conan home instead of clobbering it."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from nnpack_toolchain import conan_config\n"
        "from nnpack_toolchain.settings import Settings\n"
        "with conan_config.conan_lock(Settings(home=Path(sys.argv[1]))):\n"
        "    print('in', time.monotonic(), flush=True)\n"
        "    time.sleep(1.5)\n"
        "    print('out', time.monotonic(), flush=True)\n"
    )
    first = subprocess.Popen(["python3", "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().startswith("in")  # the first build holds the lock
    second = subprocess.run(["python3", "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=30)
    first_out = float(first.stdout.readline().split()[1])
    first.wait()
    second_in = float(second.stdout.splitlines()[0].split()[1])
    assert second_in >= first_out, "the second build entered the Conan home while the first was using it"
    assert "waiting for another build" in second.stderr


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
    from nnpack_toolchain.wheel import build_mxnet_wheel, machine_of

    settings = home_with_build(name, tmp_path / "home")
    target = TARGETS[name]
    wheel = build_mxnet_wheel(target, settings)
    assert wheel.platform_tag.startswith("manylinux_2_") and wheel.platform_tag.endswith(machine_of(target))
    assert f'platform tag: "{wheel.platform_tag}"' in wheel.auditwheel_show.replace("\n", " ")
    assert any(n.startswith("libopenblas") for n in wheel.grafted), wheel.grafted
    result = run_smoke(target, settings)
    assert result.failed == 0 and len(result.tests) >= 12, [(t.test, t.detail) for t in result.tests if not t.ok]
