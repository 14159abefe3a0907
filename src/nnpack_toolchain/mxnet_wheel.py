"""Stage 5 for MXNet: the target's MXNet build as a wheel (python/mxnet + libmxnet.so + libnnpack.so),
made by wheel.py's generic `build_wheel`, with its description (BUILD-INFO.md), the numpy range
patch 0010 supports, the manylinux floor of the base distribution checked, and its SBOM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import log
from .distros import Distribution
from .errors import ConfigurationError, VerificationError
from .settings import Settings
from .sources import sha256_of
from .targets import Target
from .wheel import RESULT_FILE, WheelResult, WheelSpec, build_wheel, digest_of, source_date_epoch

if TYPE_CHECKING:
    from .mxnet import MxnetResult
    from .nnpack import NnpackResult


MXNET_REQUIRES = ("numpy>=1.19,<2.3", "requests>=2.20.0,<3", "graphviz<0.9.0,>=0.8.1")
"""MXNet 1.9.1's own setup.py requirements, with the numpy range patch 0010 makes work: 1.19
(Debian 11) to 2.2 (Debian 13), each tested by the smoke suite on that release's Python."""


BENCH_PACKAGE = "nnpack_bench"
"""`python3 -m mxnet.nnpack_bench`: the benchmark a board runs from the installed wheel."""


def bench_files() -> tuple[tuple[str, Path], ...]:
    """The files of mxnet/nnpack_bench/ (path inside the mxnet package, source): target_scripts/nnpack_bench.py
    as the package, with the toolchain's own model zoo (and the errors module it imports), timing code
    (bench_models.py) and policy switch (nnpack_layers.py) copied next to it, unchanged."""
    here = Path(__file__).parent
    scripts = here / "target_scripts"
    sources = {"__init__.py": scripts / "nnpack_bench.py", "__main__.py": scripts / "nnpack_bench_main.py",
               "bench_models.py": scripts / "bench_models.py", "nnpack_layers.py": scripts / "nnpack_layers.py",
               "model_zoo.py": here / "model_zoo.py", "errors.py": here / "errors.py"}
    return tuple((f"{BENCH_PACKAGE}/{name}", source) for name, source in sorted(sources.items()))


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
        "Benchmark this device: `python3 -m mxnet.nnpack_bench --json out.json` (images/sec with NNPACK off,",
        "always and auto, peak RSS, the auto policy's choices; `--help` for the options), then",
        "`invoke bench --import out.json` on the build machine.",
        "",
    ]
    return "\n".join(lines)


def build_mxnet_wheel(target: Target, settings: Settings) -> WheelResult:
    """The target's MXNet wheel from its `invoke mxnet` build; a no-op when nothing changed."""
    from .configure import BUILD_SYSROOT_PACKAGES
    from .mxnet import RESULT_FILE as MXNET_RESULT_FILE, MxnetResult, mxnet_pin
    from .nnpack import RESULT_FILE as NNPACK_RESULT_FILE, NnpackResult
    from .compilers import compilers_for
    from .sysroot import build_sysroot, sysroot_dir

    out_dir = settings.output_dir(target.name)
    compilers = compilers_for(target, settings).root  # for the SBOM: the packages of both directories
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
                # the SBOM again (a second; the same bytes unless this toolchain describes the wheel better)
                sysroot = sysroot_dir(settings, target, BUILD_SYSROOT_PACKAGES, settings.distribution.suite)
                previous.sbom = str(write_wheel_sbom(target, wheel, nnpack, mxnet, settings.distribution, sysroot,
                                                     compilers))
                step.note = "up to date"
                return previous
        sysroot = build_sysroot(target, settings, BUILD_SYSROOT_PACKAGES)
        spec = WheelSpec(
            distribution="mxnet", version=wheel_version, package_dir=library.parent.parent / "python" / "mxnet",
            native_libraries=(library, nnpack_library),
            summary=f"Apache MXNet {pin.version} with NNPACK-accelerated convolution, max-pooling and fully-connected layers",
            license="Apache-2.0", readme=readme, requires_dist=MXNET_REQUIRES, extra_files=bench_files())
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
        result.sbom = str(write_wheel_sbom(target, final, nnpack, mxnet, settings.distribution, sysroot, compilers))
        result.save(result_path)
        step.note = f"{final.name}, {result.wheel_size} bytes, {result.manylinux_floor}" + (
            f"; executable-stack request cleared in {', '.join(Path(n).name for n in result.execstack_cleared)}"
            if result.execstack_cleared else "")
    return result


def mxnet_wheel_digest(library: Path, nnpack_library: Path, readme: str) -> str:
    """The wheel stage's inputs: both libraries, MXNet's Python package next to libmxnet.so (tree/lib
    and tree/python), the on-board benchmark's files, the description, the timestamp and this module's code."""
    return digest_of(library, nnpack_library, readme, wheel_stage_digest(),
                     *sorted((library.parent.parent / "python" / "mxnet").rglob("*.py")))


def wheel_stage_digest() -> str:
    """What the wheel stage adds on every machine alike: the timestamp, this module's and wheel.py's
    code and the on-board benchmark's files (a package input of the prebuilt MXNet, see mxnet.py)."""
    from . import wheel

    return digest_of(str(source_date_epoch()), Path(__file__).read_text(), Path(wheel.__file__).read_text(),
                     *(f"{name}={sha256_of(source)}" for name, source in bench_files()))


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
                     distribution: Distribution, sysroot: Path | None = None, compilers: Path | None = None) -> Path:
    """The CycloneDX SBOM next to the wheel (<wheel name>.cdx.json), with the Debian packages of the
    target sysroot and compilers directory that made it."""
    from .sbom import build_sbom, sbom_path, write_sbom
    from .sysroot import unpacked_packages

    for old in wheel.parent.glob("*.cdx.json"):
        if old.name != sbom_path(wheel).name:
            old.unlink()
    document = build_sbom(target.name, wheel_path=wheel, nnpack_result=asdict(nnpack), mxnet_result=asdict(mxnet),
                          bundled_libraries=bundled_libraries(wheel), distribution=distribution,
                          sysroot_packages=unpacked_packages(sysroot) if sysroot else (),
                          compiler_packages=unpacked_packages(compilers) if compilers else ())
    return write_sbom(sbom_path(wheel), document)


def load_nnpack_commit() -> str:
    from .sources import load_pins

    return load_pins()["nnpack"].commit
