"""Pinned upstream sources: read the pins from the recipes, fill and verify the source cache.

The cache is Conan's download cache (`core.sources:download_cache`): a file is stored as
`<cache>/s/<sha256>`, so Conan's `get()` finds it without touching the network. Every file is
downloaded to a temporary name, checked against its pinned sha256 and only then renamed into
place: the cache never holds a bad or half-written file. A cache directory can be copied to an
air-gapped machine as it is.

Next to each file goes `<sha256>.json`, the metadata Conan's own download writes
(`{"references": {"name/version": [url]}, "timestamp": ...}`, with the URL the recipe passes to
`get()`): `conan upload` stops at a file without it, and Conan downloads again when the URL it
is given is not among those recorded.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


from .errors import (
    ChecksumMismatchError,
    ConfigurationError,
    MissingSourceError,
    SourceError,
    ToolchainError,
)
from .files import atomic_write_text
from .pins import Mirror, Patch, Pin, load_pin, load_pins, pins_for_backend
from .settings import Settings

__all__ = ["Mirror", "Patch", "Pin", "load_pin", "load_pins", "pins_for_backend"]  # re-exported

GITHUB_ARCHIVE = re.compile(r"^https://github\.com/([^/]+)/([^/]+)/archive/([0-9a-f]{40})\.tar\.gz$")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Resolved:
    pin: Pin
    origin: str
    verified: bool
    local_dir: Path | None = None

    def line(self) -> str:
        state = "verified sha256" if self.verified else "UNVERIFIED local directory"
        return f"{self.pin.reference}: {self.origin} [{state}]"


class SourceCache:
    def __init__(self, root: Path, *, apt_dir: Path | None = None) -> None:
        self.root = root
        self.apt_dir = apt_dir or root / "apt"

    def path(self, sha256: str) -> Path:
        return self.root / "s" / sha256

    def metadata_path(self, sha256: str) -> Path:
        """Conan's metadata of a cached file: `s/<sha256>.json`."""
        return self.root / "s" / f"{sha256}.json"

    def cached_mirror(self, pin: Pin) -> Mirror | None:
        """The first mirror of pin present in the cache, re-hashed; a bad file is deleted."""
        for mirror in pin.mirrors:
            path = self.path(mirror.sha256)
            if path.is_file():
                actual = sha256_of(path)
                if actual != mirror.sha256:
                    self.discard(mirror.sha256)
                    raise ChecksumMismatchError(pin.reference, f"cached {path}", mirror.sha256, actual)
                return mirror
        return None

    def discard(self, sha256: str) -> None:
        """Delete a cached file and then its metadata (a metadata file alone is harmless to Conan)."""
        self.path(sha256).unlink(missing_ok=True)
        self.metadata_path(sha256).unlink(missing_ok=True)

    def store(self, pin: Pin, mirror: Mirror, file: Path) -> Path:
        """Verify file against mirror's sha256 and move it into the cache atomically, metadata first."""
        actual = sha256_of(file)
        if actual != mirror.sha256:
            file.unlink(missing_ok=True)
            raise ChecksumMismatchError(pin.reference, mirror.origin, mirror.sha256, actual)
        target = self.path(mirror.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.write_metadata(pin, mirror.sha256)
        os.replace(file, target)
        return target

    # -- Conan's metadata (<sha256>.json) -----------------------------------------------------
    def read_metadata(self, sha256: str) -> dict | None:
        """The metadata of a cached file as Conan reads it; None when absent or not Conan's format."""
        try:
            summary = json.loads(self.metadata_path(sha256).read_text())
        except (OSError, ValueError):
            return None
        references = summary.get("references") if isinstance(summary, dict) else None
        if not isinstance(references, dict) or not all(isinstance(u, list) for u in references.values()):
            return None
        return summary

    def write_metadata(self, pin: Pin | None, sha256: str) -> bool:
        """Record pin's reference with the URL its recipe passes to `get()`, merged into what is there
        (as Conan's own download does); pin None: a file no pin knows, recorded without references."""
        existing = self.read_metadata(sha256)
        summary = existing or {"references": {}, "timestamp": int(time.time())}
        if pin is not None:
            urls = summary["references"].setdefault(pin.reference, [])
            url = pin.conan_url(sha256)
            if url not in urls:
                urls.append(url)
            elif existing is not None:
                return False
        elif existing is not None:
            return False
        # The temporary file lives outside s/: Conan takes every file in s/ but *.json for a source.
        atomic_write_text(self.metadata_path(sha256), json.dumps(summary), tmp_dir=self.root)
        return True

    def backfill_metadata(self, pins: Iterable[Pin]) -> list[str]:
        """Give every cached file without valid metadata its `<sha256>.json` (caches filled before the
        toolchain wrote it, or copied without it); returns their names. Conan's upload walks every
        file of the cache and stops at one without metadata."""
        folder = self.root / "s"
        if not folder.is_dir():
            return []
        owners: dict[str, dict[str, Pin]] = {}
        for pin in pins:
            for mirror in pin.mirrors:
                owners.setdefault(mirror.sha256, {})[pin.reference] = pin
        filled = []
        for entry in sorted(folder.iterdir()):
            name = entry.name
            if (not entry.is_file() or name.endswith((".json", ".dirty"))
                    or entry.with_name(name + ".dirty").exists() or self.read_metadata(name) is not None):
                continue  # Conan's own download in progress (.dirty), or metadata already there
            for pin in owners.get(name, {}).values() or [None]:
                self.write_metadata(pin, name)
            filled.append(name)
        return filled

    def resolve(self, pin: Pin, *, offline: bool, local_dir: Path | None = None) -> Resolved:
        """Make pin's source available: local directory, verified cache entry, or a download."""
        if local_dir is not None:
            return Resolved(pin, f"local directory {local_dir}", verified=False, local_dir=local_dir)
        mirror = self.cached_mirror(pin)
        if mirror:
            self.write_metadata(pin, mirror.sha256)  # a file cached before metadata was written
            return Resolved(pin, f"source cache ({mirror.origin})", verified=True)
        if offline:
            raise MissingSourceError([pin.describe_missing()], offline=True)
        return Resolved(pin, self.download(pin), verified=True)

    def download(self, pin: Pin) -> str:
        """Try each mirror in turn; the first whose file has the pinned sha256 goes into the cache."""
        errors = []
        self.root.mkdir(parents=True, exist_ok=True)
        for mirror in pin.mirrors:
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".partial-") as tmp:
                try:
                    file = self._download_mirror(mirror, Path(tmp))
                except (OSError, http.client.HTTPException, subprocess.SubprocessError, SourceError) as exc:
                    errors.append(f"{mirror.origin}: {failure_reason(exc)}")
                    continue
                actual = sha256_of(file)
                if actual != mirror.sha256:
                    errors.append(f"{mirror.origin}: sha256 {actual}, not the pinned {mirror.sha256}")
                    continue
                self.store(pin, mirror, file)
                return mirror.origin
        raise SourceError(f"{pin.reference}: every mirror failed: " + "; ".join(errors)
                          + ". Nothing was cached; check the network (or proxy) and run 'invoke fetch' again, "
                          "or copy a filled source cache here (README, 'Sources, offline use and air-gapped machines')")

    def _download_mirror(self, mirror: Mirror, tmp: Path) -> Path:
        out = tmp / mirror.filename
        if mirror.url:
            download_url(mirror.url, out)
        elif mirror.debian:
            self._apt_source(*mirror.debian, tmp)
        elif mirror.pypi:
            subprocess.run(
                ["pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(tmp),
                 f"{mirror.pypi[0]}=={mirror.pypi[1]}"],
                check=True, capture_output=True, text=True, timeout=300,
            )
        if not out.is_file():
            raise SourceError(f"{mirror.filename} was not among the downloaded files")
        return out

    # -- Debian source packages through apt-get, with a private configuration ----------------
    def _apt_source(self, package: str, version: str, dest: Path) -> None:
        config = self._apt_config()
        env = dict(os.environ, APT_CONFIG=str(config))
        # Some .dsc/.debian files are gone from the archive while the .orig tarball is there:
        # apt-get then exits non-zero; the caller checks for the .orig file instead.
        subprocess.run(["apt-get", "source", "--download-only", "-q", f"{package}={version}"],
                       cwd=dest, env=env, capture_output=True, text=True, timeout=600)

    def _apt_config(self) -> Path:
        config = self.apt_dir / "apt.conf"
        if config.is_file() and any((self.apt_dir / "state" / "lists").glob("*Sources*")):
            return config
        config = private_apt_config(self.apt_dir, debian_source_lines(system_debian_mirror()))
        subprocess.run(["apt-get", "update", "-q"], env=dict(os.environ, APT_CONFIG=str(config)),
                       check=True, capture_output=True, text=True, timeout=600)
        return config

    # -- Reproducing a GitHub archive from a git clone -----------------------------------------
    def import_git(self, pin: Pin, repo: Path) -> str:
        """Rebuild pin's GitHub archive from a clone (`git archive | gzip -n` gives GitHub's bytes)."""
        archive, git = github_archive(pin), git_clone_command(pin, repo)
        commit = archive.commit
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".partial-") as tmp:
            out = Path(tmp) / archive.mirror.filename
            tar = subprocess.run([*git, "archive", "--format=tar", f"--prefix={archive.name}-{commit}/", commit],
                                 capture_output=True, timeout=600)
            if tar.returncode != 0:
                raise SourceError(f"{pin.reference}: git archive {commit} in {repo} failed: "
                                  f"{tar.stderr.decode(errors='replace').strip()}")
            # GNU gzip -n (not zlib) is what reproduces GitHub's archive bytes.
            with open(out, "wb") as stream:
                subprocess.run(["gzip", "-n", "-c"], input=tar.stdout, stdout=stream, check=True, timeout=600)
            self.store(pin, archive.mirror, out)
        return f"git clone {repo} at {commit}"

    def import_file(self, pin: Pin, file: Path) -> str:
        """Add a file obtained elsewhere (e.g. from another machine) if it matches one mirror."""
        actual = sha256_of(file)
        for mirror in pin.mirrors:
            if mirror.sha256 == actual:
                self.root.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=self.root, prefix=".partial-") as tmp:
                    copy = Path(tmp) / mirror.filename
                    shutil.copyfile(file, copy)
                    self.store(pin, mirror, copy)
                return f"file {file}"
        expected = ", ".join(m.sha256 for m in pin.mirrors)
        raise ChecksumMismatchError(pin.reference, f"file {file}", expected, actual)


def download_url(url: str, out: Path) -> None:
    """Download url to out; a body shorter than its Content-Length is an error, not a file."""
    with urllib.request.urlopen(url, timeout=60) as response, open(out, "wb") as stream:
        shutil.copyfileobj(response, stream)
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and stream.tell() != int(length):
            raise SourceError(f"download cut off after {stream.tell()} of {length} bytes")


def failure_reason(exc: BaseException) -> str:
    """Why one mirror failed, in a few words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"download cut off after {len(exc.partial)} bytes"
    if isinstance(exc, subprocess.CalledProcessError):
        lines = (exc.stderr or "").strip().splitlines() if isinstance(exc.stderr, str) else []
        return f"{Path(str(exc.cmd[0])).name} exited with {exc.returncode}" + (f": {lines[-1]}" if lines else "")
    if isinstance(exc, ToolchainError):
        return exc.message
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class GitArchive:
    """A pin's GitHub commit archive: what `git archive` of the commit in a clone reproduces."""

    mirror: Mirror
    owner: str
    name: str
    commit: str

    @property
    def upstream(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"


def github_archive(pin: Pin) -> GitArchive:
    """pin's GitHub commit archive; ConfigurationError when it has none."""
    for mirror in pin.mirrors:
        match = GITHUB_ARCHIVE.match(mirror.url or "")
        if match:
            return GitArchive(mirror, *match.groups())
    raise ConfigurationError(f"--from-git {pin.name}: {pin.reference} has no GitHub commit archive to rebuild "
                             f"from git; fetch it with 'invoke fetch --package {pin.name}'")


def git_clone_command(pin: Pin, repo: Path) -> list[str]:
    """The git command for repo, a clone (or bare repository) of pin's upstream holding the pinned commit."""
    archive = github_archive(pin)
    given, clone = f"--from-git {pin.name}={repo}", f"give a git clone of {archive.upstream}"
    if not repo.is_dir():
        raise ConfigurationError(f"{given}: no such directory; {clone}")
    if (repo / "HEAD").is_file() and (repo / "objects").is_dir():
        git = ["git", "--git-dir", str(repo)]  # a bare repository
    elif (repo / ".git").exists():
        git = ["git", "-C", str(repo)]
    else:
        raise ConfigurationError(f"{given}: not a git repository (no .git in it); {clone}")
    probe = subprocess.run([*git, "rev-parse", "--git-dir"], capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        detail = (probe.stderr.strip().splitlines() or ["git rev-parse failed"])[-1]
        raise ConfigurationError(f"{given}: not a usable git repository ({detail}); {clone}")
    found = subprocess.run([*git, "cat-file", "-e", f"{archive.commit}^{{commit}}"], capture_output=True, timeout=60,
                           check=False)
    if found.returncode != 0:
        raise ConfigurationError(f"{given}: the repository lacks the pinned commit {archive.commit}; fetch it "
                                 f"('git -C {repo} fetch {archive.upstream} {archive.commit}') or give another clone")
    return git


def private_apt_config(root: Path, sources_list: str, extra: dict[str, str] | None = None) -> Path:
    """An apt configuration of its own under root (state, cache, empty dpkg status): apt-get run
    with APT_CONFIG pointing at it never reads or changes the host's package state."""
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/preferences.d", "etc/sources.list.d"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "state" / "status").touch()
    (root / "etc" / "sources.list").write_text(sources_list)
    entries = {
        **(extra or {}),
        "Dir::State": root / "state",
        "Dir::State::status": root / "state" / "status",
        "Dir::Cache": root / "cache",
        "Dir::Etc::SourceList": root / "etc" / "sources.list",
        "Dir::Etc::SourceParts": root / "etc" / "sources.list.d",
        "Dir::Etc::Preferences": root / "etc" / "preferences",
        "Dir::Etc::PreferencesParts": root / "etc" / "preferences.d",
    }
    config = root / "apt.conf"
    tmp = config.with_suffix(".tmp")
    tmp.write_text("".join(f'{key} "{value}";\n' for key, value in entries.items()))
    tmp.replace(config)
    return config


def source_cache(settings: Settings) -> SourceCache:
    """The source cache of these settings, with its private apt state for Debian sources."""
    return SourceCache(settings.sources_dir, apt_dir=settings.home / "apt")


def system_debian_mirror() -> str:
    """The Debian archive this machine's apt is set up with (deb822 or one-line format)."""
    candidates: Iterable[Path] = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if match.group(1).rstrip("/").endswith("/debian"):
                return match.group(1)
        for match in re.finditer(r"^deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
            if match.group(1).rstrip("/").endswith("/debian"):
                return match.group(1)
    raise SourceError("no Debian archive found in /etc/apt/sources.list*: cannot fetch Debian source packages")


DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def debian_source_lines(mirror: str) -> str:
    return "".join(f"deb-src [signed-by={DEBIAN_KEYRING}] {mirror} {suite} main\n" for suite in ("bookworm", "trixie", "sid"))
