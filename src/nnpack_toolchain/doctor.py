"""Host checks: every tool the pipeline runs, and the Debian package that provides it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from .errors import MissingToolError
from .targets import TARGETS, Target

# Tools every target needs: command -> Debian package.
COMMON_TOOLS: dict[str, str] = {
    "cmake": "cmake",
    "ninja": "ninja-build",
    "pkg-config": "pkg-config",
    "ccache": "ccache",
    "readelf": "binutils",
    "git": "git",
    "file": "file",
    "gzip": "gzip",
    "xz": "xz-utils",
    "dpkg-source": "dpkg-dev",
    "patch": "patch",
    "make": "make",
    "python3": "python3",
    "gcc": "gcc",
}
# Libraries the host's gcc builds against (QEMU's instruction-count plugin, insn_count.py):
# pkg-config name -> Debian package.
HOST_LIBRARIES: dict[str, str] = {"glib-2.0": "libglib2.0-dev"}
# Installed with the project itself (pyproject.toml), from PyPI.
PYTHON_TOOLS: dict[str, str] = {"conan": "conan", "meson": "meson", "invoke": "invoke"}
# Tools of optional features: `invoke setup` installs their packages, doctor and the builds do not
# require them (the feature checks for them when used): command -> Debian package.
OPTIONAL_TOOLS: dict[str, str] = {
    "icecc": "icecc",  # --distribute: icecream's client and icecc-create-env (distribute.py)
    "icecc-create-env": "icecc",
}


@dataclass(frozen=True)
class Check:
    tool: str
    provider: str
    found: str | None

    @property
    def ok(self) -> bool:
        return self.found is not None


def tools_for(targets: list[Target]) -> dict[str, str]:
    tools = dict(COMMON_TOOLS)
    for target in targets:
        tools.update(target.debian_packages)
    return tools


def check(targets: list[Target] | None = None) -> list[Check]:
    targets = list(TARGETS.values()) if targets is None else targets
    checks = [Check(tool, f"apt-get install {pkg}", shutil.which(tool)) for tool, pkg in tools_for(targets).items()]
    checks += [Check(name, f"apt-get install {pkg}", library_version(name)) for name, pkg in HOST_LIBRARIES.items()]
    checks += [Check(tool, f"pip install {pkg}", shutil.which(tool)) for tool, pkg in PYTHON_TOOLS.items()]
    return checks


def library_version(name: str) -> str | None:
    """'glib-2.0 2.74.6 (pkg-config)' when pkg-config finds the library's development files, else None."""
    if shutil.which("pkg-config") is None:
        return None
    proc = subprocess.run(["pkg-config", "--modversion", name], capture_output=True, text=True, check=False)
    return f"{name} {proc.stdout.strip()} (pkg-config)" if proc.returncode == 0 else None


def missing_libraries() -> dict[str, str]:
    """Host libraries pkg-config cannot find -> their Debian packages."""
    return {name: pkg for name, pkg in HOST_LIBRARIES.items() if library_version(name) is None}


def require_tools(targets: list[Target]) -> None:
    """Raise MissingToolError naming the Debian package of every missing tool."""
    missing = {tool: pkg for tool, pkg in tools_for(targets).items() if shutil.which(tool) is None}
    if missing:
        raise MissingToolError(missing)


def debian_packages(targets: list[Target] | None = None) -> list[str]:
    """What `invoke setup` installs: the targets' required tools and the optional ones."""
    targets = list(TARGETS.values()) if targets is None else targets
    return sorted(set(tools_for(targets).values()) | set(HOST_LIBRARIES.values()) | set(OPTIONAL_TOOLS.values()))
