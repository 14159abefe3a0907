"""Conan 2, configured from the target model: a private Conan home, profiles, machine files.

Everything is written only when its content changes, so an unchanged second run invalidates
nothing.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from . import log
from .compilers import Compilers, compilers_for, ensure_compilers
from .conan_home import check_conan_home
from .errors import BuildError
from .files import atomic_write_text
from .locks import exclusive
from .progress import CtestTests
from .runner import run
from .settings import RECIPES_DIR, Settings
from .targets import Target

BUILD_PROFILE = "nntc-build"
HOST_GCC = "12"
"""The build host's own GCC (Debian 12): builds the tools that run during a build, never target code."""


def write_if_changed(path: Path, text: str) -> bool:
    """Replace path atomically (a temporary file of its own) when its content differs."""
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def conan_env(settings: Settings) -> dict[str, str]:
    return {"CONAN_HOME": str(settings.conan_home), "NO_COLOR": "1"}


def host_profile_name(target: Target) -> str:
    return f"nntc-{target.name}"


def global_conf(settings: Settings) -> str:
    return "\n".join(
        [
            "# Written by nnpack-toolchain; edits are overwritten.",
            f"core.sources:download_cache={settings.sources_dir}",
            "core:non_interactive=True",
            f"tools.build:jobs={settings.jobs}",
            # Tells the recipes which mirror of a pinned source the cache holds.
            f"user.nntc:source_cache={settings.sources_dir}",
            "",
        ]
    )


def machine_file(compilers: Compilers) -> str:
    """Meson machine file: QEMU as exe_wrapper, so `meson test` runs cross tests instead of skipping."""
    wrapper = ", ".join(f"'{part}'" for part in compilers.emulator)
    if not compilers.emulator:
        return "[binaries]\n"
    # Conan writes needs_exe_wrapper = false when tools.build.cross_building:can_run is set;
    # this file comes later on the command line and wins.
    return f"[properties]\nneeds_exe_wrapper = true\n\n[binaries]\nexe_wrapper = [{wrapper}]\n"


def settings_lines(conan_arch: str, gcc_version: str) -> list[str]:
    return [
        "[settings]",
        "os=Linux",
        f"arch={conan_arch}",
        "compiler=gcc",
        f"compiler.version={gcc_version}",
        "compiler.libcxx=libstdc++11",
        "compiler.cppstd=gnu17",
        "build_type=Release",
    ]


def host_profile(compilers: Compilers, settings: Settings, machine_file_path: Path) -> str:
    target = compilers.target
    flags = json.dumps([*compilers.flags, *target.compiler_flags])
    link_flags = json.dumps(list(compilers.flags))
    extra = {}
    if compilers.emulator:
        extra["CMAKE_CROSSCOMPILING_EMULATOR"] = ";".join(compilers.emulator)
    if settings.ccache:
        extra["CMAKE_C_COMPILER_LAUNCHER"] = "ccache"
        extra["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
    executables = json.dumps({"c": str(compilers.cc), "cpp": str(compilers.cxx)})
    distribution = compilers.distribution
    lines = [
        f"# Host profile for target {target.name} ({target.gnu_triple}) with Debian {distribution.suite}'s "
        f"GCC {distribution.gcc} (glibc {distribution.glibc}); generated from the target model.",
        *settings_lines(target.conan_arch, distribution.gcc),
        "[conf]",
        f"tools.build:compiler_executables={executables}",
        f"tools.build:cflags={flags}",
        f"tools.build:cxxflags={flags}",
        f"tools.build:sharedlinkflags={link_flags}",
        f"tools.build:exelinkflags={link_flags}",
        f"tools.cmake.cmaketoolchain:system_processor={target.cmake_system_processor}",
        "tools.cmake.cmaketoolchain:generator=Ninja",
        f"tools.cmake.cmaketoolchain:extra_variables={json.dumps(extra)}",
        "tools.gnu:pkg_config=pkg-config",
        f"tools.meson.mesontoolchain:extra_machine_files={json.dumps([str(machine_file_path)])}",
    ]
    if compilers.emulator:
        lines.append("tools.build.cross_building:can_run=True")
    return "\n".join(lines) + "\n"


def build_profile() -> str:
    return "\n".join(
        [
            "# Build profile: the x86-64 Debian host.",
            *settings_lines("x86_64", HOST_GCC),
            "[conf]",
            "tools.cmake.cmaketoolchain:generator=Ninja",
            "",
        ]
    )


def prepare_home(settings: Settings, target: Target) -> None:
    """Write global.conf, an empty remote list (ConanCenter is never used), profiles, machine file.

    Under the Conan home's lock: another shell's build reads these files while its Conan runs.
    """
    check_conan_home(settings.conan_home)  # before anything is written into another Conan's home
    with conan_lock(settings):
        _write_home_files(settings, target)


def _write_home_files(settings: Settings, target: Target) -> None:
    home = settings.conan_home
    compilers = compilers_for(target, settings)  # paths only: the build steps download them
    write_if_changed(home / "global.conf", global_conf(settings))
    remotes = home / "remotes.json"
    if not remotes.exists():
        write_if_changed(remotes, json.dumps({"remotes": []}, indent=2) + "\n")
    machine = home / "machine-files" / f"{target.name}.ini"
    write_if_changed(machine, machine_file(compilers))
    write_if_changed(home / "profiles" / BUILD_PROFILE, build_profile())
    write_if_changed(home / "profiles" / "default", build_profile())
    write_if_changed(home / "profiles" / host_profile_name(target), host_profile(compilers, settings, machine))


def conan_command() -> list[str]:
    """Conan from the same Python environment as the toolchain."""
    return [sys.executable, "-m", "conans.conan"]


def profile_args(target: Target) -> list[str]:
    return ["-pr:h", host_profile_name(target), "-pr:b", BUILD_PROFILE]


def export_recipes(settings: Settings, names: list[str], log_path: Path) -> None:
    """Export the shared base and the named recipes into the private Conan cache.

    Through Conan's Python API, in one process: ten `conan export` processes cost seconds.
    """
    from conan.api.conan_api import ConanAPI
    from conan.errors import ConanException

    api = ConanAPI(str(settings.conan_home))
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stderr(log):
        for recipe in ["base", *names]:
            path = RECIPES_DIR / recipe / "conanfile.py"
            try:
                ref, _ = api.export.export(str(path), None, None, None, None, remotes=[])
            except ConanException as exc:
                raise BuildError(f"conan export {recipe} failed: {exc}", log_path=log_path) from exc
            log.write(f"exported {ref.repr_notime()} from {path}\n")


def package_args(target: Target, settings: Settings, *, backend: str | None = None) -> list[str]:
    """Profiles, options and confs shared by `conan create` and `conan install` of a target."""
    args = [*profile_args(target), "-c", f"user.nntc:nnpack_tests={settings.tests}",
            "-c", 'tools.info.package_id:confs=["user.nntc:source_dir", "user.nntc:nnpack_tests"]']
    if backend:
        args += ["-o", f"nnpack/*:backend={backend}"]
    if settings.offline:  # configured remotes (the binary cache, see publish.py) are never asked
        args.append("--no-remote")
    else:
        args += remote_args(settings)
    for name, directory in conan_local_sources(settings).items():
        args += ["-c", f"{name}/*:user.nntc:source_dir={directory}"]
    return args


def configured_remotes(settings: Settings) -> dict[str, str]:
    """Name -> URL of the enabled remotes in the private Conan home (invoke use-remote adds them)."""
    path = settings.conan_home / "remotes.json"
    if not path.is_file():
        return {}
    return {r["name"]: r["url"] for r in json.loads(path.read_text()).get("remotes", []) if not r.get("disabled")}


def url_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


_SAID_UNREACHABLE: set[str] = set()


def remote_args(settings: Settings) -> list[str]:
    """Conan's remote selection for a build: the configured remotes that answer (none: --no-remote).

    An unreachable remote is a cache miss, not a failure: NNPACK then builds here (Conan itself
    would stop at the first remote it cannot reach), said once per remote in one line.
    """
    configured = configured_remotes(settings)
    reachable = [name for name, url in configured.items() if url_reachable(url)]
    for name in configured.keys() - set(reachable) - _SAID_UNREACHABLE:
        _SAID_UNREACHABLE.add(name)
        log.info(f"  Conan remote {name} ({configured[name]}) is unreachable: building here without it "
                 f"(invoke use-remote --remove {name} forgets it)")
    if len(reachable) == len(configured):
        return []
    return [arg for name in reachable for arg in ("-r", name)] or ["--no-remote"]


def conan_local_sources(settings: Settings) -> dict[str, Path]:
    """The --source NAME=DIR entries that are Conan packages (not MXNet, which its own stage builds)."""
    return {n: d for n, d in settings.local_sources.items() if (RECIPES_DIR / n / "conanfile.py").is_file()}


def create(target: Target, settings: Settings, recipe: str, log_path: Path, *, backend: str | None = None) -> None:
    """`conan create` of a recipe for a target: builds what is missing, then runs its test_package
    (unless tests are off)."""
    ensure_compilers(target, settings)  # the profile names the base distribution's compilers
    rebuild_local = [f"--build={name}/*" for name in conan_local_sources(settings)]
    no_test_package = ["--test-folder="] if settings.tests == "none" else []  # --tests none: no tests at all
    run([*conan_command(), "create", RECIPES_DIR / recipe, *package_args(target, settings, backend=backend),
         "--build=missing", *rebuild_local, *no_test_package], env=conan_env(settings), log_path=log_path,
        what=f"conan create {recipe} for {target.name}", progress=CtestTests(f"{recipe} [{target.name}]"))


@contextmanager
def conan_lock(settings: Settings) -> Iterator[None]:
    """Exclusive use of the shared Conan home: Conan 2's cache is not safe for concurrent writers,
    so a second `invoke` (another target in another shell) waits here instead of clobbering it."""
    with exclusive(settings.conan_home / ".nntc.lock",
                   f"waiting for another build using the Conan home {settings.conan_home}"):
        yield
