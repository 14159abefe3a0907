"""The pins: what each recipe's conandata.yml says of its package (version, upstream commit, the
mirrors of that commit with their sha256, the patches with their descriptions). Data only; the
source cache (sources.py) fills and verifies files for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .settings import PATCHES_DIR, RECIPES_DIR


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

    @property
    def conan_url(self) -> str:
        """The URL the recipes pass to Conan's `get()` for this mirror.

        The same as `mirror_url` in recipes/base/conanfile.py, which runs inside Conan and cannot
        import this package (tests/test_fetch_metadata.py checks that both agree).
        """
        if self.url:
            return self.url
        if self.debian:
            return f"debian-source:{self.debian[0]}={self.debian[1]}/{self.filename}"
        assert self.pypi
        return f"pypi-sdist:{self.pypi[0]}=={self.pypi[1]}/{self.filename}"


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

    def conan_url(self, sha256: str) -> str:
        """The URL the recipe passes to `get()` for the cached file `sha256`: that of the first
        mirror with this sha256 (the recipe takes the first mirror present in the cache)."""
        return next(m.conan_url for m in self.mirrors if m.sha256 == sha256)


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
