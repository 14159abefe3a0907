"""Stage 3: MXNet's config.mk for a target, rendered from config.mk.template.

Inputs: the NNPACK build of the same target (include dirs, library dir) and a target sysroot
with Debian's OpenBLAS for that architecture. Every value is escaped for make (and, inside
flag lists, quoted for the shell); a value make cannot express (newline, NUL, trailing
backslash) is refused, never written.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from . import log
from .errors import ConfigurationError, ToolchainError
from .files import atomic_write_text
from .nnpack import RESULT_FILE, NnpackResult
from .sources import load_pins
from .settings import PROJECT_ROOT, Settings
from .compilers import Compilers, ensure_compilers
from .sysroot import build_sysroot
from .targets import Target

TEMPLATE = PROJECT_ROOT / "config.mk.template"
PLACEHOLDER = re.compile(r"@([A-Z_0-9]+)@")
# Target packages the MXNet build links against (OpenBLAS with its cblas.h and LAPACK).
BUILD_SYSROOT_PACKAGES = ["libopenblas-pthread-dev", "libgomp1"]


class MissingNnpackError(ToolchainError):
    exit_code = 8


@dataclass(frozen=True)
class ConfigureResult:
    target: str
    config_mk: Path
    values: dict[str, str]
    sysroot: Path
    changed: bool
    """False when config.mk already had this content (and kept its timestamp)."""


def make_value(value: str, *, name: str) -> str:
    """Escape a value for the right-hand side of a make assignment."""
    if any(c in value for c in "\n\r\0"):
        raise ConfigurationError(f"{name}: value {value!r} contains a newline or NUL; make cannot express it")
    if value.endswith("\\"):
        raise ConfigurationError(f"{name}: value {value!r} ends with a backslash (a make line continuation)")
    return value.replace("$", "$$").replace("#", "\\#")


def shell_words(words: list[str], *, name: str) -> str:
    """A flag list for make: each word shell-quoted (spaces, quotes), then make-escaped."""
    return make_value(" ".join(shlex.quote(w) for w in words), name=name)


def render(template: str, values: dict[str, str]) -> str:
    """Substitute @NAME@ placeholders; unknown or unused names are errors, not silent gaps."""
    wanted = set(PLACEHOLDER.findall(template))
    missing, unused = wanted - set(values), set(values) - wanted
    if missing or unused:
        raise ConfigurationError(
            f"config.mk.template and the renderer disagree: missing values {sorted(missing)}, unused {sorted(unused)}"
        )
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def config_values(target: Target, nnpack: NnpackResult, sysroot: Path, compilers: Compilers, home: Path,
                  tree: Path) -> dict[str, str]:
    """The template's values. No path of the build home is left in the library: __FILE__ in MXNet's
    log messages is mapped to "./<path in the tree>" and other home paths to /nntc-home (GCC applies
    the last matching map), and libmxnet.so gets no RUNPATH of the home (the wheel sets $ORIGIN)."""
    multiarch = sysroot / "usr" / "lib" / target.gnu_triple
    openblas_lib = multiarch / "openblas-pthread"
    openblas_include = sysroot / "usr" / "include" / target.gnu_triple / "openblas-pthread"
    nnpack_lib = Path(nnpack.library).parent
    cflags = [*target.compiler_flags, *target.mxnet_flags, *[f"-I{d}" for d in nnpack.include_dirs], f"-I{openblas_include}",
              f"-ffile-prefix-map={home}=/nntc-home", f"-ffile-prefix-map={tree}=."]
    ldflags = [
        f"-L{nnpack_lib}", "-Wl,-rpath,$ORIGIN", f"-Wl,-rpath-link,{nnpack_lib}",
        f"-L{openblas_lib}", f"-Wl,-rpath-link,{openblas_lib}", f"-Wl,-rpath-link,{multiarch}",
        "-lm", "-lpthread", *target.mxnet_link_flags,
    ]
    return {
        "TARGET": make_value(target.name, name="TARGET"),
        "GNU_TRIPLE": make_value(target.gnu_triple, name="GNU_TRIPLE"),
        "CC": shell_words([str(compilers.cc), *compilers.flags], name="CC"),
        "CXX": shell_words([str(compilers.cxx), *compilers.flags], name="CXX"),
        "AR": shell_words([target.ar], name="AR"),
        "ADD_CFLAGS": shell_words(cflags, name="ADD_CFLAGS"),
        "ADD_LDFLAGS": shell_words(ldflags, name="ADD_LDFLAGS"),
        "LAPACK_PATH": make_value(str(openblas_lib), name="USE_LAPACK_PATH"),
        "USE_SSE": "1" if target.mxnet_use_sse else "0",
        "USE_F16C": "0",
    }


def load_nnpack(target: Target, settings: Settings) -> NnpackResult:
    path = settings.output_dir(target.name) / RESULT_FILE
    if not path.is_file():
        raise MissingNnpackError(
            f"no NNPACK build for {target.name} in {settings.home}: run 'invoke nnpack --arch {target.name}' first"
        )
    result = NnpackResult.load(path)
    if not Path(result.library).is_file():
        raise MissingNnpackError(f"{result.library} is gone: run 'invoke nnpack --arch {target.name}' again")
    return result


def configure(target: Target, settings: Settings, output: Path | None = None) -> ConfigureResult:
    config_mk = output or settings.output_dir(target.name) / "config.mk"
    with log.step("configure", target.name, f"config.mk from {TEMPLATE.name}", settings.logs_dir) as step:
        nnpack = load_nnpack(target, settings)
        sysroot = build_sysroot(target, settings, BUILD_SYSROOT_PACKAGES)
        tree = settings.mxnet_tree(target.name, load_pins()["mxnet"].version)
        values = config_values(target, nnpack, sysroot, ensure_compilers(target, settings), settings.home, tree)
        text = render(TEMPLATE.read_text(), values)
        changed = not config_mk.is_file() or config_mk.read_text() != text
        if changed:  # an unchanged file keeps its timestamp
            atomic_write_text(config_mk, text)
        step.note = f"{'wrote' if changed else 'unchanged'}: {config_mk}"
    return ConfigureResult(target.name, config_mk, values, sysroot, changed)
