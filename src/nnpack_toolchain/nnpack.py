"""Stage 2: NNPACK as shared libraries for one target, through the Conan recipes.

`build_nnpack(target, settings)` resolves the pinned sources, runs `conan create` for NNPACK
(its dependencies are built by their own recipes on the way; NNPACK's test suite runs in the
recipe's build(), natively or under QEMU; the Meson smoke test runs as its test_package),
deploys the result to `<home>/out/<target>/nnpack`, and checks that the library is for the
right machine and carries the expected backend's kernels.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import conan_config, log
from .compilers import compilers_for, ensure_compilers
from .doctor import require_tools
from .errors import (
    BuildError,
    ConfigurationError,
    MissingSourceError,
    PatchError,
    VerificationError,
)
from .local_source import check_source_names
from .runner import capture, run
from .settings import PATCHES_DIR, RECIPES_DIR, Settings
from .sources import Pin, Resolved, pins_for_backend, sha256_of, source_cache
from .targets import Target

RESULT_FILE = "nnpack-result.json"


@dataclass
class SuiteSummary:
    ran: int = 0
    passed: int = 0
    failed: int = 0
    names: list[str] = field(default_factory=list)


@dataclass
class NnpackResult:
    target: str
    reference: str
    backend: str
    prefix: str
    """Deployed package: lib/libnnpack.so, include/nnpack.h."""
    library: str
    include_dirs: list[str]
    library_sha256: str
    library_size: int
    tests: SuiteSummary
    sources: list[str]
    inputs_digest: str
    build_seconds: float = 0.0
    up_to_date: bool = False

    @classmethod
    def load(cls, path: Path) -> "NnpackResult":
        data = json.loads(path.read_text())
        data["tests"] = SuiteSummary(**data["tests"])
        return cls(**data)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def resolve_backend(target: Target, settings: Settings) -> str:
    backend = target.nnpack_backend if settings.backend == "fast" else settings.backend
    if backend not in target.nnpack_backends:
        raise ConfigurationError(
            f"backend {backend!r} is not available for {target.name}; choose one of: fast, "
            + ", ".join(target.nnpack_backends)
        )
    return backend


def resolve_sources(pins: list[Pin], settings: Settings, target: Target) -> list[Resolved]:
    check_source_names(settings.local_sources)
    cache = source_cache(settings)
    resolved, missing = [], []
    for pin in pins:  # collect every missing source before failing
        try:
            resolved.append(cache.resolve(pin, offline=settings.offline, local_dir=settings.local_sources.get(pin.name)))
        except MissingSourceError as exc:
            missing.extend(exc.missing)
    if missing:
        raise MissingSourceError(missing, offline=settings.offline)
    return resolved



def inputs_digest(target: Target, settings: Settings, backend: str, pins: list[Pin]) -> str:
    """Everything that decides the NNPACK binary: recipes, patches, profile, options."""
    digest = hashlib.sha256()
    folders = [RECIPES_DIR / "base"] + [d for p in pins for d in (p.recipe_dir, PATCHES_DIR / p.name)]
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "build-" not in path.as_posix() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(folder.parent.parent).as_posix().encode())
                digest.update(path.read_bytes())
    home = settings.conan_home
    compilers = compilers_for(target, settings)
    digest.update(conan_config.host_profile(compilers, settings, home / "machine-files" / f"{target.name}.ini").encode())
    digest.update(f"{backend}|{settings.tests}|{[p.reference for p in pins]}".encode())
    return digest.hexdigest()


def build_nnpack(target: Target, settings: Settings) -> NnpackResult:
    require_tools([target])
    backend = resolve_backend(target, settings)
    pins = pins_for_backend(backend)
    out_dir = settings.output_dir(target.name)
    result_path = out_dir / RESULT_FILE

    with log.step("sources", target.name, f"verify pinned sources of {len(pins)} packages", settings.logs_dir) as step:
        resolved = resolve_sources(pins, settings, target)
        with open(step.log_path, "a") as stream:
            stream.write("\n".join(r.line() for r in resolved) + "\n")
        for r in resolved:
            if not r.verified:
                log.warn(r.line())
        step.note = ", ".join(sorted({r.origin.split(" (")[0] for r in resolved}))

    digest = inputs_digest(target, settings, backend, pins)
    if not conan_config.conan_local_sources(settings) and result_path.is_file():
        previous = NnpackResult.load(result_path)
        if previous.inputs_digest == digest and Path(previous.library).is_file():
            previous.up_to_date = True
            log.info(f"nnpack [{target.name}]: up to date ({previous.library})")
            return previous

    ensure_compilers(target, settings)  # Debian's GCC of the base distribution, on first use
    nnpack_pin = next(p for p in pins if p.name == "nnpack")
    with conan_config.conan_lock(settings), log.step("nnpack", target.name, f"build {nnpack_pin.reference} ({backend} backend, tests: {settings.tests})",
                  settings.logs_dir) as step:
        # Written under the lock: another shell's build (other --jobs, cache) may have rewritten them.
        conan_config.prepare_home(settings, target)
        conan_config.export_recipes(settings, [p.name for p in pins], step.log_path)
        try:
            conan_config.create(target, settings, "nnpack", step.log_path, backend=backend)
        except BuildError as error:
            raise classify_build_failure(error, step.log_path) from None
        deploy = out_dir / "deploy"
        shutil.rmtree(deploy, ignore_errors=True)
        run([*conan_config.conan_command(), "install", f"--requires={nnpack_pin.reference}",
             *conan_config.package_args(target, settings, backend=backend),
             "--deployer=direct_deploy", f"--deployer-folder={deploy}", f"--output-folder={out_dir / 'conan-env'}",
             "-vquiet"],
            env=conan_config.conan_env(settings), log_path=step.log_path, what="conan install (deploy)")
        prefix = deploy / "direct_deploy" / "nnpack"
        library = prefix / "lib" / "libnnpack.so"
        verify_library(target, backend, library, step.log_path)
        tests = read_test_summary(prefix / "res" / "nnpack-tests.xml")
        result = NnpackResult(
            target=target.name,
            reference=nnpack_pin.reference,
            backend=backend,
            prefix=str(prefix),
            library=str(library),
            include_dirs=[str(prefix / "include")],  # nnpack.h and pthreadpool.h
            library_sha256=sha256_of(library),
            library_size=library.stat().st_size,
            tests=tests,
            sources=[r.line() for r in resolved],
            inputs_digest=digest,
            build_seconds=round(step.elapsed, 1),
        )
        step.note = f"{tests.passed}/{tests.ran} NNPACK tests passed"
    result.save(result_path)
    return result


def classify_build_failure(error: BuildError, log_path: Path) -> BuildError:
    """Turn a failed patch into a PatchError that names the patch and the files it failed on."""
    text = log_path.read_text(errors="replace")
    failed = re.search(r"Failed to (?:apply|parse) patch: (\S+)", text)
    if not failed:
        return error
    files = re.findall(r"(?:source file is different - |file \d+/\d+:\s+|does not exist:\n\s+--- )(\S+)", text)
    hunks = re.findall(r"hunk no\.\d+ doesn't match source file at line \d+", text)
    return PatchError(
        f"patch {Path(failed.group(1)).name} no longer applies to {', '.join(dict.fromkeys(files)) or 'the source'}"
        f"{' (' + '; '.join(hunks[:3]) + ')' if hunks else ''}. Refresh the patch against the pinned source, "
        "or fix the pin.",
        log_path=log_path,
    )


def read_test_summary(junit: Path) -> SuiteSummary:
    if not junit.is_file():
        return SuiteSummary()
    root = ET.parse(junit).getroot()
    cases = root.iter("testcase")
    summary = SuiteSummary()
    for case in cases:
        summary.ran += 1
        failed = case.find("failure") is not None or case.find("error") is not None or case.get("status") == "fail"
        if failed:
            summary.failed += 1
        else:
            summary.passed += 1
        summary.names.append(case.get("name", "?"))
    return summary


def verify_elf_machine(target: Target, library: Path, log_path: Path) -> None:
    """The file must exist and be an ELF object for the target's machine (readelf -h)."""
    if not library.is_file():
        raise VerificationError(f"{library} was not produced", log_path=log_path)
    header = capture(["readelf", "-h", library])
    if target.elf_machine not in header or target.elf_class not in header:
        raise VerificationError(
            f"{library} is not a {target.elf_class} {target.elf_machine} object:\n{header}", log_path=log_path
        )


def verify_library(target: Target, backend: str, library: Path, log_path: Path) -> None:
    """The library must be an ELF for the target machine and define the backend's kernels."""
    verify_elf_machine(target, library, log_path)
    symbols = capture(["readelf", "--dyn-syms", "-W", library])
    marker = target.backend_marker_symbols[backend]
    if marker not in symbols:
        raise VerificationError(
            f"{library} lacks {marker}: the {backend} kernels were not built (NNPACK falls back to "
            "psimd silently when it finds no Python for PeachPy)",
            log_path=log_path,
        )
    if target.elf_attributes:
        attributes = capture(["readelf", "-A", library])
        for needed in target.elf_attributes:
            if needed not in attributes:
                raise VerificationError(f"{library}: build attribute {needed!r} missing", log_path=log_path)
