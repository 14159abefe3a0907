"""Libraries asking for an executable stack (glibc 2.41 refuses to load them): found, cleared in the
wheel, and the wheel still loads on Debian 13 (armv7, as Debian 11's armhf OpenBLAS did)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from nnpack_toolchain.configure import BUILD_SYSROOT_PACKAGES
from nnpack_toolchain.distros import DISTRIBUTIONS
from nnpack_toolchain.elfinfo import requests_executable_stack
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.sysroot import build_sysroot
from nnpack_toolchain.target_env import python_env
from nnpack_toolchain.targets import TARGETS
from nnpack_toolchain.wheel import build_wheel, clear_executable_stacks
from test_wheel import compile_demo, demo_spec

SOURCE = "int answer(void) { return 42; }\n"


def host_library(tmp_path: Path, name: str, *flags: str) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("needs the host's gcc (Debian package gcc)")
    source = tmp_path / "answer.c"
    source.write_text(SOURCE)
    library = tmp_path / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", library, source, *flags], check=True)
    return library


def test_the_executable_stack_request_is_read_from_the_program_headers(tmp_path: Path) -> None:
    asks = host_library(tmp_path, "libasks.so", "-Wl,-z,execstack")
    plain = host_library(tmp_path, "libplain.so", "-Wl,-z,noexecstack")
    assert requests_executable_stack(asks.read_bytes())
    assert not requests_executable_stack(plain.read_bytes())
    subprocess.run(["patchelf", "--clear-execstack", asks], check=True)
    assert not requests_executable_stack(asks.read_bytes())


def make_wheel(tmp_path: Path, libraries: dict[str, Path]) -> Path:
    from wheel.wheelfile import WheelFile

    tree = tmp_path / "tree"
    (tree / "demo").mkdir(parents=True)
    (tree / "demo" / "__init__.py").write_text("X = 1\n")
    (tree / "demo.libs").mkdir()
    for arcname, library in libraries.items():
        shutil.copy(library, tree / arcname)
        (tree / arcname).chmod(0o755)
    info = tree / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                "Tag: py3-none-linux_x86_64\n")
    wheel = tmp_path / "demo-1.0-py3-none-linux_x86_64.whl"
    with WheelFile(wheel, "w") as out:
        out.write_files(str(tree))
    return wheel


def test_clearing_changes_only_the_flagged_library_and_keeps_record_and_modes(tmp_path: Path, monkeypatch) -> None:
    from wheel.wheelfile import WheelFile

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1652140800")
    asks = host_library(tmp_path, "libasks.so", "-Wl,-z,execstack")
    plain = host_library(tmp_path, "libplain.so", "-Wl,-z,noexecstack")
    wheel = make_wheel(tmp_path, {"demo.libs/libasks.so": asks, "demo/libplain.so": plain})
    with zipfile.ZipFile(wheel) as before:
        old = {i.filename: (i.external_attr, i.date_time, before.read(i)) for i in before.infolist()}

    assert clear_executable_stacks(wheel, tmp_path / "log") == ["demo.libs/libasks.so"]

    with WheelFile(wheel) as after:  # reading checks every entry against RECORD's sha256
        new = {i.filename: (i.external_attr, i.date_time, after.read(i.filename)) for i in after.infolist()}
    assert list(new) == list(old), "entries or their order changed"
    changed = sorted(name for name in new if new[name][2] != old[name][2])
    assert changed == ["demo-1.0.dist-info/RECORD", "demo.libs/libasks.so"]
    assert all(new[n][:2] == old[n][:2] for n in new), "modes or timestamps changed"
    assert not requests_executable_stack(new["demo.libs/libasks.so"][2])
    again = wheel.read_bytes()
    assert clear_executable_stacks(wheel, tmp_path / "log") == []
    assert wheel.read_bytes() == again, "a wheel with nothing to clear was rewritten"


@pytest.mark.network
@pytest.mark.slow
def test_an_armv7_library_asking_for_an_executable_stack_loads_on_debian_13(tmp_path: Path) -> None:
    """Debian 13's glibc 2.41 refused the armv7 wheel's OpenBLAS ("cannot enable executable stack as
    shared object requires"); the same request made by the demo library must be cleared by build_wheel."""
    target, home = TARGETS["armv7"], Settings(home=tmp_path / "home")
    library = compile_demo(target, home, tmp_path / "lib", extra_flags=("-Wl,-z,execstack",))
    assert requests_executable_stack(library.read_bytes())
    sysroot = build_sysroot(target, home, BUILD_SYSROOT_PACKAGES)
    result = build_wheel(demo_spec(library), target, sysroot, tmp_path / "out", tmp_path / "log")
    assert result.execstack_cleared == ["nntc_wheel_demo/libnntcdemo.so"]
    env = python_env(target, home, DISTRIBUTIONS["debian13"])
    env.install_wheel(Path(result.wheel), tmp_path / "site", tmp_path / "log")
    proc = env.run(["-c", "import nntc_wheel_demo as d; print(d.describe())"],
                   extra_env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr
    assert "'norm_3_4': 5.0" in proc.stdout, proc.stdout
