"""Wheels and target Python environments, on a small library of the project's own.

For each target the demo library (tests/data/wheel_demo, needs libgomp) is cross-compiled,
packed, repaired by auditwheel against the target's Debian libraries, installed with the
target's own pip and imported by the target's Python (under QEMU on ARM).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from conftest import REPO, SMOKE_SUITE_CHECKS, SMOKE_TESTS
from nnpack_toolchain.compilers import ensure_compilers
from nnpack_toolchain.configure import BUILD_SYSROOT_PACKAGES
from nnpack_toolchain.distros import DISTRIBUTIONS, SMOKE_RELEASES
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.smoke import SCRIPTS, parse_results, release_checks, run_smoke, wheel_glibc
from nnpack_toolchain.sysroot import SysrootPackageError, build_sysroot, unpack_debs
from nnpack_toolchain.target_env import WheelRejectedError, python_env
from nnpack_toolchain.targets import TARGETS, Target
from nnpack_toolchain.wheel import WheelSpec, build_wheel, machine_of, require_wheel_for, target_of_wheel

DEMO = Path(__file__).parent / "data" / "wheel_demo"
MACHINE_NAMES = {"x86_64": "x86_64", "armv7": "armv7l", "arm64": "aarch64"}

# An `mxnet` whose every function raises: the suite must still report every check, as a failure.
FAKE_MXNET = """
__version__ = "0.0+fake"


class _Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return _Missing(self._name + "." + attr)

    def __call__(self, *args, **kwargs):
        raise RuntimeError("fake mxnet: " + self._name + "() does not exist")


def __getattr__(name):
    return _Missing("mx." + name)
"""


def demo_spec(library: Path) -> WheelSpec:
    return WheelSpec(distribution="nntc-wheel-demo", version="1.0+demo", package_dir=DEMO / "nntc_wheel_demo",
                     native_libraries=(library,), summary="demo", license="BSD-2-Clause", readme="# demo\n")


def compile_demo(target: Target, home: Settings, out: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    """The demo library, built like the real ones: the base distribution's compiler and glibc."""
    out.mkdir(parents=True, exist_ok=True)
    library = out / "libnntcdemo.so"
    compilers = ensure_compilers(target, home)
    subprocess.run([compilers.cc, *compilers.flags, *target.compiler_flags, "-shared", "-fPIC", "-fopenmp", "-O2",
                    "-o", library, DEMO / "demo.c", "-lm", *extra_flags], check=True)
    return library


@pytest.fixture(scope="module")
def home(module_tmp: Callable[[str], Path]) -> Settings:
    return Settings(home=module_tmp("wheel-home"))


@pytest.fixture(scope="module")
def demo_wheels(home: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """target -> (wheel, the same inputs built a second time in another directory)."""
    wheels = {}
    for target in TARGETS.values():
        work = tmp_path_factory.mktemp(f"demo-{target.name}")
        library = compile_demo(target, home, work / "lib")
        sysroot = build_sysroot(target, home, BUILD_SYSROOT_PACKAGES)
        first = build_wheel(demo_spec(library), target, sysroot, work / "a", work / "log")
        second = build_wheel(demo_spec(library), target, sysroot, work / "b", work / "log")
        wheels[target.name] = (Path(first.wheel), Path(second.wheel))
    return wheels


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_demo_wheel_is_tagged_repaired_and_reproducible(name: str, demo_wheels: dict[str, tuple[Path, Path]]) -> None:
    wheel, again = demo_wheels[name]
    target = TARGETS[name]
    assert wheel.name.startswith("nntc_wheel_demo-1.0+demo-py3-none-manylinux")
    platforms = {tag.platform for tag in parse_wheel_filename(wheel.name)[3]}
    assert all(p.endswith(f"_{MACHINE_NAMES[name]}") for p in platforms), platforms
    assert target_of_wheel(wheel) is target
    floors = [int(m.group(1)) for p in platforms if (m := re.fullmatch(rf"manylinux_2_(\d+)_{MACHINE_NAMES[name]}", p))]
    assert floors and 17 <= max(floors) <= 31, f"Debian 11's glibc 2.31 gives at most manylinux_2_31: {platforms}"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        modes = {n: archive.getinfo(n).external_attr >> 16 for n in names}
        dates = {archive.getinfo(n).date_time for n in names}
    assert "nntc_wheel_demo/libnntcdemo.so" in names
    assert any(n.startswith("nntc_wheel_demo.libs/libgomp-") for n in names), "libgomp was not grafted"
    assert dates == {(2022, 5, 10, 0, 0, 0)}
    assert modes["nntc_wheel_demo/libnntcdemo.so"] & 0o777 == 0o755
    assert modes["nntc_wheel_demo/__init__.py"] & 0o777 == 0o644
    show = subprocess.run(["auditwheel", "show", wheel], capture_output=True, text=True, check=True).stdout
    assert f"manylinux_2_{max(floors)}_{machine_of(target)}" in show
    assert again.read_bytes() == wheel.read_bytes(), "two builds from the same inputs differ"


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("release", SMOKE_RELEASES)
@pytest.mark.parametrize("name", list(TARGETS))
def test_demo_wheel_installs_and_runs_on_each_release_of_its_target(name: str, release: str, home: Settings,
                                                                    demo_wheels: dict[str, tuple[Path, Path]],
                                                                    tmp_path: Path) -> None:
    """The release's own Python, numpy and glibc (not the host's) install and load the wheel."""
    target, distribution = TARGETS[name], DISTRIBUTIONS[release]
    env = python_env(target, home, distribution)
    env.install_wheel(demo_wheels[name][0], tmp_path / "site", tmp_path / "log")
    proc = env.run(["-c", "import nntc_wheel_demo as d, json, sys, platform, numpy; print(json.dumps(d.describe())); "
                    "print(sys.version_info[:2], platform.libc_ver()[1], numpy.__version__)"],
                   extra_env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr
    assert f'"machine": "{MACHINE_NAMES[name]}"' in proc.stdout
    assert '"norm_3_4": 5.0' in proc.stdout
    major, minor = distribution.python.split(".")
    assert f"({major}, {minor}) {distribution.glibc} {distribution.numpy}." in proc.stdout, proc.stdout


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("release", SMOKE_RELEASES)
@pytest.mark.parametrize(("wheel_of", "installed_on"), [("arm64", "armv7"), ("arm64", "x86_64"), ("x86_64", "arm64")])
def test_pip_on_the_target_refuses_another_targets_wheel(wheel_of: str, installed_on: str, release: str,
                                                         home: Settings, demo_wheels: dict[str, tuple[Path, Path]],
                                                         tmp_path: Path) -> None:
    env = python_env(TARGETS[installed_on], home, DISTRIBUTIONS[release])
    with pytest.raises(WheelRejectedError, match="not a supported wheel on this platform"):
        env.install_wheel(demo_wheels[wheel_of][0], tmp_path / "site", tmp_path / "log")
    assert not (tmp_path / "site").exists()
    assert not list(tmp_path.glob(".site-*")), "a rejected install left a temporary directory"


@pytest.mark.network
@pytest.mark.slow
def test_smoke_refuses_a_wheel_for_another_target(demo_wheels: dict[str, tuple[Path, Path]], home: Settings) -> None:
    with pytest.raises(ConfigurationError, match="was built for arm64, not armv7"):
        run_smoke(TARGETS["armv7"], home, demo_wheels["arm64"][0])


@pytest.mark.network
@pytest.mark.slow
def test_a_release_below_the_wheels_floor_must_refuse_it(demo_wheels: dict[str, tuple[Path, Path]], home: Settings,
                                                         tmp_path: Path) -> None:
    """A wheel built on Debian 12 (manylinux_2_36) is refused by Debian 11's pip: that refusal is its
    smoke check there (run_smoke checked beforehand that the wheel is for this machine)."""
    wheel = demo_wheels["arm64"][0]
    newer = tmp_path / (wheel.name.split("-py3-none-")[0] + "-py3-none-manylinux_2_36_aarch64.whl")
    newer.write_bytes(wheel.read_bytes())
    assert wheel_glibc(newer) == (2, 36)
    env = python_env(TARGETS["arm64"], home, DISTRIBUTIONS["debian11"])
    [check] = release_checks(env, newer, Settings(home=tmp_path / "home"), tmp_path / "log")
    assert check.ok and check.test == "pip refuses the wheel (needs glibc 2.36)", check
    assert not (tmp_path / "home" / "smoke").exists() or not any((tmp_path / "home" / "smoke").rglob("*.py"))


def test_wheel_glibc_is_the_lowest_manylinux_tag(tmp_path: Path) -> None:
    assert wheel_glibc(tmp_path / "m-1-py3-none-manylinux_2_17_aarch64.manylinux_2_31_aarch64.whl") == (2, 17)
    with pytest.raises(ConfigurationError, match="no manylinux_X_Y platform tag"):
        wheel_glibc(tmp_path / "m-1-py3-none-linux_aarch64.whl")


def test_wheel_names_map_to_targets(tmp_path: Path) -> None:
    for target in TARGETS.values():
        wheel = tmp_path / f"mxnet-1.9.1+nnpack.70a77f4-py3-none-manylinux_2_36_{machine_of(target)}.whl"
        assert target_of_wheel(wheel) is target
        require_wheel_for(wheel, target)
    with pytest.raises(ConfigurationError, match="not tagged for any target"):
        target_of_wheel(tmp_path / "mxnet-1.9.1-py3-none-any.whl")
    with pytest.raises(ConfigurationError, match="not a wheel file name"):
        target_of_wheel(tmp_path / "mxnet.tar.gz")


def test_smoke_output_parsing() -> None:
    out = 'noise\nRESULT {"test": "a", "ok": true, "seconds": 0.5, "detail": "x"}\nRESULT {"test": "b", "ok": false, ' \
          '"seconds": 1, "detail": ""}\n'
    tests = parse_results(out)
    assert [(t.test, t.ok) for t in tests] == [("a", True), ("b", False)]


@pytest.mark.parametrize("mode", list(SMOKE_SUITE_CHECKS))
def test_smoke_suite_check_names_and_output_parsing_with_a_fake_mxnet(mode: str, tmp_path: Path) -> None:
    """The suite, run as smoke.py runs it, on an mxnet that has nothing: it runs to the end and
    prints one RESULT line per check, which parse_results reads; each check fails by mxnet's
    error (not one of the script's own), and the README's count is that of run_smoke."""
    (tmp_path / "mxnet").mkdir()
    (tmp_path / "mxnet" / "__init__.py").write_text(FAKE_MXNET)
    proc = subprocess.run([sys.executable, str(SCRIPTS / "smoke_suite.py"), mode], capture_output=True, text=True,
                          env={"PYTHONPATH": f"{tmp_path}:{SCRIPTS}", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tests = parse_results(proc.stdout)
    assert [t.test for t in tests] == SMOKE_SUITE_CHECKS[mode]
    assert tests[0].ok and "mxnet 0.0+fake" in tests[0].detail
    for test in tests[1:]:
        assert not test.ok and "fake mxnet" in test.detail, (test.test, test.detail)
    assert f"({len(SMOKE_TESTS)} checks per Python;" in (REPO / "README.md").read_text()


@pytest.mark.network
@pytest.mark.slow
def test_missing_sysroot_package_is_named(home: Settings) -> None:
    with pytest.raises(SysrootPackageError, match="nntc-no-such-package"):
        build_sysroot(TARGETS["arm64"], home, ["libgomp1", "nntc-no-such-package"])


def make_deb(root: Path, name: str) -> Path:
    package = root / name
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: arm64\nMaintainer: t <t@example.org>\nDescription: t\n")
    (package / "usr" / "share" / name).mkdir(parents=True)
    (package / "usr" / "share" / name / "file.txt").write_text("payload\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", package, root / f"{name}.deb"], check=True,
                   capture_output=True)
    return root / f"{name}.deb"


def test_corrupt_deb_leaves_nothing_half_unpacked(tmp_path: Path) -> None:
    good = make_deb(tmp_path / "debs", "nntc-good")
    bad = make_deb(tmp_path / "debs", "nntc-bad")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # a truncated download
    final = tmp_path / "sysroots" / "arm64-test"
    with pytest.raises(SysrootPackageError, match="nntc-bad.deb"):
        unpack_debs([good, bad], final, TARGETS["arm64"], tmp_path / "log")
    assert not final.exists()
    assert list((tmp_path / "sysroots").iterdir()) == []
    unpack_debs([good], final, TARGETS["arm64"], tmp_path / "log")
    assert (final / "usr" / "share" / "nntc-good" / "file.txt").read_text() == "payload\n"
    assert (final / ".complete").is_file()


def test_a_merged_usr_sysroot_gets_the_links_base_files_would_make(tmp_path: Path) -> None:
    """Debian 13's libc6 ships /usr/lib/ld-linux-aarch64.so.1 only; the ELF interpreter is /lib/..."""
    deb = make_deb(tmp_path / "debs", "nntc-usr")
    package = tmp_path / "debs" / "nntc-usr"
    (package / "usr" / "lib").mkdir()
    (package / "usr" / "lib" / "ld-linux-aarch64.so.1").write_text("loader\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", package, deb], check=True, capture_output=True)
    final = tmp_path / "sysroot"
    unpack_debs([deb], final, TARGETS["arm64"], tmp_path / "log")
    assert (final / "lib").is_symlink() and (final / "lib" / "ld-linux-aarch64.so.1").read_text() == "loader\n"
    assert not (final / "bin").exists(), "no usr/bin, so no bin link"


def test_smoke_runs_the_releases_at_the_same_time_and_keeps_their_order(tmp_path: Path, monkeypatch) -> None:
    """Issue 15's 5-minute goal: the three releases' suites overlap (a barrier that every release
    must reach before any goes on breaks when they run one after another); results come back in
    SMOKE_RELEASES order and every release's output ends up in the step's log."""
    import threading
    from types import SimpleNamespace

    from nnpack_toolchain import smoke

    barrier = threading.Barrier(len(SMOKE_RELEASES), timeout=20)

    def fake_checks(env, wheel, settings, log_path, native=None):
        barrier.wait()
        log_path.write_text(f"output of {env.release.name}\n")
        return [smoke.SmokeTest(f"ran on {env.release.name}", True, 0.0, "")]

    monkeypatch.setattr(smoke, "release_checks", fake_checks)
    envs = [SimpleNamespace(release=SimpleNamespace(name=name), target=SimpleNamespace(name="arm64"), label=name)
            for name in SMOKE_RELEASES]
    step_log = tmp_path / "smoke-arm64.log"
    step_log.write_text("# step\n")
    found = smoke.checks_in_parallel(envs, tmp_path / "w.whl", None, step_log)
    assert [[t.test for t in tests] for tests in found] == [[f"ran on {name}"] for name in SMOKE_RELEASES]
    assert step_log.read_text() == "# step\n" + "".join(f"output of {name}\n" for name in SMOKE_RELEASES)


def test_smoke_in_parallel_reraises_a_release_failure_with_every_log_kept(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from nnpack_toolchain import smoke
    from nnpack_toolchain.errors import ToolchainError

    def fake_checks(env, wheel, settings, log_path, native=None):
        log_path.write_text(f"output of {env.release.name}\n")
        if env.release.name == SMOKE_RELEASES[1]:
            raise ToolchainError("pip install failed", log_path=log_path)
        return []

    monkeypatch.setattr(smoke, "release_checks", fake_checks)
    envs = [SimpleNamespace(release=SimpleNamespace(name=name), target=SimpleNamespace(name="arm64"), label=name)
            for name in SMOKE_RELEASES]
    step_log = tmp_path / "smoke-arm64.log"
    step_log.write_text("")
    with pytest.raises(ToolchainError, match="pip install failed"):
        smoke.checks_in_parallel(envs, tmp_path / "w.whl", None, step_log)
    assert step_log.read_text() == "".join(f"output of {name}\n" for name in SMOKE_RELEASES)


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize(("name", "release"), [("x86_64", "debian13"), ("arm64", "debian12"), ("armv7", "debian11")])
def test_smoke_byte_compiles_the_installed_wheel_for_the_releases_python(name: str, release: str, home: Settings,
                                                                          demo_wheels: dict[str, tuple[Path, Path]],
                                                                          tmp_path: Path) -> None:
    """Every suite process imports the wheel's modules: compiled once natively (host interpreter,
    the release's x86-64 one, or its own on x86-64), not in each of the three processes under QEMU."""
    from nnpack_toolchain.target_env import native_python

    env = python_env(TARGETS[name], home, DISTRIBUTIONS[release])
    settings = Settings(home=tmp_path / "home")
    release_checks(env, demo_wheels[name][0], settings, tmp_path / "log", native_python(env, home))
    tag = "cpython-" + DISTRIBUTIONS[release].python.replace(".", "")
    site = settings.home / "smoke" / name / release / "site"
    assert (site / "nntc_wheel_demo" / "__pycache__" / f"__init__.{tag}.pyc").is_file(), \
        sorted(p.name for p in site.rglob("*.pyc"))


def test_a_hanging_suite_is_a_failed_check_naming_the_last_one_done(tmp_path: Path, monkeypatch) -> None:
    """The armv7 wheel's import hung under QEMU: the step must report it as a failed check (which
    check came last), not end the build with a TimeoutExpired traceback."""
    import subprocess as sp
    from types import SimpleNamespace

    from nnpack_toolchain import smoke

    class HangingEnv:
        target = TARGETS["armv7"]
        release = DISTRIBUTIONS["debian12"]
        label = "debian12 (hangs)"

        def install_wheel(self, wheel, site, log_path):
            site.mkdir(parents=True)

        def run(self, args, *, extra_env=None, timeout=900):
            if args[-1] == "all":
                raise sp.TimeoutExpired(args, timeout, output=b'RESULT {"test": "import mxnet", "ok": true, '
                                                              b'"seconds": 1.0, "detail": ""}\n')
            return SimpleNamespace(returncode=0, stdout=f'RESULT {{"test": "ok in {args[-1]}", "ok": true, '
                                   '"seconds": 1.0, "detail": ""}\n', stderr=f"{smoke.INIT_FAILURE_WARNING}\n")

    wheel = tmp_path / "mxnet-1.9.1-py3-none-manylinux_2_31_armv7l.whl"
    tests = smoke.release_checks(HangingEnv(), wheel, Settings(home=tmp_path / "home"), tmp_path / "log")
    failed = [(t.test, t.detail) for t in tests if not t.ok]
    assert failed == [("suite 'all' ran to the end",
                       f"stopped after {smoke.SUITE_TIMEOUT:.0f} s; the last check done: import mxnet")], tests
    assert [t.test for t in tests if t.ok] == ["import mxnet", "ok in init-failure", "init failure warned exactly once",
                                               "ok in deterministic"]
