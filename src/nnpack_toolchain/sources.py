"""Pinned upstream sources: read the pins from the recipes, fill and verify the source cache.

The cache is Conan's download cache (`core.sources:download_cache`): a file is stored as
`<cache>/s/<sha256>`, so Conan's `get()` finds it without touching the network. Every file is
downloaded to a temporary name, checked against its pinned sha256 and only then renamed into
place: the cache never holds a bad or half-written file. A cache directory can be copied to an
air-gapped machine as it is.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import (
    ChecksumMismatchError,
    ConfigurationError,
    MissingSourceError,
    SourceError,
)
from .settings import PATCHES_DIR, RECIPES_DIR, Settings

GITHUB_ARCHIVE = re.compile(r"^https://github\.com/([^/]+)/([^/]+)/archive/([0-9a-f]{40})\.tar\.gz$")


@dataclass(frozen=True)
class Mirror:
    """One downloadable form of a pinned source, with its own sha256."""

    sha256: str
    filename: str
    url: str | None = None
    debian: tuple[str, str] | None = None  # (source package, version)
    pypi: tuple[str, str] | None = None  # (project, version)

    @property
    def origin(self) -> str:
        if self.url:
            return self.url
        if self.debian:
            return f"Debian source package {self.debian[0]} {self.debian[1]} ({self.filename})"
        assert self.pypi
        return f"PyPI sdist {self.pypi[0]}=={self.pypi[1]}"


@dataclass(frozen=True)
class Patch:
    file: Path
    description: str


@dataclass(frozen=True)
class Pin:
    """A package as its recipe pins it: version, upstream commit, mirrors and patches."""

    name: str
    version: str
    recipe_dir: Path
    commit: str | None
    mirrors: tuple[Mirror, ...]
    patches: tuple[Patch, ...] = field(default=())
    only_for_backend: str | None = None
    stage: str = "nnpack"
    """The stage that builds it: nnpack (Conan recipes) or mxnet (the project's own stage)."""

    @property
    def reference(self) -> str:
        return f"{self.name}/{self.version}"

    def describe_missing(self) -> str:
        forms = "; or ".join(f"{m.origin} (sha256 {m.sha256})" for m in self.mirrors)
        return f"{self.reference}: {forms}"


def load_pin(recipe_dir: Path) -> Pin:
    data = yaml.safe_load((recipe_dir / "conandata.yml").read_text())
    (version, source), = data["sources"].items()
    mirrors = []
    for entry in source["mirrors"]:
        debian = entry.get("debian")
        pypi = entry.get("pypi")
        mirrors.append(
            Mirror(
                sha256=entry["sha256"],
                filename=entry["filename"],
                url=entry.get("url"),
                debian=(debian["source"], debian["version"]) if debian else None,
                pypi=(pypi["name"], pypi["version"]) if pypi else None,
            )
        )
    patches = tuple(
        Patch(PATCHES_DIR / recipe_dir.name / Path(p["patch_file"]).name, p.get("patch_description", ""))
        for p in (data.get("patches") or {}).get(version) or []
    )
    return Pin(
        name=recipe_dir.name,
        version=str(version),
        recipe_dir=recipe_dir,
        commit=source.get("commit"),
        mirrors=tuple(mirrors),
        patches=patches,
        only_for_backend=data.get("only_for_nnpack_backend"),
        stage=data.get("stage", "nnpack"),
    )


def load_pins(recipes_dir: Path = RECIPES_DIR) -> dict[str, Pin]:
    return {
        d.name: load_pin(d)
        for d in sorted(recipes_dir.iterdir())
        if (d / "conandata.yml").is_file()
    }


def pins_for_backend(backend: str, pins: dict[str, Pin] | None = None) -> list[Pin]:
    pins = load_pins() if pins is None else pins
    return [p for p in pins.values() if p.stage == "nnpack" and p.only_for_backend in (None, backend)]


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

    def cached_mirror(self, pin: Pin) -> Mirror | None:
        """The first mirror of pin present in the cache, re-hashed; a bad file is deleted."""
        for mirror in pin.mirrors:
            path = self.path(mirror.sha256)
            if path.is_file():
                actual = sha256_of(path)
                if actual != mirror.sha256:
                    path.unlink()
                    raise ChecksumMismatchError(pin.reference, f"cached {path}", mirror.sha256, actual)
                return mirror
        return None

    def store(self, pin: Pin, mirror: Mirror, file: Path) -> Path:
        """Verify file against mirror's sha256 and move it into the cache atomically."""
        actual = sha256_of(file)
        if actual != mirror.sha256:
            file.unlink(missing_ok=True)
            raise ChecksumMismatchError(pin.reference, mirror.origin, mirror.sha256, actual)
        target = self.path(mirror.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
        return target

    def resolve(self, pin: Pin, *, offline: bool, local_dir: Path | None = None) -> Resolved:
        """Make pin's source available: local directory, verified cache entry, or a download."""
        if local_dir is not None:
            return Resolved(pin, f"local directory {local_dir}", verified=False, local_dir=local_dir)
        mirror = self.cached_mirror(pin)
        if mirror:
            return Resolved(pin, f"source cache ({mirror.origin})", verified=True)
        if offline:
            raise MissingSourceError([pin.describe_missing()], offline=True)
        return Resolved(pin, self.download(pin), verified=True)

    def download(self, pin: Pin) -> str:
        errors = []
        self.root.mkdir(parents=True, exist_ok=True)
        for mirror in pin.mirrors:
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".partial-") as tmp:
                try:
                    file = self._download_mirror(mirror, Path(tmp))
                except (OSError, subprocess.SubprocessError, SourceError) as exc:
                    errors.append(f"{mirror.origin}: {exc}")
                    continue
                self.store(pin, mirror, file)
                return mirror.origin
        raise SourceError(f"{pin.reference}: every mirror failed:\n  " + "\n  ".join(errors))

    def _download_mirror(self, mirror: Mirror, tmp: Path) -> Path:
        out = tmp / mirror.filename
        if mirror.url:
            with urllib.request.urlopen(mirror.url, timeout=60) as response, open(out, "wb") as stream:
                shutil.copyfileobj(response, stream)
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
        for mirror in pin.mirrors:
            match = GITHUB_ARCHIVE.match(mirror.url or "")
            if not match:
                continue
            _owner, name, commit = match.groups()
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".partial-") as tmp:
                out = Path(tmp) / mirror.filename
                git = ["git", "--git-dir", str(repo)] if (repo / "HEAD").is_file() else ["git", "-C", str(repo)]
                tar = subprocess.run([*git, "archive", "--format=tar", f"--prefix={name}-{commit}/", commit],
                                     capture_output=True, timeout=600)
                if tar.returncode != 0:
                    raise SourceError(f"{pin.reference}: git archive {commit} in {repo} failed: "
                                      f"{tar.stderr.decode(errors='replace').strip()}")
                # GNU gzip -n (not zlib) is what reproduces GitHub's archive bytes.
                with open(out, "wb") as stream:
                    subprocess.run(["gzip", "-n", "-c"], input=tar.stdout, stdout=stream, check=True, timeout=600)
                self.store(pin, mirror, out)
                return f"git clone {repo} at {commit}"
        raise ConfigurationError(f"{pin.reference} has no GitHub commit archive to rebuild from git")

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
