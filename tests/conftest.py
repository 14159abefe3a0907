"""Shared fixtures. Tests needing real upstream sources find them in the source cache
($NNPACK_TOOLCHAIN_SOURCE_CACHE, else <home>/sources) and skip, naming what is missing.

No test reads or writes the user's toolchain home: for the whole session $NNPACK_TOOLCHAIN_HOME
points at a temporary directory (removed at the end). Only the source cache of the user's home is
shared, for reading pinned archives; tests that build use a home of their own. Tests that need
an MXNet build (marker mxnet_build) read it from $NNTC_MXNET_BUILD_HOME (default: the user's home).

Markers say what a test needs (pyproject.toml): `network` tests skip, naming the host, when
Debian's archive or PyPI cannot be reached; `slow` ones build real upstream sources (minutes).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest

from nnpack_toolchain.settings import Settings, default_home
from nnpack_toolchain.sources import SourceCache, load_pins, system_debian_mirror
from tmpdirs import module_tmp  # noqa: F401  (a fixture: module-scoped homes removed with the module)

REPO = Path(__file__).resolve().parents[1]
USER_HOME = default_home()
"""The user's toolchain home as it was before the session isolated it (read-only for tests)."""
SOURCE_CACHE = Path(os.environ.get("NNPACK_TOOLCHAIN_SOURCE_CACHE") or USER_HOME / "sources")
MXNET_BUILD_HOME = Path(os.environ.get("NNTC_MXNET_BUILD_HOME") or USER_HOME)
_SESSION_HOME: list[Path] = []

# What target_scripts/smoke_suite.py reports, per run (smoke.py runs both), in order.
SMOKE_SUITE_CHECKS = {
    "all": [
        "import mxnet",
        "Features() has NNPACK",
        "1x1 first call on NNPACK, no warning",
        "convolution 3x3 on NNPACK",
        "max-pooling 2x2/2 on NNPACK",
        "fully-connected on NNPACK",
        "dilated convolution falls back",
        "grouped convolution falls back",
        "padded max-pool (1,1,3,3) bit-exact",
        "padded max-pool (1,4,9,9) bit-exact",
        "fully-connected flatten=False on NNPACK",
        "settings read once, not per call",
        "small network forward",
        "auto policy settles and matches",
        "fork then convolve",
        "same-buffer weight change detected",
        "transform allocation failure falls back",
        "memory budget, release, executor frees",
        "tuning exports and imports (pinned)",
        "two layers of one shape: precompute measured",
        "settings checked before any is applied",
        "memory budget 'inf' is unlimited",
        "precompute off holds no transform",
    ],
    "init-failure": ["import mxnet", "nnp_initialize failure falls back", "  ... and again (warning logged once)"],
    "deterministic": ["import mxnet", "MXNET_ENFORCE_DETERMINISM: auto measures nothing"],
}
# run_smoke's list: the other runs without their "import mxnet", plus the host's stderr check.
SMOKE_TESTS = [*SMOKE_SUITE_CHECKS["all"], *SMOKE_SUITE_CHECKS["init-failure"][1:], "init failure warned exactly once",
               *SMOKE_SUITE_CHECKS["deterministic"][1:]]


def pytest_configure(config: pytest.Config) -> None:
    session_home = Path(tempfile.mkdtemp(prefix="nntc-test-home-"))
    _SESSION_HOME.append(session_home)
    os.environ["NNPACK_TOOLCHAIN_HOME"] = str(session_home)  # subprocesses inherit it too
    os.environ["NNPACK_TOOLCHAIN_SOURCE_CACHE"] = str(SOURCE_CACHE)


def pytest_unconfigure(config: pytest.Config) -> None:
    for home in _SESSION_HOME:
        shutil.rmtree(home, ignore_errors=True)


def shared_source_cache() -> Path:
    return SOURCE_CACHE


def require_sources(*names: str) -> None:
    """Skip the test unless every named package's pinned source is in the shared cache."""
    cache = SourceCache(shared_source_cache())
    pins = load_pins()
    missing = [pins[n].describe_missing() for n in names if cache.cached_mirror(pins[n]) is None]
    if missing:
        pytest.skip("pinned source missing from the source cache " + str(shared_source_cache()) + ": "
                    + "; ".join(missing) + " (fill it with 'invoke fetch')")


def _reachable(url: str) -> str | None:
    """None when a TCP connection to url's host opens within 10 s, else why not."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=10):
            return None
    except OSError as exc:
        return f"{parsed.hostname}:{port}: {exc}"


def _pip_index() -> str:
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"


@cache
def network_problem() -> str | None:
    """Why Debian's archive or the PyPI index cannot be reached (None when both can)."""
    try:
        debian = system_debian_mirror()
    except Exception as exc:  # no apt sources at all
        return str(exc)
    for name, url in (("Debian archive", debian), ("PyPI index", _pip_index())):
        if url.startswith("file:"):
            continue
        problem = _reachable(url)
        if problem:
            return f"{name} unreachable ({problem})"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("network") and (problem := network_problem()):
        pytest.skip(f"needs the network: {problem}")


@pytest.fixture(scope="session")
def build_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A fresh toolchain home (empty Conan cache: everything really builds) sharing the source cache."""
    home = tmp_path_factory.mktemp("home")
    return Settings(home=home, source_cache=shared_source_cache(), jobs=os.cpu_count() or 1)


def run_invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["python3", "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=3600)
