"""Stage 5: a Python wheel for the target, with its native libraries inside.

Assembly is generic (`assemble_wheel`): a Python package directory plus native libraries is
staged with normalised permissions, the libraries get RPATH `$ORIGIN`, and the `wheel`
library packs it (sorted entries, RECORD, timestamps from SOURCE_DATE_EPOCH) tagged
`py3-none-linux_<machine>` (the package loads libmxnet.so through ctypes: no CPython ABI). Then
auditwheel repairs it against the target's libraries (`--ldpaths` = the target sysroot), grafting
what is not on the manylinux whitelist (OpenBLAS, libgomp, libgfortran) and retagging it with the
lowest manylinux policy its symbol versions allow. The result is checked: one platform tag, for
the target's machine, never `any` or the host's.

`build_mxnet_wheel` feeds it the MXNet build of the target (python/mxnet + libmxnet.so +
libnnpack.so); the tests feed it a small library of the project's own.
"""

from __future__ import annotations

import email.message
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.tags import Tag
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from . import log
from .distros import Distribution
from .elfinfo import describe_kind, elf_kind, unlinked_atomics
from .errors import ConfigurationError, VerificationError
from .files import atomic_write_text
from .runner import capture, run
from .settings import Settings
from .settings import source_date_epoch as settings_source_date_epoch
from .sources import sha256_of
from .targets import TARGETS, Target

if TYPE_CHECKING:
    from .mxnet import MxnetResult
    from .nnpack import NnpackResult

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
            calls = unlinked_atomics(archive.read(name))
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
        platform_tag, floor, grafted, show = verify_wheel(repaired, target, sysroot, log_path)
        final = out_dir / repaired.name
        os.replace(repaired, final)
    return WheelResult(target=target.name, wheel=str(final), wheel_sha256=sha256_of(final),
                       wheel_size=final.stat().st_size, platform_tag=platform_tag, manylinux_floor=floor,
                       grafted=grafted, auditwheel_show=show)


def digest_of(*parts: str | Path) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(sha256_of(part).encode() if isinstance(part, Path) else part.encode())
        hasher.update(b"|")
    return hasher.hexdigest()


# -- the MXNet wheel --------------------------------------------------------------------------------

MXNET_REQUIRES = ("numpy>=1.19,<2.3", "requests>=2.20.0,<3", "graphviz<0.9.0,>=0.8.1")
"""MXNet 1.9.1's own setup.py requirements, with the numpy range patch 0010 makes work: 1.19
(Debian 11) to 2.2 (Debian 13), each tested by the smoke suite on that release's Python."""


def mxnet_readme(target: Target, nnpack: "NnpackResult", mxnet_version: str, wheel_version: str,
                 distribution: Distribution) -> str:
    from .mxnet import mxnet_pin
    from .sources import load_pins

    nnpack_pin = load_pins()["nnpack"]
    lines = [
        f"# MXNet {mxnet_version} with NNPACK ({target.name})",
        "",
        f"Wheel version `{wheel_version}`, built by nnpack-toolchain for `{target.gnu_triple}` with Debian "
        f"{distribution.suite}'s GCC {distribution.gcc} against its glibc {distribution.glibc} "
        f"({distribution.manylinux}: {distribution.boards} and later).",
        "",
        f"- NNPACK {nnpack_pin.version}, commit `{nnpack_pin.commit}`, {nnpack.backend} backend, "
        "shared library `libnnpack.so` next to `libmxnet.so`.",
        f"- MXNet {mxnet_version} built with `USE_NNPACK = 1` and this patch series (patches/mxnet/):",
    ]
    lines += [f"  {i}. `{p.file.name}`: {p.description}" for i, p in enumerate(mxnet_pin().patches, 1)]
    lines += [
        "",
        "Convolution, max-pooling and fully-connected layers that NNPACK can serve run on NNPACK;",
        "everything else runs MXNet's own code. Check with `mx.runtime.Features().is_enabled('NNPACK')`",
        "and `mx.runtime.nnpack_call_counts()`. Switches: `MXNET_NNPACK_POLICY=never` (MXNet's own",
        "code everywhere), `MXNET_NNPACK_STRICT_1_0=1` (MXNet 1.0's rules), `MXNET_CPU_NNPACK_NTHREADS`",
        "(default 4), `MXNET_NNPACK_VERBOSE=1` (log each dispatch decision).",
        "",
    ]
    return "\n".join(lines)


def build_mxnet_wheel(target: Target, settings: Settings) -> WheelResult:
    """The target's MXNet wheel from its `invoke mxnet` build; a no-op when nothing changed."""
    from .configure import BUILD_SYSROOT_PACKAGES
    from .mxnet import RESULT_FILE as MXNET_RESULT_FILE, MxnetResult, mxnet_pin
    from .nnpack import RESULT_FILE as NNPACK_RESULT_FILE, NnpackResult
    from .sysroot import build_sysroot

    out_dir = settings.output_dir(target.name)
    mxnet_result_path = out_dir / MXNET_RESULT_FILE
    nnpack_result_path = out_dir / NNPACK_RESULT_FILE
    if not mxnet_result_path.is_file() or not nnpack_result_path.is_file():
        raise ConfigurationError(f"no MXNet build for {target.name}: run invoke mxnet --arch {target.name} first")
    mxnet = MxnetResult(**json.loads(mxnet_result_path.read_text()))
    nnpack = NnpackResult.load(nnpack_result_path)
    library, nnpack_library = Path(mxnet.library), Path(nnpack.library)
    for path in (library, nnpack_library):
        if not path.is_file():
            raise ConfigurationError(f"{path} is gone: rerun invoke mxnet --arch {target.name}")
    pin = mxnet_pin()
    wheel_version = f"{pin.version}+nnpack.{load_nnpack_commit()[:7]}"
    readme = mxnet_readme(target, nnpack, pin.version, wheel_version, settings.distribution)
    digest = mxnet_wheel_digest(library, nnpack_library, readme)
    wheels_dir = out_dir / "wheel"
    result_path = out_dir / RESULT_FILE
    with log.step("wheel", target.name, f"mxnet {wheel_version} wheel (auditwheel repair against Debian "
                  f"{settings.distribution.suite} {target.debian_arch})",
                  settings.logs_dir) as step:
        if result_path.is_file():
            previous = WheelResult(**json.loads(result_path.read_text()))
            wheel = Path(previous.wheel)
            if (previous.inputs_digest == digest and wheel.is_file() and sha256_of(wheel) == previous.wheel_sha256
                    and Path(previous.sbom).is_file()):
                previous.up_to_date = True
                step.note = "up to date"
                return previous
        sysroot = build_sysroot(target, settings, BUILD_SYSROOT_PACKAGES)
        spec = WheelSpec(
            distribution="mxnet", version=wheel_version, package_dir=library.parent.parent / "python" / "mxnet",
            native_libraries=(library, nnpack_library),
            summary=f"Apache MXNet {pin.version} with NNPACK-accelerated convolution, max-pooling and fully-connected layers",
            license="Apache-2.0", readme=readme, requires_dist=MXNET_REQUIRES)
        with tempfile.TemporaryDirectory(prefix=".wheel-", dir=out_dir) as tmp:
            result = build_wheel(spec, target, sysroot, Path(tmp), step.log_path)
            require_floor(result.manylinux_floor, settings.distribution, step.log_path)
            for old in wheels_dir.glob("*.whl") if wheels_dir.is_dir() else ():
                old.unlink()
            wheels_dir.mkdir(exist_ok=True)
            final = wheels_dir / Path(result.wheel).name
            os.replace(result.wheel, final)
        result.wheel = str(final)
        result.inputs_digest = digest
        result.sbom = str(write_wheel_sbom(target, final, nnpack, mxnet, settings.distribution))
        result.save(result_path)
        step.note = f"{final.name}, {result.wheel_size} bytes, {result.manylinux_floor}"
    return result


def mxnet_wheel_digest(library: Path, nnpack_library: Path, readme: str) -> str:
    """The wheel stage's inputs: both libraries, MXNet's Python package next to libmxnet.so (tree/lib
    and tree/python), the description, the timestamp and this module's code."""
    return digest_of(library, nnpack_library, readme, str(source_date_epoch()), Path(__file__).read_text(),
                     *sorted((library.parent.parent / "python" / "mxnet").rglob("*.py")))


def current_mxnet_wheel_digest(target: Target, settings: Settings, library: Path) -> str:
    """mxnet_wheel_digest for `library` with this home's NNPACK build (a downloaded MXNet's wheel)."""
    from .mxnet import mxnet_pin
    from .nnpack import RESULT_FILE as NNPACK_RESULT_FILE, NnpackResult

    nnpack = NnpackResult.load(settings.output_dir(target.name) / NNPACK_RESULT_FILE)
    version = mxnet_pin().version
    readme = mxnet_readme(target, nnpack, version, f"{version}+nnpack.{load_nnpack_commit()[:7]}",
                          settings.distribution)
    return mxnet_wheel_digest(library, Path(nnpack.library), readme)


def floor_version(tag: str) -> tuple[int, int]:
    major, minor = re.fullmatch(r"manylinux_(\d+)_(\d+)", tag).groups()
    return int(major), int(minor)


def require_floor(floor: str, distribution: Distribution, log_path: Path) -> None:
    """A wheel built against a release's glibc must install where that release does: a higher floor
    means something linked the host's newer libraries."""
    if floor_version(floor) > floor_version(distribution.manylinux):
        raise VerificationError(
            f"the wheel came out {floor}, above {distribution.manylinux} of its base {distribution.name} "
            f"(glibc {distribution.glibc}): a library or object was built against a newer glibc; "
            "auditwheel show in the log names the symbols", log_path=log_path)


def bundled_libraries(wheel: Path) -> list[tuple[str, str]]:
    """(file name, sha256) of every shared library in the wheel besides libmxnet.so."""
    with zipfile.ZipFile(wheel) as archive:
        return sorted((Path(n).name, hashlib.sha256(archive.read(n)).hexdigest()) for n in archive.namelist()
                      if ".so" in Path(n).name and Path(n).name != "libmxnet.so")


def write_wheel_sbom(target: Target, wheel: Path, nnpack: "NnpackResult", mxnet: "MxnetResult",
                     distribution: Distribution) -> Path:
    """The CycloneDX SBOM next to the wheel (<wheel name>.cdx.json)."""
    from .sbom import build_sbom, sbom_path, write_sbom

    for old in wheel.parent.glob("*.cdx.json"):
        if old.name != sbom_path(wheel).name:
            old.unlink()
    document = build_sbom(target.name, wheel_path=wheel, nnpack_result=asdict(nnpack), mxnet_result=asdict(mxnet),
                          bundled_libraries=bundled_libraries(wheel), distribution=distribution)
    return write_sbom(sbom_path(wheel), document)


def load_nnpack_commit() -> str:
    from .sources import load_pins

    return load_pins()["nnpack"].commit
