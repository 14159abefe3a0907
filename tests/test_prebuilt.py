"""MXNet builds from the team's Conan remote (issue 15), on a real conan_server on loopback.

Home A holds an MXNet build and its wheel (small stand-in files: what is tested is the packaging,
the package id and the transport, not MXNet) and publishes them; home B, whose inputs are the same
but whose paths differ, downloads them in the MXNet step and its wheel step is then up to date;
home C, whose config.mk differs, is told which input differs; an unreachable remote is named;
`--prebuilt require` fails instead of building and `never` never asks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from collections.abc import Callable
from pathlib import Path

import pytest

from nnpack_toolchain import conan_config, prebuilt, publish
from nnpack_toolchain.configure import ConfigureResult
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.mxnet import RESULT_FILE, MxnetResult
from nnpack_toolchain.nnpack import NnpackResult, SuiteSummary
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS
from nnpack_toolchain.wheel import RESULT_FILE as WHEEL_RESULT_FILE
from nnpack_toolchain.mxnet_wheel import current_mxnet_wheel_digest
from nnpack_toolchain.wheel import WheelResult
from test_publish import REMOTE, SERVER_PASSWORD, conan_server, free_port  # noqa: F401 - the fixture

TARGET = TARGETS["arm64"]
pytestmark = [pytest.mark.network]  # conan-server from PyPI, once


def fake_home(root: Path, config_extra: str = "") -> tuple[Settings, ConfigureResult]:
    """A home whose NNPACK, config.mk and sysroot are stand-ins with the same content in every home."""
    settings = Settings(home=root)
    out = settings.output_dir(TARGET.name)
    out.mkdir(parents=True)
    library = out / "deploy" / "libnnpack.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"\x7fELF stand-in nnpack")
    from nnpack_toolchain.sources import sha256_of

    NnpackResult(target=TARGET.name, reference="nnpack/0.0.0.cci.20230202", backend="neon", prefix=str(out),
                 library=str(library), include_dirs=[], library_sha256=sha256_of(library), library_size=20,
                 tests=SuiteSummary(), sources=[], inputs_digest="x").save(out / "nnpack-result.json")
    sysroot = root / "sysroots" / "arm64-bullseye-x"
    sysroot.mkdir(parents=True)
    (sysroot / ".complete").write_text("libopenblas0-pthread_0.3.13+ds-3_arm64.deb\n")
    config_mk = out / "config.mk"
    config_mk.write_text(f"CXX = {root}/compilers/debian11-arm64-x/usr/bin/aarch64-linux-gnu-g++-10\n{config_extra}")
    conan_config.prepare_home(settings, TARGET)
    return settings, ConfigureResult(TARGET.name, config_mk, {}, sysroot, False)


def fake_build(settings: Settings, config: ConfigureResult) -> None:
    """What `invoke build` leaves in home A: libmxnet.so in the tree, MXNet's python package, the wheel."""
    out = settings.output_dir(TARGET.name)
    tree = settings.mxnet_tree(TARGET.name, "1.9.1")
    (tree / "lib").mkdir(parents=True)
    (tree / "lib" / "libmxnet.so").write_bytes(b"\x7fELF stand-in mxnet " * 100)
    (tree / "python" / "mxnet").mkdir(parents=True)
    (tree / "python" / "mxnet" / "__init__.py").write_text("__version__ = '1.9.1'\n")
    from nnpack_toolchain.sources import sha256_of

    library = tree / "lib" / "libmxnet.so"
    inputs = prebuilt.current_inputs(TARGET, settings, config)
    (out / RESULT_FILE).write_text(json.dumps(asdict(MxnetResult(
        target=TARGET.name, library=str(library), library_sha256=sha256_of(library),
        library_size=library.stat().st_size, needed=["libnnpack.so"], source="s", patches=[],
        inputs_digest="local", package_inputs=inputs))))
    wheels = out / "wheel"
    wheels.mkdir()
    wheel = wheels / "mxnet-1.9.1+nnpack.70a77f4-py3-none-manylinux_2_31_aarch64.whl"
    wheel.write_bytes(b"PK stand-in wheel")
    sbom = wheels / (wheel.name + ".cdx.json")
    sbom.write_text("{}\n")
    WheelResult(target=TARGET.name, wheel=str(wheel), wheel_sha256=sha256_of(wheel), wheel_size=17,
                platform_tag="manylinux_2_31_aarch64", manylinux_floor="manylinux_2_31", inputs_digest="a",
                sbom=str(sbom)).save(out / WHEEL_RESULT_FILE)


@pytest.fixture(scope="module")
def published(conan_server: str, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
              module_tmp: Callable[[str], Path]) -> str:
    settings, config = fake_home(module_tmp("a") / "home")
    fake_build(settings, config)
    publish.add_remote(settings, REMOTE, conan_server, user="demo", password=SERVER_PASSWORD)
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        package = prebuilt.publish_prebuilt(settings, TARGET, REMOTE, config)
    assert package.startswith("mxnet-nnpack/1.9.1#") and ":" in package
    assert not list(cwd.iterdir()), "Conan wrote files into the working directory"
    assert [p.name for p in prebuilt.RECIPE.iterdir()] == ["conanfile.py"], "Conan wrote into the recipe folder"
    return conan_server


def test_a_second_home_downloads_the_build_and_its_wheel_is_up_to_date(published: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    settings, config = fake_home(tmp_path / "b home")  # another path: the inputs must still match
    publish.add_remote(settings, REMOTE, published)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = prebuilt.use_prebuilt(TARGET, settings, config)
    assert not list((tmp_path / "cwd").iterdir()), "Conan wrote files into the working directory"
    assert result is not None and result.downloaded_from == REMOTE and not result.up_to_date
    library = Path(result.library)
    assert library == settings.output_dir(TARGET.name) / "prebuilt" / "lib" / "libmxnet.so"
    assert library.read_bytes() == b"\x7fELF stand-in mxnet " * 100
    wheel = WheelResult(**json.loads((settings.output_dir(TARGET.name) / WHEEL_RESULT_FILE).read_text()))
    assert Path(wheel.wheel).read_bytes() == b"PK stand-in wheel" and Path(wheel.sbom).is_file()
    assert Path(wheel.wheel).parent == settings.output_dir(TARGET.name) / "wheel"
    # what the wheel step computes for this library: it finds the wheel up to date
    assert wheel.inputs_digest == current_mxnet_wheel_digest(TARGET, settings, library)
    again = prebuilt.use_prebuilt(TARGET, settings, config)
    assert again is not None and again.up_to_date


def test_a_different_input_is_named_and_require_fails(published: str, tmp_path: Path) -> None:
    settings, config = fake_home(tmp_path / "c", config_extra="ADD_CFLAGS = -O2\n")
    publish.add_remote(settings, REMOTE, published)
    assert prebuilt.use_prebuilt(TARGET, settings, config) is None  # auto: builds here
    assert not (settings.output_dir(TARGET.name) / "prebuilt").exists()
    assert not list(settings.output_dir(TARGET.name).glob(".prebuilt-*")), "a temporary deploy was left"
    strict = dataclasses.replace(settings, prebuilt="require")
    with pytest.raises(prebuilt.PrebuiltError, match=r"with these inputs .*nearest differs in: config\)"):
        prebuilt.use_prebuilt(TARGET, strict, config)


def test_an_unreachable_remote_is_named(tmp_path: Path) -> None:
    settings, config = fake_home(tmp_path / "d")
    publish.add_remote(settings, "gone", f"http://127.0.0.1:{free_port()}")
    assert prebuilt.use_prebuilt(TARGET, settings, config) is None
    with pytest.raises(prebuilt.PrebuiltError, match="Conan remote.s. gone unreachable"):
        prebuilt.use_prebuilt(TARGET, dataclasses.replace(settings, prebuilt="require"), config)


def test_never_and_no_remote(tmp_path: Path) -> None:
    settings, config = fake_home(tmp_path / "e")
    assert prebuilt.use_prebuilt(TARGET, dataclasses.replace(settings, prebuilt="never"), config) is None
    with pytest.raises(prebuilt.PrebuiltError, match="no Conan remote is configured"):
        prebuilt.use_prebuilt(TARGET, dataclasses.replace(settings, prebuilt="require"), config)


def test_wrong_credentials_are_refused_at_login(conan_server: str, tmp_path: Path) -> None:  # noqa: F811
    from nnpack_toolchain.errors import BuildError

    settings, _ = fake_home(tmp_path / "f")
    with pytest.raises(BuildError, match=r"Conan remote nntc-test .*: .*(Wrong user or password|401|403)"):
        publish.add_remote(settings, REMOTE, conan_server, user="demo", password="wrong")


def test_publish_refuses_a_build_older_than_its_config(tmp_path: Path) -> None:
    """The build recorded its inputs; config.mk changed since: publishing it would mislabel it."""
    settings, config = fake_home(tmp_path / "g")
    fake_build(settings, config)
    config.config_mk.write_text(config.config_mk.read_text() + "ADD_CFLAGS = -O1\n")
    with pytest.raises(ConfigurationError, match=r"out of date \(config changed\)"):
        prebuilt.publish_prebuilt(settings, TARGET, REMOTE, config)


def test_a_package_made_by_another_wheel_stage_is_not_taken(published: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The package carries the wheel too: a wheel stage that packs other files (here: another
    on-board benchmark) must build its own wheel rather than take the remote's as up to date."""
    from nnpack_toolchain import mxnet_wheel

    settings, config = fake_home(tmp_path / "f")
    publish.add_remote(settings, REMOTE, published)
    monkeypatch.setattr(mxnet_wheel, "wheel_stage_digest", lambda: "another wheel stage")
    strict = dataclasses.replace(settings, prebuilt="require")
    with pytest.raises(prebuilt.PrebuiltError, match=r"nearest differs in: wheel\)"):
        prebuilt.use_prebuilt(TARGET, strict, config)
