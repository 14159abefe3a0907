"""The options model: what a user can set, with defaults, in one frozen record."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .distros import DEFAULT_BUILD, Distribution, parse_distribution
from .errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = PROJECT_ROOT / "recipes"
PATCHES_DIR = PROJECT_ROOT / "patches"
TEST_CHOICES = ("quick", "all", "none")
ZIP_EPOCH = 315532800
"""1980-01-01T00:00:00Z: the earliest time a zip (wheel) entry can carry."""


def source_date_epoch(default: int | None) -> int | None:
    """$SOURCE_DATE_EPOCH (reproducible-builds.org) as seconds, or `default` when unset."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or not value.strip():
        return default
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = -1
    if seconds < ZIP_EPOCH:
        raise ConfigurationError(
            f"SOURCE_DATE_EPOCH must be whole seconds since 1970, from {ZIP_EPOCH} (1980-01-01, the earliest "
            f"time a wheel's zip entries can hold) on, not {value!r}; unset it to use the default")
    return seconds


def default_home() -> Path:
    env = os.environ.get("NNPACK_TOOLCHAIN_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nnpack-toolchain"


PREBUILT_CHOICES = ("auto", "require", "never")


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    """Everything the toolchain writes: source cache, Conan home, logs, artifacts."""
    source_cache: Path | None = None
    """Conan download cache (files stored as s/<sha256>); default <home>/sources."""
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    offline: bool = False
    local_sources: dict[str, Path] = field(default_factory=dict)
    """Package name -> local source directory (used instead of the pinned archive; unverified)."""
    backend: str = "fast"
    tests: str = "quick"
    ccache: bool = True
    base: str = DEFAULT_BUILD
    """The base distribution (distros.py) whose compilers and libraries build the targets."""
    distribute: str | None = None
    """HOST[:PORT] of an icecream scheduler: MXNet's compiles go to its cluster (distribute.py)."""
    prebuilt: str = "auto"
    """MXNet from the Conan remote (prebuilt.py): auto (download if there, else build), require, never."""

    def __post_init__(self) -> None:
        if self.tests not in TEST_CHOICES:
            raise ConfigurationError(f"--tests must be one of {', '.join(TEST_CHOICES)}, not {self.tests!r}")
        parse_distribution(self.base)  # an unknown name is refused here, with the known ones
        if self.prebuilt not in PREBUILT_CHOICES:
            raise ConfigurationError(f"--prebuilt must be one of {', '.join(PREBUILT_CHOICES)}, not {self.prebuilt!r}")
        if self.jobs < 1:
            raise ConfigurationError(f"--jobs must be at least 1, not {self.jobs}")
        for name, path in self.local_sources.items():
            if not path.is_dir():
                raise ConfigurationError(f"--source {name}={path}: not a directory")

    @property
    def distribution(self) -> Distribution:
        return parse_distribution(self.base)

    @property
    def sources_dir(self) -> Path:
        return self.source_cache or (self.home / "sources")

    @property
    def conan_home(self) -> Path:
        return self.home / "conan"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def output_dir(self, target_name: str) -> Path:
        return self.home / "out" / target_name

    def mxnet_tree(self, target_name: str, version: str) -> Path:
        """MXNet's resumable build tree for the target on the base distribution."""
        return self.home / "build" / target_name / self.base / f"mxnet-{version}"


def parse_local_sources(values: list[str] | None, option: str = "--source") -> dict[str, Path]:
    """Parse repeated `--source NAME=DIR` (or `--from-git NAME=DIR`) options."""
    result: dict[str, Path] = {}
    for value in values or []:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory:
            raise ConfigurationError(f"{option} expects NAME=DIR, got {value!r}")
        result[name.strip().lower()] = Path(directory).expanduser().resolve()
    return result
