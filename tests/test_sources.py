"""The source cache: verification, atomic storage, offline mode, rebuilding archives from git."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from nnpack_toolchain.errors import ChecksumMismatchError, MissingSourceError, SourceError
from nnpack_toolchain.sources import Mirror, Pin, SourceCache, load_pins, sha256_of


def make_pin(sha: str, url: str = "https://example.invalid/demo.tar.gz", name: str = "demo") -> Pin:
    return Pin(name=name, version="1.0", recipe_dir=Path("."), commit=None,
               mirrors=(Mirror(sha256=sha, filename="demo.tar.gz", url=url),))


def test_store_accepts_only_the_pinned_bytes(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"pinned bytes")
    sha = hashlib.sha256(b"pinned bytes").hexdigest()
    cache = SourceCache(tmp_path / "cache")
    pin = make_pin(sha)
    stored = cache.store(pin, pin.mirrors[0], good)
    assert stored == tmp_path / "cache" / "s" / sha and stored.read_bytes() == b"pinned bytes"
    assert cache.cached_mirror(pin) == pin.mirrors[0]


def test_tampered_download_is_rejected_and_never_cached(tmp_path):
    tampered = tmp_path / "tampered"
    tampered.write_bytes(b"evil bytes")
    pin = make_pin(hashlib.sha256(b"pinned bytes").hexdigest())
    cache = SourceCache(tmp_path / "cache")
    with pytest.raises(ChecksumMismatchError) as info:
        cache.store(pin, pin.mirrors[0], tampered)
    assert pin.mirrors[0].sha256 in info.value.message and "nothing was built" in info.value.message
    assert not tampered.exists()
    assert not cache.path(pin.mirrors[0].sha256).exists()


def test_truncated_cache_entry_is_detected_and_removed(tmp_path):
    data = b"x" * 10000
    pin = make_pin(hashlib.sha256(data).hexdigest())
    cache = SourceCache(tmp_path / "cache")
    entry = cache.path(pin.mirrors[0].sha256)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(data[:5000])  # an interrupted copy
    with pytest.raises(ChecksumMismatchError):
        cache.cached_mirror(pin)
    assert not entry.exists()


def test_offline_with_empty_cache_names_the_missing_source(tmp_path):
    pin = make_pin("ab" * 32)
    with pytest.raises(MissingSourceError) as info:
        SourceCache(tmp_path / "cache").resolve(pin, offline=True)
    message = info.value.message
    assert "demo/1.0" in message and "ab" * 32 in message and "Offline mode never downloads" in message


def test_offline_never_opens_the_network(tmp_path, monkeypatch):
    import urllib.request

    def forbidden(*args, **kwargs):
        raise AssertionError("network used in offline mode")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    with pytest.raises(MissingSourceError):
        SourceCache(tmp_path).resolve(make_pin("cd" * 32), offline=True)


def test_failed_download_leaves_no_partial_file(tmp_path):
    pin = make_pin("ef" * 32, url="http://127.0.0.1:9/unreachable.tar.gz")
    cache = SourceCache(tmp_path / "cache")
    with pytest.raises(SourceError, match="every mirror failed"):
        cache.resolve(pin, offline=False)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []


def test_local_directory_is_marked_unverified(tmp_path):
    resolved = SourceCache(tmp_path).resolve(make_pin("00" * 32), offline=True, local_dir=tmp_path)
    assert not resolved.verified and "UNVERIFIED" in resolved.line()


NNPACK_REPO = Path("/work/.mirror/Maratyszcza+NNPACK/repo")
NNPACK_COMMIT = "70a77f485e8b934224f3a79efd8edcd84cd377b8"
GITHUB_NNPACK_SHA256 = "3d8e1462a390dd0309924edbaefb15139d7135ee6be127cc82950b75bd9835bc"
"""sha256 of https://github.com/Maratyszcza/NNPACK/archive/<NNPACK_COMMIT>.tar.gz as GitHub serves it."""


@pytest.mark.skipif(not NNPACK_REPO.is_dir(), reason=f"needs a clone of NNPACK at {NNPACK_REPO}")
def test_nnpack_archive_rebuilt_from_git_has_githubs_sha256(tmp_path):
    pin = load_pins()["nnpack"]
    assert pin.commit == NNPACK_COMMIT and pin.mirrors[0].sha256 == GITHUB_NNPACK_SHA256  # the pin itself
    cache = SourceCache(tmp_path / "cache")
    origin = cache.import_git(pin, NNPACK_REPO)
    assert NNPACK_COMMIT in origin
    assert sha256_of(cache.path(GITHUB_NNPACK_SHA256)) == GITHUB_NNPACK_SHA256


def test_git_import_that_gives_other_bytes_caches_nothing(tmp_path):
    repo = tmp_path / "demo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    (repo / "a.c").write_text("int a;\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    wrong = make_pin("12" * 32, url=f"https://github.com/someone/demo/archive/{commit}.tar.gz")
    cache = SourceCache(tmp_path / "cache")
    with pytest.raises(ChecksumMismatchError):
        cache.import_git(wrong, repo)
    assert [p for p in cache.root.rglob("*") if p.is_file()] == []


def test_fetch_tries_every_package_and_reports_failures_at_the_end(tmp_path, monkeypatch):
    from nnpack_toolchain import fetch
    from nnpack_toolchain.errors import SourceError
    from nnpack_toolchain.settings import Settings

    good = make_pin(hashlib.sha256(b"ok").hexdigest(), name="good")
    bad = make_pin("ab" * 32, url="http://127.0.0.1:9/bad.tar.gz", name="bad")
    monkeypatch.setattr(fetch, "load_pins", lambda: {"bad": bad, "good": good})
    cache_dir = tmp_path / "sources"
    entry = cache_dir / "s" / good.mirrors[0].sha256
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"ok")
    with pytest.raises(SourceError) as info:
        fetch.fetch_sources(Settings(home=tmp_path, source_cache=cache_dir))
    assert "1 of 2" in info.value.message and "bad/1.0" in info.value.message
