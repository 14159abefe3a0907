"""Stage 5: a Python wheel for the target, with its native libraries inside.

Assembly is generic (`assemble_wheel`): a Python package directory plus native libraries is
staged with normalised permissions, the libraries get RPATH `$ORIGIN`, and the `wheel`
library packs it (sorted entries, RECORD, timestamps from SOURCE_DATE_EPOCH) tagged
`py3-none-linux_<machine>` (the package loads libmxnet.so through ctypes: no CPython ABI). Then
auditwheel repairs it against the target's libraries (`--ldpaths` = the target sysroot), grafting
what is not on the manylinux whitelist (OpenBLAS, libgomp, libgfortran) and retagging it with the
lowest manylinux policy its symbol versions allow. The result is checked: one platform tag, for
the target's machine, never `any` or the host's.

mxnet_wheel.py feeds it the MXNet build of the target (python/mxnet + libmxnet.so +
libnnpack.so); the tests feed it a small library of the project's own.
"""

from __future__ import annotations

import base64
import csv
import email.message
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from .elfinfo import describe_kind, elf_kind, requests_executable_stack, unlinked_atomics
from .errors import ConfigurationError, VerificationError
from .files import atomic_write_text
from .runner import capture, run
from .settings import source_date_epoch as settings_source_date_epoch
from .sources import sha256_of
from .targets import TARGETS, Target

RESULT_FILE = "wheel-result.json"
DEFAULT_SOURCE_DATE_EPOCH = 1652140800
"""2022-05-10, the MXNet 1.9.1 release: the timestamp of every wheel entry unless SOURCE_DATE_EPOCH is set."""


@dataclass(frozen=True)
class WheelSpec:
    """What goes into a wheel."""

    distribution: str
    version: str
    package_dir: Path
    """The importable package (copied without __pycache__ or compiled files)."""
    native_libraries: tuple[Path, ...]
    """Copied into the package directory, RPATH set to $ORIGIN."""
    summary: str
    license: str
    readme: str
    """Markdown: the wheel's long description and <package>/BUILD-INFO.md."""
    requires_dist: tuple[str, ...] = ()
    requires_python: str = ">=3.8"
    extra_files: tuple[tuple[str, Path], ...] = ()
    """(path inside the package, source file): copied in after the package (e.g. MXNet's on-board benchmark)."""


@dataclass
class WheelResult:
    target: str
    wheel: str
    wheel_sha256: str
    wheel_size: int
    platform_tag: str
    manylinux_floor: str
    grafted: list[str] = field(default_factory=list)
    """Libraries auditwheel copied in from the target sysroot."""
    auditwheel_show: str = ""
    execstack_cleared: list[str] = field(default_factory=list)
    """Libraries whose executable-stack request was cleared (clear_executable_stacks)."""
    inputs_digest: str = ""
    sbom: str = ""
    """CycloneDX SBOM next to the wheel."""
    up_to_date: bool = False

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def machine_of(target: Target) -> str:
    """The wheel-tag machine: x86_64, armv7l, aarch64."""
    return target.wheel_platform.removeprefix("linux_")


def target_of_wheel(wheel: Path) -> Target:
    """The target a wheel was built for, from its platform tag; refuses wheels for no target."""
    try:
        _, _, _, tags = parse_wheel_filename(wheel.name)
    except ValueError as error:
        raise ConfigurationError(f"{wheel.name} is not a wheel file name: {error}") from None
    for target in TARGETS.values():
        if all(tag.platform.endswith(f"_{machine_of(target)}") for tag in tags):
            return target
    raise ConfigurationError(f"{wheel.name} is not tagged for any target ({', '.join(sorted(str(t) for t in tags))})")


def require_wheel_for(wheel: Path, target: Target) -> None:
    """A clear refusal when a wheel built for one target is offered to another (by its tag)."""
    built_for = target_of_wheel(wheel)
    if built_for.name != target.name:
        raise ConfigurationError(
            f"{wheel.name} was built for {built_for.name}, not {target.name}; "
            f"build the {target.name} wheel with: invoke wheel --arch {target.name}"
        )


def require_wheel_contents(wheel: Path, target: Target) -> None:
    """Refuse a corrupt wheel, and one whose native libraries are for another machine (a renamed wheel)."""
    rebuild = f"rebuild it with: invoke wheel --arch {target.name}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            broken = archive.testzip()
            if broken:
                raise ConfigurationError(f"{wheel.name} is corrupt ({broken} fails its CRC check); {rebuild}")
            libraries = [n for n in archive.namelist() if NATIVE_LIBRARY.search(n)]
            if not libraries:
                raise ConfigurationError(f"{wheel.name} holds no native library, so it is no wheel of this "
                                         f"toolchain; {rebuild}")
            for name in libraries:
                kind = elf_kind(archive.read(name)[:64])
                if kind != f"{target.elf_class} {target.elf_machine}":
                    raise ConfigurationError(
                        f"{wheel.name} is tagged {target.name} but its {name} is {describe_kind(kind)}, "
                        f"not {target.name} (a renamed wheel?); {rebuild}")
    except (zipfile.BadZipFile, EOFError) as error:
        raise ConfigurationError(f"{wheel.name} is not a valid wheel ({error}); {rebuild}") from None


NATIVE_LIBRARY = re.compile(r"\.so(\.[0-9]+)*$")


def source_date_epoch() -> int:
    epoch = settings_source_date_epoch(DEFAULT_SOURCE_DATE_EPOCH)
    assert epoch is not None
    return epoch


def stage_package(spec: WheelSpec, staging: Path, log_path: Path) -> None:
    """Copy the package and its libraries into `staging` with fixed permissions and RPATH $ORIGIN."""
    package = staging / spec.package_dir.name
    shutil.copytree(spec.package_dir, package, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.so", "*.so.*"))
    for relative, source in spec.extra_files:
        destination = package / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    for library in spec.native_libraries:
        destination = package / library.name
        shutil.copyfile(library, destination)
        run(["patchelf", "--set-rpath", "$ORIGIN", destination], log_path=log_path,
            what=f"patchelf --set-rpath '$ORIGIN' {library.name}")
    (package / "BUILD-INFO.md").write_text(spec.readme)
    for path in sorted(staging.rglob("*")):
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if ".so" in path.name else 0o644)


def write_dist_info(spec: WheelSpec, staging: Path, tag: Tag) -> None:
    name = re.sub(r"[-_.]+", "_", spec.distribution).lower()
    dist_info = staging / f"{name}-{spec.version}.dist-info"
    dist_info.mkdir()
    metadata = email.message.EmailMessage()
    metadata["Metadata-Version"] = "2.1"
    metadata["Name"] = spec.distribution
    metadata["Version"] = spec.version
    metadata["Summary"] = spec.summary
    metadata["License"] = spec.license
    metadata["Requires-Python"] = spec.requires_python
    for requirement in spec.requires_dist:
        metadata["Requires-Dist"] = requirement
    metadata["Description-Content-Type"] = "text/markdown"
    metadata.set_payload(spec.readme)
    (dist_info / "METADATA").write_text(metadata.as_string())
    (dist_info / "WHEEL").write_text(
        "Wheel-Version: 1.0\nGenerator: nnpack-toolchain\nRoot-Is-Purelib: false\n" f"Tag: {tag}\n"
    )
    (dist_info / "top_level.txt").write_text(spec.package_dir.name + "\n")
    for path in dist_info.iterdir():
        path.chmod(0o644)


def assemble_wheel(spec: WheelSpec, target: Target, out_dir: Path, log_path: Path) -> Path:
    """Pack spec into an unrepaired `py3-none-linux_<machine>` wheel in out_dir (reproducibly)."""
    from wheel.wheelfile import WheelFile

    Version(spec.version)  # raises InvalidVersion for a bad version
    tag = Tag("py3", "none", target.wheel_platform)
    with tempfile.TemporaryDirectory(prefix="nntc-wheel-") as tmp:
        staging = Path(tmp)
        stage_package(spec, staging, log_path)
        write_dist_info(spec, staging, tag)
        name = re.sub(r"[-_.]+", "_", spec.distribution).lower()
        wheel_path = out_dir / f"{name}-{spec.version}-{tag}.whl"
        os.environ.setdefault("SOURCE_DATE_EPOCH", str(source_date_epoch()))
        with WheelFile(wheel_path, "w") as archive:
            archive.write_files(str(staging))
    return wheel_path


def sysroot_library_dirs(target: Target, sysroot: Path) -> list[Path]:
    """Where auditwheel looks for the target's shared libraries (never the host's)."""
    multiarch = sysroot / "usr" / "lib" / target.gnu_triple
    dirs = [multiarch / "openblas-pthread", multiarch, sysroot / "lib" / target.gnu_triple, sysroot / "usr" / "lib"]
    return [d for d in dirs if d.is_dir()]


def repair_wheel(wheel: Path, target: Target, sysroot: Path, out_dir: Path, log_path: Path) -> Path:
    """auditwheel repair against the target's libraries; returns the manylinux wheel."""
    ldpaths = ":".join(str(d) for d in sysroot_library_dirs(target, sysroot))
    with tempfile.TemporaryDirectory(prefix="nntc-repair-", dir=out_dir) as tmp:
        umask = os.umask(0o022)  # auditwheel writes RECORD with the umask: fix it for reproducible bytes
        try:
            run(["auditwheel", "repair", "--plat", "auto", "--ldpaths", ldpaths, "-w", tmp, wheel],
                log_path=log_path, env={"SOURCE_DATE_EPOCH": str(source_date_epoch())}, error=VerificationError,
                what=f"auditwheel repair ({target.name}, libraries from {sysroot})")
        finally:
            os.umask(umask)
        (repaired,) = Path(tmp).glob("*.whl")
        final = out_dir / repaired.name
        os.replace(repaired, final)
    return final


def clear_executable_stacks(wheel: Path, log_path: Path) -> list[str]:
    """Clear the executable-stack request of the wheel's libraries that make one; their names.

    Debian 11's armhf OpenBLAS 0.3.13 (grafted by auditwheel) asks for an executable stack: its
    armv6p assembly kernels lack a `.note.GNU-stack` section, not because code runs from the stack
    (OpenBLAS adds the note since 0.3.21). glibc 2.41 (Debian 13, Raspberry Pi OS trixie) refuses
    to load such a library, so `import mxnet` failed there. `patchelf --clear-execstack` changes
    the flag in the wheel's copy; the wheel is written again entry by entry with each entry's own
    ZipInfo (order, directories, modes, timestamps, compression), only those libraries' bytes and
    their RECORD lines changed.
    """
    with zipfile.ZipFile(wheel) as archive:
        flagged = [n for n in archive.namelist() if NATIVE_LIBRARY.search(n)
                   and requests_executable_stack(archive.read(n))]
        if not flagged:
            return []
        record_name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        patched: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory(prefix="nntc-execstack-", dir=wheel.parent) as tmp:
            for name in flagged:
                copy = Path(tmp) / Path(name).name
                copy.write_bytes(archive.read(name))
                run(["patchelf", "--clear-execstack", copy], log_path=log_path, error=VerificationError,
                    what=f"patchelf --clear-execstack {name}")
                patched[name] = copy.read_bytes()
            patched[record_name] = record_with(archive.read(record_name), patched)
            repacked = Path(tmp) / wheel.name
            with zipfile.ZipFile(repacked, "w") as out:
                for info in archive.infolist():
                    out.writestr(info, patched[info.filename] if info.filename in patched else archive.read(info))
            os.replace(repacked, wheel)
    return flagged


def record_with(record: bytes, changed: dict[str, bytes]) -> bytes:
    """RECORD (PEP 376/427 CSV) with the hash and size of the changed files replaced."""
    rows = list(csv.reader(io.StringIO(record.decode())))
    for row in rows:
        if row and row[0] in changed:
            digest = base64.urlsafe_b64encode(hashlib.sha256(changed[row[0]]).digest()).rstrip(b"=").decode()
            row[1:3] = [f"sha256={digest}", str(len(changed[row[0]]))]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def verify_wheel(wheel: Path, target: Target, sysroot: Path, log_path: Path) -> tuple[str, str, list[str], str]:
    """Check the tag and auditwheel's view; return (platform tag, manylinux floor, grafted libraries, show)."""
    _, _, _, tags = parse_wheel_filename(wheel.name)
    platforms = sorted({tag.platform for tag in tags})
    machine = machine_of(target)
    bad = [p for p in platforms if p == "any" or not p.endswith(f"_{machine}")]
    if bad or not platforms:
        raise VerificationError(f"{wheel.name}: platform tags {platforms} are not all for {machine}", log_path=log_path)
    ldpaths = ":".join(str(d) for d in sysroot_library_dirs(target, sysroot))
    show = capture(["auditwheel", "show", "--ldpaths", ldpaths, wheel])
    with open(log_path, "a") as stream:
        stream.write(f"\n$ auditwheel show {wheel}\n{show}\n")
    if machine not in show:
        raise VerificationError(f"auditwheel show does not name {machine} for {wheel.name}:\n{show}", log_path=log_path)
    floors = sorted({m.group(0) for p in platforms if (m := re.match(r"manylinux_\d+_\d+", p))},
                    key=lambda s: tuple(int(x) for x in s.split("_")[1:]))
    if not floors:
        raise VerificationError(f"{wheel.name} has no manylinux tag after repair: {platforms}", log_path=log_path)
    with zipfile.ZipFile(wheel) as archive:
        grafted = sorted(Path(n).name for n in archive.namelist() if ".libs/" in n and not n.endswith("/"))
        for name in (n for n in archive.namelist() if NATIVE_LIBRARY.search(n)):
            library = archive.read(name)
            if requests_executable_stack(library):
                raise VerificationError(f"{name} still asks for an executable stack after patchelf --clear-execstack "
                                        "(glibc 2.41 and later refuse to load it): a toolchain bug, see the log",
                                        log_path=log_path)
            calls = unlinked_atomics(library)
            if calls:
                raise VerificationError(
                    f"{name} calls {', '.join(calls[:3])} (64-bit atomics) but does not link libatomic, so it "
                    f"fails to load on {target.name} systems that do not happen to load it first (MXNet #18536); "
                    "link it (-latomic in the library's link flags)", log_path=log_path)
    return ".".join(platforms), floors[0], grafted, show.strip()


def build_wheel(spec: WheelSpec, target: Target, sysroot: Path, out_dir: Path, log_path: Path) -> WheelResult:
    """Assemble, repair and verify a wheel; out_dir ends with exactly the repaired wheel added."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nntc-raw-", dir=out_dir) as tmp:
        raw = assemble_wheel(spec, target, Path(tmp), log_path)
        repaired = repair_wheel(raw, target, sysroot, Path(tmp), log_path)
        cleared = clear_executable_stacks(repaired, log_path)
        platform_tag, floor, grafted, show = verify_wheel(repaired, target, sysroot, log_path)
        final = out_dir / repaired.name
        os.replace(repaired, final)
    return WheelResult(target=target.name, wheel=str(final), wheel_sha256=sha256_of(final),
                       wheel_size=final.stat().st_size, platform_tag=platform_tag, manylinux_floor=floor,
                       grafted=grafted, auditwheel_show=show, execstack_cleared=cleared)


def digest_of(*parts: str | Path) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(sha256_of(part).encode() if isinstance(part, Path) else part.encode())
        hasher.update(b"|")
    return hasher.hexdigest()
