"""Stage 4: MXNet 1.9.1 with USE_NNPACK=1 for a target.

The project's own stage rather than a Conan recipe: MXNet's Makefile build takes 70-90 minutes
per target on 2 cores, so it keeps one persistent build tree per target
(`<home>/build/<target>/mxnet-1.9.1`) that make resumes after an interruption (ccache keeps
the objects across trees). The tree is prepared once: the verified source release (or a local
directory, unverified) is unpacked, patches/mxnet/ applied in order, and only then renamed
into place; a change in the source or the patches prepares it anew.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import log
from .compilers import compilers_for
from .configure import ConfigureResult, configure
from .distribute import distributed_compiler, make_environment
from .doctor import require_tools
from .errors import BuildError, PatchError, VerificationError
from .local_source import check_tree, tree_digest
from .locks import exclusive
from .nnpack import verify_elf_machine
from .progress import MakeObjects
from .publish import ccache_remote_env
from .runner import capture, run
from .settings import RECIPES_DIR, Settings
from .sources import Pin, load_pin, sha256_of, source_cache
from .targets import Target

RESULT_FILE = "mxnet-result.json"
#: Each object's size in KiB in a finished build (benchmarks/mxnet_object_weights.py): its
#: relative compile time, for the time-left estimate.
OBJECT_WEIGHTS = Path(__file__).with_name("mxnet_objects.json")
STAGE_REVISION = 2
"""How this stage builds, beyond its inputs (2: ADD_CFLAGS for the sub-makes): bump it when the same
inputs give other bytes, so that no machine downloads a package of the old procedure."""
MAKE_HASH = "\\#"
"""How config.mk escapes '#' (configure.make_value); make's command line takes it as it is."""
MAKE_TARGET = "lib/libmxnet.so"


@dataclass
class MxnetResult:
    target: str
    library: str
    library_sha256: str
    library_size: int
    needed: list[str]
    source: str
    patches: list[str]
    inputs_digest: str
    build_seconds: float = 0.0
    up_to_date: bool = False
    package_inputs: dict[str, str] = field(default_factory=dict)
    """Digests of every input, free of this machine's paths: the Conan package's options (prebuilt.py)."""
    downloaded_from: str = ""
    """The Conan remote(s) the build came from; empty when built here."""


def current_package_inputs(target: Target, settings: Settings, config: ConfigureResult) -> dict[str, str]:
    """package_inputs with this home's NNPACK build."""
    nnpack = json.loads((settings.output_dir(target.name) / "nnpack-result.json").read_text())
    return package_inputs(target, settings, config, nnpack["library_sha256"])


def package_inputs(target: Target, settings: Settings, config: ConfigureResult, nnpack_sha256: str) -> dict[str, str]:
    """What the MXNet stage's result depends on, as digests that are the same on every machine:
    the source, the patches, config.mk (the toolchain home's path replaced), NNPACK's library and
    the toolchain (base distribution, its compilers' package set and the sysroot's packages), and
    the wheel stage's own code and files (the package carries the wheel too)."""
    from .mxnet_wheel import wheel_stage_digest

    def digest(text: str | bytes) -> str:
        return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()

    pin = mxnet_pin()
    local = settings.local_sources.get("mxnet")
    compilers = compilers_for(target, settings).root  # <home>/compilers/<release>-<target>-<key of its packages>
    return {
        "source": digest(f"local {tree_digest(local)}") if local else pin.mirrors[0].sha256,
        "patches": digest(b"".join(p.file.read_bytes() for p in pin.patches)),
        "config": digest(config.config_mk.read_text().replace(str(settings.home), "<home>")),
        "nnpack": nnpack_sha256,
        "toolchain": digest(f"{settings.base}|{target.name}|{compilers.name}|stage {STAGE_REVISION}|"
                            f"{(config.sysroot / '.complete').read_text()}"),
        "wheel": wheel_stage_digest(),
    }


def object_weights() -> dict[str, float]:
    """Each MXNet object's relative compile time (empty when the table is missing: count objects)."""
    try:
        return {str(k): float(v) for k, v in json.loads(OBJECT_WEIGHTS.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def mxnet_pin() -> Pin:
    return load_pin(RECIPES_DIR / "mxnet")


def apply_patches(pin: Pin, tree: Path, log_path: Path) -> None:
    """Apply pin's patches in order; a failure names the patch and the files it failed on."""
    for patch in pin.patches:
        try:
            run(["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-i", patch.file],
                cwd=tree, log_path=log_path, error=PatchError, what=f"patch {patch.file.name}")
        except PatchError as error:
            text = log_path.read_text(errors="replace")
            failed = re.findall(r"patching file (\S+)\n(?:.*\n)*?.*(?:FAILED|ignored|can't find)", text)
            missing = re.findall(r"can't find file to patch at input line \d+\n.*\n.*\n\|--- a/(\S+)", text)
            files = ", ".join(dict.fromkeys(failed + missing)) or "see log"
            raise PatchError(
                f"patch {patch.file.name} no longer applies to the MXNet source ({files}). "
                "Refresh it against the pinned release.",
                log_path=log_path,
            ) from error


def prepare_tree(pin: Pin, settings: Settings, target: Target, log_path: Path) -> tuple[Path, str]:
    """The patched source tree for target, prepared only when its inputs changed."""
    local = settings.local_sources.get("mxnet")
    cache = source_cache(settings)
    resolved = cache.resolve(pin, offline=settings.offline, local_dir=local)
    patches_digest = hashlib.sha256(b"".join(p.file.read_bytes() for p in pin.patches)).hexdigest()
    stamp_value = f"{resolved.origin}|{patches_digest}"
    if local:  # an edit inside the local tree must rebuild: its content is part of the stamp
        check_tree("mxnet", local, pin.recipe_dir)
        stamp_value += f"|content {tree_digest(local)}"
    tree = settings.mxnet_tree(target.name, pin.version)
    stamp = tree / ".nntc-prepared"
    if stamp.is_file() and stamp.read_text() == stamp_value:
        return tree, resolved.line()
    tree.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{tree.name}-", dir=tree.parent))
    try:
        if local:
            shutil.copytree(local, work, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        else:
            mirror = cache.cached_mirror(pin)
            assert mirror is not None
            with tarfile.open(cache.path(mirror.sha256)) as archive:
                archive.extractall(work, filter="tar")
            (top,) = [p for p in work.iterdir()]
            for entry in top.iterdir():
                entry.rename(work / entry.name)
            top.rmdir()
        apply_patches(pin, work, log_path)
        if tree.is_dir():
            carry_over_build(tree, work)
        stamp_tmp = work / ".nntc-prepared"
        stamp_tmp.write_text(stamp_value)
        shutil.rmtree(tree, ignore_errors=True)
        os.replace(work, tree)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return tree, resolved.line()


def carry_over_build(old: Path, new: Path) -> None:
    """Keep what make built in the old tree when the sources changed (e.g. a new patch).

    Files with the same content keep their old timestamps and the build products (everything
    the old tree has that the new sources do not) move over, so make recompiles only what a
    changed file affects instead of all 340 objects.
    """
    for path in sorted(old.rglob("*"), key=lambda p: len(p.parts)):
        relative = path.relative_to(old)
        fresh = new / relative
        if path.is_symlink() or not path.exists():
            continue
        if not fresh.exists() and not fresh.is_symlink():
            if fresh.parent.is_dir():
                os.replace(path, fresh)
        elif path.is_file() and fresh.is_file() and not fresh.is_symlink():
            old_stat = path.stat()
            if old_stat.st_size == fresh.stat().st_size and filecmp.cmp(path, fresh, shallow=False):
                os.utime(fresh, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns))


def build_mxnet(target: Target, settings: Settings, config: ConfigureResult | None = None) -> MxnetResult:
    """Build libmxnet.so for target; `config` is a config.mk just rendered for it (else rendered here)."""
    require_tools([target])
    config = config or configure(target, settings)
    pin = mxnet_pin()
    out_dir = settings.output_dir(target.name)
    result_path = out_dir / RESULT_FILE
    # One build per target tree at a time: a second shell building the same target waits here
    # (two makes in one tree, or one re-preparing it under the other, break both).
    tree_lock = settings.home / "build" / f".{target.name}.lock"
    with exclusive(tree_lock, f"waiting for another build of MXNet for {target.name} in {settings.home}"), \
            log.step("mxnet", target.name, f"MXNet {pin.version} with USE_NNPACK=1 ({len(pin.patches)} patches)",
                     settings.logs_dir) as step:
        tree, source_line = prepare_tree(pin, settings, target, step.log_path)
        # ADD_CFLAGS on make's command line too: command-line variables reach the dmlc-core and nnvm
        # sub-makes (MAKEFLAGS), config.mk's do not, and their objects need its -ffile-prefix-map.
        submake = [f"ADD_CFLAGS={config.values['ADD_CFLAGS'].replace(MAKE_HASH, '#')}"]  # no comments here
        digest = hashlib.sha256(
            f"{source_line}|{config.config_mk.read_text()}|{(tree / '.nntc-prepared').read_text()}|{submake}".encode()
        ).hexdigest()
        library = tree / MAKE_TARGET
        if result_path.is_file() and library.is_file():
            previous = MxnetResult(**json.loads(result_path.read_text()))
            if previous.inputs_digest == digest and previous.library_sha256 == sha256_of(library):
                previous.up_to_date = True
                step.note = "up to date"
                return previous
        shutil.copyfile(config.config_mk, tree / "config.mk")
        forget_make_outputs(tree, submake)
        compiler = config.values["CXX"]  # the base distribution's g++ with its --sysroot
        env = ccache_remote_env(base_dir=settings.home) if settings.ccache else {}
        jobs = settings.jobs
        if settings.distribute:  # icecream: ccache hands its misses to icecc (CCACHE_PREFIX)
            extra, jobs = make_environment(target, settings, settings.distribute)
            env.update(extra)
        if settings.ccache and shutil.which("ccache"):
            compiler = f"ccache {compiler}"
        elif env:
            compiler = distributed_compiler(compiler, env)
        try:
            # The Makefile picks up ./config.mk itself; a config= argument would reach the dmlc-core
            # and nnvm sub-makes through MAKEFLAGS and break them.
            run(["make", "-C", tree, f"-j{jobs}", MAKE_TARGET, f"CXX={compiler}", *submake],
                env=env or None,
                log_path=step.log_path, what=f"make {MAKE_TARGET} for {target.name}",
                progress=MakeObjects(f"mxnet [{target.name}]", weights=object_weights()))
        except BuildError as error:
            raise classify_make_failure(error, target, settings) from None
        needed = verify_mxnet(target, library, step.log_path)
        result = MxnetResult(
            target=target.name, library=str(library), library_sha256=sha256_of(library),
            library_size=library.stat().st_size, needed=needed, source=source_line,
            patches=[p.file.name for p in pin.patches], inputs_digest=digest,
            build_seconds=round(step.elapsed, 1),
            package_inputs=current_package_inputs(target, settings, config),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
        tmp.replace(result_path)
    return result


SUBMAKE_OUTPUTS = ("3rdparty/tvm/nnvm/lib/libnnvm.a", "3rdparty/tvm/nnvm/build", "3rdparty/dmlc-core/libdmlc.a",
                   "3rdparty/dmlc-core/build")
MAIN_OUTPUTS = ("build", "lib/libmxnet.so", "lib/libmxnet.a")
"""What make builds: it only compares timestamps, so new flags (ADD_CFLAGS, given to the sub-makes on
the command line and read by MXNet's own Makefile from config.mk) mean removing these; ccache
still hits for every object whose compile command did not change."""


def forget_make_outputs(tree: Path, submake: list[str]) -> None:
    """Remove make's outputs (the sub-makes' and MXNet's own) when the flags changed (a stamp in the tree)."""
    stamp = tree / ".nntc-submake"
    wanted = "\n".join(submake) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    for name in (*SUBMAKE_OUTPUTS, *MAIN_OUTPUTS):
        path = tree / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    stamp.write_text(wanted)


def classify_make_failure(error: BuildError, target: Target, settings: Settings) -> BuildError:
    """A compiler killed for lack of memory gets advice; make resumes on the next run."""
    assert error.log_path is not None
    text = error.log_path.read_text(errors="replace")[-50000:]
    if re.search(r"Killed signal terminated program|virtual memory exhausted|out of memory|cannot allocate memory",
                 text, re.I):
        return BuildError(
            f"the compiler ran out of memory building MXNet for {target.name}; rerun with fewer jobs "
            f"(--jobs {max(1, settings.jobs // 2)}): make resumes where it stopped",
            log_path=error.log_path,
        )
    return error


def verify_mxnet(target: Target, library: Path, log_path: Path) -> list[str]:
    verify_elf_machine(target, library, log_path)
    dynamic = capture(["readelf", "-d", library])
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    if "libnnpack.so" not in needed:
        raise VerificationError(f"{library} does not link libnnpack.so (NEEDED: {', '.join(needed)})",
                                log_path=log_path)
    return needed
