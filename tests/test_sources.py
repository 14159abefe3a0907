"""The source cache: verification, atomic storage, offline mode, rebuilding archives from git."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from nnpack_toolchain.errors import ChecksumMismatchError, MissingSourceError, SourceError
from nnpack_toolchain.sources import Mirror, Pin, SourceCache, sha256_of


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


def test_github_archive_is_rebuilt_from_a_git_clone(tmp_path):
    repo = tmp_path / "demo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    (repo / "a.c").write_text("int a;\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one", "--date=2020-01-01T00:00:00"], check=True,
                   env={"GIT_COMMITTER_DATE": "2020-01-01T00:00:00", "PATH": "/usr/bin:/bin"})
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    # What GitHub serves for /archive/<commit>.tar.gz: git archive, compressed by gzip -n.
    tar = subprocess.run([*git, "archive", "--format=tar", f"--prefix=demo-{commit}/", commit],
                         capture_output=True, check=True).stdout
    expected = hashlib.sha256(subprocess.run(["gzip", "-n", "-c"], input=tar, capture_output=True,
                                             check=True).stdout).hexdigest()
    pin = make_pin(expected, url=f"https://github.com/someone/demo/archive/{commit}.tar.gz")
    cache = SourceCache(tmp_path / "cache")
    origin = cache.import_git(pin, repo)
    assert commit in origin
    assert sha256_of(cache.path(expected)) == expected
    wrong = make_pin("12" * 32, url=f"https://github.com/someone/demo/archive/{commit}.tar.gz")
    with pytest.raises(ChecksumMismatchError):
        cache.import_git(wrong, repo)
    assert not cache.path("12" * 32).exists()


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
