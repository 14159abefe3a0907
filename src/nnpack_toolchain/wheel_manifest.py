"""What a wheel holds, file by file and for its ELF libraries section by section: to find out where two
builds of the same inputs differ.

Session 18's arm64 wheel, built on a new machine from the same sources, pins, wheel-stage code and Debian
packages as session 17's, had another sha256 (and a size 2 bytes larger), and with the first wheel
gone nothing could say where. A manifest is small (sizes and sha256 sums, no code) and can be kept with the results: the
next build's manifest, compared with it, names the files and sections that differ.

    python3 -m nnpack_toolchain.wheel_manifest WHEEL --write FILE.json
    python3 -m nnpack_toolchain.wheel_manifest WHEEL_OR_MANIFEST OTHER_WHEEL_OR_MANIFEST
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .errors import ConfigurationError, ToolchainError
from .files import atomic_write_text

FORMAT = "nntc-wheel-manifest"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def elf_sections(data: bytes) -> dict[str, dict[str, Any]] | None:
    """Size and sha256 of each ELF section with contents (None: not an ELF file)."""
    if not data.startswith(b"\x7fELF"):
        return None
    try:
        elf = ELFFile(io.BytesIO(data))
        sections = {}
        for section in elf.iter_sections():
            if section.name and section["sh_type"] != "SHT_NOBITS":
                sections[section.name] = {"size": section["sh_size"], "sha256": _sha256(section.data())}
        return sections
    except ELFError:
        return None


def manifest(wheel: Path) -> dict[str, Any]:
    """The wheel's files (size, sha256, and an ELF file's sections)."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise ConfigurationError(f"{wheel}: not a wheel ({error}); give a .whl file or a manifest .json") from error
    files: dict[str, Any] = {}
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            data = archive.read(info)
            entry: dict[str, Any] = {"size": len(data), "sha256": _sha256(data)}
            sections = elf_sections(data)
            if sections is not None:
                entry["sections"] = sections
            files[info.filename] = entry
    return {"format": FORMAT, "version": 1, "wheel": wheel.name, "sha256": _sha256(wheel.read_bytes()),
            "size": wheel.stat().st_size, "files": files}


def load(path: Path) -> dict[str, Any]:
    """A manifest from a wheel or from a manifest file."""
    if path.suffix == ".whl":
        return manifest(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{path}: cannot read it as a manifest ({error})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigurationError(f"{path}: not a wheel manifest (format {FORMAT!r}); write one with --write")
    return data


def compare(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """One line per difference: files only in one, files whose bytes differ and, for ELF files, the sections
    that differ (by size or content). Empty when the wheels hold the same bytes."""
    lines = []
    a, b = first["files"], second["files"]
    for name in sorted(a.keys() - b.keys()):
        lines.append(f"only in {first['wheel']}: {name}")
    for name in sorted(b.keys() - a.keys()):
        lines.append(f"only in {second['wheel']}: {name}")
    for name in sorted(a.keys() & b.keys()):
        x, y = a[name], b[name]
        if x["sha256"] == y["sha256"]:
            continue
        line = f"differs: {name} ({x['size']:,} vs {y['size']:,} bytes)"
        sx, sy = x.get("sections"), y.get("sections")
        if sx is not None and sy is not None:
            changed = [s for s in sorted(sx.keys() | sy.keys()) if sx.get(s) != sy.get(s)]
            line += "; sections: " + ", ".join(
                f"{s} ({sx[s]['size']:,} vs {sy[s]['size']:,} bytes)" if s in sx and s in sy else f"{s} (only in one)"
                for s in changed) if changed else "; no section differs (headers or layout)"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m nnpack_toolchain.wheel_manifest", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="a wheel or a manifest .json")
    parser.add_argument("second", type=Path, nargs="?", help="another wheel or manifest: print where they differ")
    parser.add_argument("--write", type=Path, help="write the first one's manifest to this file")
    args = parser.parse_args(argv)
    try:
        first = load(args.first)
        if args.write:
            atomic_write_text(args.write, json.dumps(first, indent=1, sort_keys=True) + "\n")
            print(f"{args.write}: {len(first['files'])} files of {first['wheel']}")
        if args.second is None:
            return 0
        lines = compare(first, load(args.second))
    except ToolchainError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print("\n".join(lines) if lines else f"same bytes: {first['wheel']} and {args.second.name}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
