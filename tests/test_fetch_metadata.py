"""Conan's metadata next to every cached source (`s/<sha256>.json`), judged by Conan's own code.

`conan upload` walks every file of the download cache and stops at one without its metadata
("Missing metadata file for backup source"); Conan's `get()` downloads again when the URL it is
given is not among those the metadata records. The oracles here are Conan's DownloadCache (the
code `conan upload` runs), the recipe's own `mirror_url` and a real `conan create`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from conan.api.model import PackagesList, RecipeReference
from conan.errors import ConanException
from conan.internal.rest.download_cache import DownloadCache

from conftest import require_sources, shared_source_cache
from nnpack_toolchain import conan_config, fetch
from nnpack_toolchain.errors import ChecksumMismatchError
from nnpack_toolchain.settings import RECIPES_DIR, Settings
from nnpack_toolchain.sources import Mirror, Pin, SourceCache, load_pins, sha256_of
from nnpack_toolchain.targets import TARGETS

NNPACK_REPO = Path("/work/.mirror/Maratyszcza+NNPACK/repo")


def recipe_module():
    """recipes/base/conanfile.py, the nntc-base python_requires, as Conan loads it."""
    spec = importlib.util.spec_from_file_location("nntc_base_recipe", RECIPES_DIR / "base" / "conanfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conan_walk(root: Path, package_list: PackagesList | None = None) -> list[str]:
    """What `conan upload` collects from the download cache (raises where Conan's upload stops)."""
    return DownloadCache(str(root)).get_backup_sources_files([], package_list)


def metadata(cache: SourceCache, sha256: str) -> Path:
    """Where Conan looks for a cached file's metadata."""
    return cache.root / "s" / f"{sha256}.json"


def file_pin(tmp_path: Path, data: bytes, name: str = "demo", stage: str = "nnpack") -> Pin:
    """A pin whose only mirror is a file:// URL (urllib downloads it like an http one)."""
    source = tmp_path / f"{name}-upstream.tar.gz"
    source.write_bytes(data)
    mirror = Mirror(sha256=hashlib.sha256(data).hexdigest(), filename=f"{name}.tar.gz", url=source.as_uri())
    return Pin(name=name, version="1.0", recipe_dir=Path("."), commit=None, mirrors=(mirror,), stage=stage)


def test_the_toolchain_gives_conan_the_url_the_recipe_passes_to_get():
    mirror_url = recipe_module().mirror_url
    pins = load_pins()
    checked = 0
    for name, pin in pins.items():
        data = yaml.safe_load((pin.recipe_dir / "conandata.yml").read_text())
        (entries,) = [s["mirrors"] for s in data["sources"].values()]
        assert len(entries) == len(pin.mirrors)
        for entry, mirror in zip(entries, pin.mirrors):
            assert mirror.conan_url == mirror_url(name, entry), (name, entry)
            # The recipe takes the first mirror present in the cache: for a file shared by two
            # mirrors (googletest's GitHub and Debian tarballs), that of the first one.
            first = next(e for e in entries if e["sha256"] == mirror.sha256)
            assert pin.conan_url(mirror.sha256) == mirror_url(name, first)
            checked += 1
    kinds = {kind for p in pins.values() for m in p.mirrors for kind in ("url", "debian", "pypi") if getattr(m, kind)}
    assert kinds == {"url", "debian", "pypi"} and checked >= 15  # every form of URL was compared


def test_every_way_of_filling_the_cache_passes_conans_upload_walk(tmp_path):
    cache = SourceCache(tmp_path / "cache")
    downloaded = file_pin(tmp_path, b"downloaded bytes", "downloaded")
    cache.resolve(downloaded, offline=False)  # download()
    imported = file_pin(tmp_path, b"imported bytes", "imported")
    elsewhere = tmp_path / "from-another-machine.tar.gz"
    elsewhere.write_bytes(b"imported bytes")
    cache.import_file(imported, elsewhere)
    pins = [downloaded, imported]
    if NNPACK_REPO.is_dir():
        nnpack = load_pins()["nnpack"]
        cache.import_git(nnpack, NNPACK_REPO)
        pins.append(nnpack)

    files = conan_walk(cache.root)  # Conan 2.34: "Missing metadata file for backup source" before the fix
    blobs = [cache.path(p.mirrors[0].sha256) for p in pins]
    assert sorted(files) == sorted(str(p) for b in blobs for p in (b, b.with_name(b.name + ".json")))
    for pin, blob in zip(pins, blobs):
        summary = json.loads(blob.with_name(blob.name + ".json").read_text())
        assert summary["references"] == {pin.reference: [pin.mirrors[0].url]}
        assert isinstance(summary["timestamp"], int)
        assert DownloadCache.get_urls_from_backup_sources(str(blob)) == {pin.mirrors[0].url}


def test_the_mxnet_tarball_has_metadata_but_stays_out_of_an_nnpack_upload(tmp_path):
    cache = SourceCache(tmp_path / "cache")
    mxnet = file_pin(tmp_path, b"mxnet release", "mxnet", stage="mxnet")  # never goes through Conan
    dependency = file_pin(tmp_path, b"a dependency", "pthreadpool")
    for pin in (mxnet, dependency):
        cache.resolve(pin, offline=False)
    uploaded = PackagesList()
    ref = RecipeReference.loads(f"{dependency.reference}#0123456789abcdef")
    uploaded.add_ref(ref)
    uploaded.recipe_dict(ref)["upload"] = True
    blob = cache.path(dependency.mirrors[0].sha256)
    assert sorted(conan_walk(cache.root, uploaded)) == sorted([str(blob), f"{blob}.json"])
    assert DownloadCache.get_urls_from_backup_sources(str(cache.path(mxnet.mirrors[0].sha256))) == {
        mxnet.mirrors[0].url}


def test_fetch_backfills_a_cache_filled_without_metadata(tmp_path, monkeypatch):
    """A cache filled by an older toolchain (or copied without the .json files) gets them."""
    known = file_pin(tmp_path, b"known bytes", "known")
    cache = SourceCache(tmp_path / "sources")
    (cache.root / "s").mkdir(parents=True)
    cache.path(known.mirrors[0].sha256).write_bytes(b"known bytes")
    stale = hashlib.sha256(b"an old pin").hexdigest()  # a source no pin names any more
    cache.path(stale).write_bytes(b"an old pin")
    broken = file_pin(tmp_path, b"broken json", "broken")
    cache.path(broken.mirrors[0].sha256).write_bytes(b"broken json")
    metadata(cache, broken.mirrors[0].sha256).write_text("{not json")
    with pytest.raises((ConanException, ValueError)):  # a missing or an unreadable .json: Conan stops
        conan_walk(cache.root)

    monkeypatch.setattr(fetch, "load_pins", lambda: {"known": known, "broken": broken})
    fetch.fetch_sources(Settings(home=tmp_path / "home", source_cache=cache.root, offline=True))

    assert len(conan_walk(cache.root)) == 4  # known and broken (their references); the stale one has none
    assert DownloadCache.get_urls_from_backup_sources(str(cache.path(known.mirrors[0].sha256))) == {
        known.mirrors[0].url}
    assert DownloadCache.get_urls_from_backup_sources(str(cache.path(broken.mirrors[0].sha256))) == {
        broken.mirrors[0].url}
    assert json.loads(metadata(cache, stale).read_text())["references"] == {}
    assert cache.path(stale).read_bytes() == b"an old pin"  # kept: not ours to delete


def test_resolve_backfills_the_file_it_uses_and_keeps_conans_own_entries(tmp_path):
    pin = file_pin(tmp_path, b"bytes", "demo")
    cache = SourceCache(tmp_path / "cache")
    sha = pin.mirrors[0].sha256
    cache.path(sha).parent.mkdir(parents=True)
    cache.path(sha).write_bytes(b"bytes")
    # What Conan's get() wrote for another recipe using the same file (its format, its key).
    metadata(cache, sha).write_text(json.dumps({"references": {"other/2.0": ["https://example.invalid/o"]},
                                                    "timestamp": 1700000000}))
    cache.resolve(pin, offline=True)
    assert DownloadCache.get_urls_from_backup_sources(str(cache.path(sha))) == {
        "https://example.invalid/o", pin.mirrors[0].url}
    assert json.loads(metadata(cache, sha).read_text())["timestamp"] == 1700000000


def test_a_bad_cached_file_goes_together_with_its_metadata(tmp_path):
    pin = file_pin(tmp_path, b"x" * 10000, "demo")
    cache = SourceCache(tmp_path / "cache")
    cache.resolve(pin, offline=False)
    sha = pin.mirrors[0].sha256
    assert metadata(cache, sha).is_file()
    cache.path(sha).write_bytes(b"x" * 5000)  # truncated on disk
    with pytest.raises(ChecksumMismatchError):
        cache.resolve(pin, offline=True)
    assert not cache.path(sha).exists() and not metadata(cache, sha).exists()
    assert conan_walk(cache.root) == []


def test_conan_get_uses_a_toolchain_filled_cache_without_downloading(tmp_path):
    """A real `conan create` of fxdiv, from a cache the toolchain filled (Debian's tarball, whose
    URL is the recipe's `debian-source:` pseudo-URL): a URL Conan did not expect would make it
    download again, which fails here."""
    require_sources("fxdiv")
    fxdiv = load_pins()["fxdiv"]
    shared = SourceCache(shared_source_cache())
    mirror = shared.cached_mirror(fxdiv)
    cache = SourceCache(tmp_path / "sources")
    cache.import_file(fxdiv, shared.path(mirror.sha256))
    settings = Settings(home=tmp_path / "home", source_cache=cache.root, offline=True, jobs=1)
    target = TARGETS["x86_64"]
    conan_config.prepare_home(settings, target)
    log_path = tmp_path / "create.log"
    conan_config.export_recipes(settings, ["fxdiv"], log_path)
    conan_config.create(target, settings, "fxdiv", log_path)
    text = log_path.read_text()
    url = recipe_module().mirror_url("fxdiv", next(m for m in yaml.safe_load(
        (fxdiv.recipe_dir / "conandata.yml").read_text())["sources"][fxdiv.version]["mirrors"]
        if m["sha256"] == mirror.sha256))
    assert f"Source {url} retrieved from local download cache" in text
    assert "Re-downloading" not in text
    assert sha256_of(cache.path(mirror.sha256)) == mirror.sha256
    assert DownloadCache.get_urls_from_backup_sources(str(cache.path(mirror.sha256))) == {url}
