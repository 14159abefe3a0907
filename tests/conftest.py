"""Shared fixtures. Tests needing real upstream sources find them in the source cache
($NNPACK_TOOLCHAIN_SOURCE_CACHE, else <home>/sources) and skip, naming what is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nnpack_toolchain.settings import Settings, default_home
from nnpack_toolchain.sources import SourceCache, load_pins

REPO = Path(__file__).resolve().parents[1]


def shared_source_cache() -> Path:
    env = os.environ.get("NNPACK_TOOLCHAIN_SOURCE_CACHE")
    return Path(env) if env else default_home() / "sources"


def require_sources(*names: str) -> None:
    """Skip the test unless every named package's pinned source is in the shared cache."""
    cache = SourceCache(shared_source_cache())
    pins = load_pins()
    missing = [pins[n].describe_missing() for n in names if cache.cached_mirror(pins[n]) is None]
    if missing:
        pytest.skip("pinned source missing from the source cache " + str(shared_source_cache()) + ": "
                    + "; ".join(missing) + " (fill it with 'invoke fetch')")


@pytest.fixture(scope="session")
def build_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A fresh toolchain home (empty Conan cache: everything really builds) sharing the source cache."""
    home = tmp_path_factory.mktemp("home")
    return Settings(home=home, source_cache=shared_source_cache(), jobs=os.cpu_count() or 1)


def run_invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["python3", "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=3600)
