"""Local source trees (`--source NAME=DIR`): a content digest, so that an edit inside DIR
rebuilds, and a check that the tree is what the pin says before an hour of compiling starts."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import yaml

from .errors import ConfigurationError

SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__"}


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path, mode bit x and content (symlinks: their target), sorted.

    Timestamps are left out: a copy of the same tree has the same digest; any edit changes it.
    """
    digest = hashlib.sha256()
    entries: list[Path] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        base = Path(directory)
        entries += [base / f for f in files]
        entries += [base / d for d in dirs if (base / d).is_symlink()]
    for path in sorted(entries, key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root).as_posix().encode()
        if path.is_symlink():
            digest.update(b"L" + relative + b"\0" + os.readlink(path).encode() + b"\0")
            continue
        executable = b"x" if os.access(path, os.X_OK) else b"-"
        digest.update(b"F" + executable + relative + b"\0")
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def check_tree(name: str, root: Path, recipe_dir: Path) -> None:
    """Refuse a --source tree that lacks what conandata.yml's `local_source` requires, naming it."""
    data = recipe_dir / "conandata.yml"
    spec = (yaml.safe_load(data.read_text()) or {}).get("local_source") if data.is_file() else None
    if not spec:
        return
    problems = []
    version_file = root / spec["version_file"]
    if not version_file.is_file():
        problems.append(f"no {spec['version_file']} (is this a source tree of {name}?)")
    else:
        text = version_file.read_text(errors="replace")
        found = {macro: re.search(rf"^\s*#\s*define\s+{macro}\s+(\d+)", text, re.M)
                 for macro in spec["version_macros"]}
        wanted = ".".join(str(v) for v in spec["version_macros"].values())
        have = ".".join(m.group(1) if m else "?" for m in found.values())
        if have != wanted:
            problems.append(f"it is version {have} ({spec['version_file']}), the pin is {wanted}")
    missing = [sub for sub, probe in spec.get("submodules", {}).items() if not (root / sub / probe).is_file()]
    if missing:
        problems.append("submodule(s) missing: " + ", ".join(missing)
                        + " (git submodule update --init --recursive, or use the source release)")
    if problems:
        raise ConfigurationError(f"--source {name}={root}: " + "; ".join(problems))


def check_source_names(local_sources: dict[str, Path]) -> None:
    """--source NAME=DIR must name a pinned package, and its tree pass check_tree."""
    from .pins import load_pins
    from .settings import RECIPES_DIR

    packages = sorted(load_pins())
    unknown = sorted(set(local_sources) - set(packages))
    if unknown:
        raise ConfigurationError(f"--source names unknown package(s) {', '.join(unknown)}; packages: "
                                 + ", ".join(packages))
    for name, directory in local_sources.items():
        if directory.is_dir():
            check_tree(name, directory, RECIPES_DIR / name)
