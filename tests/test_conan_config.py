"""The private Conan home: profiles, global.conf and Meson machine files, compared with reviewed
files in tests/expected/ and read back by Conan itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnpack_toolchain import conan_config
from nnpack_toolchain.compilers import compilers_for, ensure_compilers
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS

EXPECTED = Path(__file__).parent / "expected"


def reviewed(name: str, settings: Settings) -> str:
    """A reviewed file of tests/expected/ with this home's paths filled in."""
    return (EXPECTED / name).read_text().replace("@CONAN_HOME@", str(settings.conan_home)) \
        .replace("@SOURCE_CACHE@", str(settings.sources_dir)).replace("@HOME@", str(settings.home))


def conan(settings: Settings, *args: str) -> str:
    """Conan's own reading of the home (its CLI, with CONAN_HOME set)."""
    proc = subprocess.run([sys.executable, "-m", "conans.conan", *args],
                          env={**os.environ, **conan_config.conan_env(settings)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def home(tmp_path) -> Settings:
    settings = Settings(home=tmp_path / "home", source_cache=tmp_path / "source cache", jobs=2)
    for target in TARGETS.values():
        conan_config.prepare_home(settings, target)
    return settings


@pytest.mark.parametrize("name", list(TARGETS))
def test_host_profiles_match_the_reviewed_ones(home, name):
    written = (home.conan_home / "profiles" / f"nntc-{name}").read_text()
    assert written == reviewed(f"conan-profile-nntc-{name}", home)


def test_build_profile_global_conf_and_remotes_match_the_reviewed_ones(home):
    profiles = home.conan_home / "profiles"
    assert (profiles / "nntc-build").read_text() == reviewed("conan-profile-nntc-build", home)
    assert (profiles / "default").read_text() == reviewed("conan-profile-nntc-build", home)
    assert (home.conan_home / "global.conf").read_text() == reviewed("conan-global.conf", home)
    assert json.loads((home.conan_home / "remotes.json").read_text()) == {"remotes": []}


@pytest.mark.parametrize("name", list(TARGETS))
def test_machine_files_match_the_reviewed_ones(home, name):
    written = (home.conan_home / "machine-files" / f"{name}.ini").read_text()
    assert written == reviewed(f"meson-machine-{name}.ini", home)


def test_conan_reads_the_source_cache_from_global_conf(home):
    shown = conan(home, "config", "show", "core.sources:download_cache")
    assert shown.strip() == f"core.sources:download_cache: {home.sources_dir}"


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name, arch", [("x86_64", "x86_64"), ("armv7", "armv7hf"), ("arm64", "armv8")])
def test_conan_reads_each_host_profile_as_the_target(home, name, arch):
    ensure_compilers(TARGETS[name], home)  # the profile's compilers, asked for their version below
    shown = json.loads(conan(home, "profile", "show", "-pr:h", f"nntc-{name}", "-pr:b", "nntc-build",
                             "--format=json"))
    host, build = shown["host"], shown["build"]
    assert host["settings"]["arch"] == arch and build["settings"]["arch"] == "x86_64"
    compilers = host["conf"]["tools.build:compiler_executables"]
    # The compiler version in the profile is the one the cross compiler reports.
    for compiler in compilers.values():
        version = subprocess.run([compiler, "-dumpversion"], capture_output=True, text=True, check=True).stdout
        assert version.strip().split(".")[0] == host["settings"]["compiler.version"], compiler
    assert host["conf"]["tools.build:jobs"] == 2
    assert host["conf"]["user.nntc:source_cache"] == str(home.sources_dir)


def test_without_ccache_the_profile_has_no_compiler_launcher(tmp_path):
    settings = Settings(home=tmp_path, ccache=False)
    conan_config.prepare_home(settings, TARGETS["arm64"])
    text = (tmp_path / "conan" / "profiles" / "nntc-arm64").read_text()
    assert "COMPILER_LAUNCHER" not in text
    libc = compilers_for(TARGETS["arm64"], settings).libc_root
    assert f'extra_variables={{"CMAKE_CROSSCOMPILING_EMULATOR": "qemu-aarch64;-L;{libc}"}}' in text


def test_unchanged_files_are_not_rewritten(tmp_path):
    settings = Settings(home=tmp_path)
    conan_config.prepare_home(settings, TARGETS["arm64"])
    profile = tmp_path / "conan" / "profiles" / "nntc-arm64"
    before = profile.stat().st_mtime_ns
    conan_config.prepare_home(settings, TARGETS["arm64"])
    assert profile.stat().st_mtime_ns == before
    assert conan_config.write_if_changed(profile, "changed\n") is True
    assert conan_config.write_if_changed(profile, "changed\n") is False
