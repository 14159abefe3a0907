"""Downloads from a real HTTP server on loopback: a 404 mirror, a body cut off mid-stream, a wrong
file; the next mirror is tried, the cache never holds a bad or partial file, and when every mirror
fails the one-line error names each mirror and why."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nnpack_toolchain import fetch
from nnpack_toolchain.errors import SourceError
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.sources import Mirror, Pin, SourceCache, sha256_of

PINNED = b"the pinned release tarball\n" * 4000
SHA = hashlib.sha256(PINNED).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """/good: the pinned bytes; /missing: 404; /cut: announces every byte, sends half and hangs up;
    /other: a complete file with other bytes."""

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("missing"):
            self.send_error(404, "File not found")
            return
        body = b"some other release\n" * 100 if name.startswith("other") else PINNED
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name.startswith("cut"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def pin_with(*urls: str) -> Pin:
    return Pin(name="demo", version="1.0", recipe_dir=Path("."), commit=None,
               mirrors=tuple(Mirror(sha256=SHA, filename="demo-1.0.tar.gz", url=u) for u in urls))


def cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_404_and_a_cut_off_mirror_are_skipped_for_the_next_one(server, tmp_path):
    pin = pin_with(f"{server}/missing.tar.gz", f"{server}/cut.tar.gz", f"{server}/good.tar.gz")
    cache = SourceCache(tmp_path / "cache")
    resolved = cache.resolve(pin, offline=False)
    assert resolved.origin == f"{server}/good.tar.gz"
    assert sha256_of(cache.path(SHA)) == SHA
    assert cache_files(cache.root) == [f"s/{SHA}", f"s/{SHA}.json"]  # no partial file, no temporary one


def test_when_every_mirror_fails_the_error_names_each_and_why(server, tmp_path):
    missing, cut, other = (f"{server}/{n}.tar.gz" for n in ("missing", "cut", "other"))
    cache = SourceCache(tmp_path / "cache")
    with pytest.raises(SourceError) as info:
        cache.resolve(pin_with(missing, cut, other), offline=False)
    message = info.value.message
    assert "\n" not in message
    assert f"{missing}: HTTP 404 File not found" in message
    assert f"{cut}: download cut off after {len(PINNED) // 2} of {len(PINNED)} bytes" in message
    other_sha = hashlib.sha256(b"some other release\n" * 100).hexdigest()
    assert f"{other}: sha256 {other_sha}, not the pinned {SHA}" in message
    assert "run 'invoke fetch' again" in message
    assert info.value.exit_code == 4
    assert cache_files(cache.root) == []


def test_fetch_goes_on_after_a_package_whose_mirrors_all_fail(server, tmp_path, monkeypatch):
    bad = Pin(name="bad", version="2.0", recipe_dir=Path("."), commit=None,
              mirrors=(Mirror(sha256="ab" * 32, filename="bad.tar.gz", url=f"{server}/missing-bad.tar.gz"),))
    monkeypatch.setattr(fetch, "load_pins", lambda: {"bad": bad, "demo": pin_with(f"{server}/cut.tar.gz",
                                                                                   f"{server}/good.tar.gz")})
    cache_dir = tmp_path / "sources"
    with pytest.raises(SourceError) as info:
        fetch.fetch_sources(Settings(home=tmp_path / "home", source_cache=cache_dir))
    assert info.value.message.splitlines() == [
        "1 of 2 pinned sources could not be fetched (the others are in the cache):",
        (f"bad/2.0: every mirror failed: {server}/missing-bad.tar.gz: HTTP 404 File not found. Nothing was cached; "
         "check the network (or proxy) and run 'invoke fetch' again, or copy a filled source cache here "
         "(README, 'Sources, offline use and air-gapped machines')")]
    assert cache_files(cache_dir) == [f"s/{SHA}", f"s/{SHA}.json"]
