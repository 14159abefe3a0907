"""A toolchain home whose Conan home another Conan version made.

Conan 2.34 itself, measured: a home whose version.txt names a newer 2.x is downgraded with a
warning and works; a package database with other columns (a newer Conan's schema) or not a
database at all stops `conan export` with a sqlite traceback; a Conan 1 home is taken as it is
(its settings.yml and layout are not Conan 2's). The toolchain refuses the last three before
Conan touches the home, in one line that says to remove it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conan import __version__ as CONAN_VERSION

from conftest import require_sources, run_invoke, shared_source_cache
from nnpack_toolchain import conan_config
from nnpack_toolchain.conan_home import check_conan_home
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.sources import SourceCache, pins_for_backend

CONAN = [sys.executable, "-m", "conans.conan"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def conan_home_made_by_conan_1(home: Path) -> Path:
    conan = home / "conan"
    (conan / "data").mkdir(parents=True)
    (conan / "version.txt").write_text("1.66.0")
    (conan / "conan.conf").write_text("[log]\nrun_to_output = True\n[general]\ndefault_profile = default\n")
    (conan / "settings.yml").write_text("os:\n    Linux:\narch: [x86_64, armv8]\n")
    return conan


def conan_home_with_a_newer_database(home: Path, tmp_path: Path) -> Path:
    """A Conan 2 home whose package database has a column Conan 2.34 does not know, as a newer
    Conan adding one would leave it."""
    conan = home / "conan"
    settings = Settings(home=home)
    conan_config.export_recipes(settings, [], tmp_path / "export.log")  # a real database, Conan 2.34's
    with sqlite3.connect(conan / "p" / "cache.sqlite3") as db:
        db.execute("ALTER TABLE recipes ADD COLUMN origin text NOT NULL DEFAULT ''")
    (conan / "version.txt").write_text("2.99.0")
    return conan


def test_publish_refuses_a_conan_1_home(tmp_path):
    home = tmp_path / "home"
    conan = conan_home_made_by_conan_1(home)
    before = snapshot(conan)
    for args in (["publish", "--arch", "arm64", "--remote", "r"],
                 ["use-remote", "--remote", "r", "--url", "http://127.0.0.1:9"]):
        result = run_invoke(*args, "--home", str(home))
        assert result.returncode == 2, result.stderr
        assert error_line(result) == (
            f"error: the Conan home {conan} was made by Conan 1.66.0; this toolchain runs Conan {CONAN_VERSION}, which "
            f"cannot use it: remove {conan} (it holds only Conan packages, which the next 'invoke nnpack' builds "
            "or downloads again, and the remotes of 'invoke use-remote') or choose another --home")
        assert snapshot(conan) == before  # Conan never started on it (it rewrites version.txt)


def test_a_newer_conans_database_breaks_conan_and_the_toolchain_says_so(tmp_path):
    conan = conan_home_with_a_newer_database(tmp_path / "home", tmp_path)
    # What Conan 2.34 does with it on its own: a traceback.
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "conanfile.py").write_text("from conan import ConanFile\n\nclass P(ConanFile):\n"
                                         "    name = 'probe'\n    version = '1.0'\n")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(conan), str(copy)], check=True)
    raw = subprocess.run([*CONAN, "export", str(recipe)], env={"CONAN_HOME": str(copy), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=False)
    assert raw.returncode != 0 and "Traceback" in raw.stderr and "columns but 5 values" in raw.stderr

    with pytest.raises(ConfigurationError) as info:
        check_conan_home(conan)
    message = info.value.message
    assert message.startswith(f"the Conan home {conan} was made by Conan 2.99.0: its package database "
                              f"{conan / 'p' / 'cache.sqlite3'} has table 'recipes' with columns ")
    assert "'origin'" in message and f"remove {conan}" in message and "\n" not in message


def test_nnpack_refuses_a_home_with_a_newer_conans_database(tmp_path):
    """Through `invoke nnpack`: the check runs before Conan exports into the home."""
    pins = pins_for_backend("neon")
    require_sources(*(p.name for p in pins))
    shared = SourceCache(shared_source_cache())
    sources = SourceCache(tmp_path / "sources")
    for pin in pins:
        sources.import_file(pin, shared.path(shared.cached_mirror(pin).sha256))
    home = tmp_path / "home"
    conan = conan_home_with_a_newer_database(home, tmp_path)
    database = (conan / "p" / "cache.sqlite3").read_bytes()
    result = run_invoke("nnpack", "--arch", "arm64", "--tests", "none", "--home", str(home),
                        "--source-cache", str(sources.root))
    assert result.returncode == 2, result.stderr
    assert error_line(result).startswith(f"error: the Conan home {conan} was made by Conan 2.99.0: its package "
                                         "database")
    assert (conan / "p" / "cache.sqlite3").read_bytes() == database
    assert (conan / "version.txt").read_text() == "2.99.0"
    assert not (conan / "profiles").exists()  # nothing of the toolchain's written into it


@pytest.mark.parametrize("content, reason", [
    (b"SQLite format 3\x00 but then garbage" + b"\x00" * 200, "cannot be read"),
    (b"", "has table 'recipes' with columns none"),
])
def test_an_unreadable_database_is_refused(tmp_path, content, reason):
    conan = tmp_path / "conan"
    (conan / "p").mkdir(parents=True)
    (conan / "p" / "cache.sqlite3").write_bytes(content)
    with pytest.raises(ConfigurationError, match=reason):
        check_conan_home(conan)


def test_a_conan_3_home_is_refused(tmp_path):
    (tmp_path / "version.txt").write_text("3.0.1")
    with pytest.raises(ConfigurationError, match="was made by Conan 3.0.1; this toolchain runs Conan 2"):
        check_conan_home(tmp_path)


def test_a_newer_conan_2_home_with_the_same_database_is_used(tmp_path):
    """Conan downgrades such a home itself (warning, back-migrations); the toolchain lets it."""
    settings = Settings(home=tmp_path / "home")
    conan_config.export_recipes(settings, [], tmp_path / "export.log")
    (settings.conan_home / "version.txt").write_text("2.99.0")
    check_conan_home(settings.conan_home)
    conan_config.export_recipes(settings, ["fxdiv"], tmp_path / "export.log")
    assert "exported fxdiv/" in (tmp_path / "export.log").read_text()
    assert (settings.conan_home / "version.txt").read_text().strip() == CONAN_VERSION  # Conan's own downgrade
