"""The target model: one frozen record per machine the toolchain builds for.

Adding a target means adding one `Target` entry to `TARGETS`; everything else (Conan profiles,
Meson machine files, QEMU invocations, doctor checks, wheel tags) is derived from it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigurationError, UnknownTargetError


@dataclass(frozen=True)
class Target:
    name: str
    """Canonical name users type: x86_64, armv7, arm64."""
    aliases: tuple[str, ...]
    gnu_triple: str
    """Debian cross-toolchain prefix, e.g. aarch64-linux-gnu."""
    conan_arch: str
    """Conan `arch` setting (x86_64, armv7hf, armv8)."""
    cmake_system_processor: str
    """CMAKE_SYSTEM_PROCESSOR; NNPACK only accepts its own list (armv7l, not armv7hf)."""
    meson_cpu_family: str
    meson_cpu: str
    compiler_flags: tuple[str, ...]
    """Flags for every C/C++ source of the target (ARMv7 needs NEON/VFPv4 + IEEE fp16 everywhere)."""
    nnpack_backend: str
    """The fast NNPACK backend for this target: x86-64 (AVX2/FMA3 kernels) or neon."""
    nnpack_backends: tuple[str, ...]
    """Backends NNPACK can build for this target; the first is the default."""
    backend_marker_symbols: dict[str, str] = field(default_factory=dict)
    """A symbol each backend's kernels define in libnnpack.so: proves which backend was built."""
    compiler_packages: tuple[str, str] = ("", "")
    """Debian packages providing <triple>-gcc and <triple>-g++ on the x86-64 build host."""
    qemu_binary: str | None = None
    """User-mode emulator for running target code on the x86-64 build host; None = native."""
    debian_arch: str = ""
    wheel_platform: str = ""
    """Platform part of the wheel tag before auditwheel repair (linux_<machine>)."""
    elf_machine: str = ""
    """What `readelf -h` prints as Machine for this target's objects."""
    elf_class: str = ""
    elf_attributes: tuple[str, ...] = ()
    """Lines `readelf -A` must print for the target's objects (ARMv7: NEON/VFPv4 build attributes)."""
    mxnet_use_sse: bool = False
    """MXNet's USE_SSE (-msse3): pinned per target instead of probed from the build host."""
    mxnet_flags: tuple[str, ...] = ()
    """Extra flags for MXNet's sources only (ARMv7: -marm, see below)."""
    mxnet_link_flags: tuple[str, ...] = ()
    """Extra link flags for libmxnet.so (ARMv7: libatomic where 64-bit atomics need it, MXNet #18536)."""

    @property
    def is_native(self) -> bool:
        return self.qemu_binary is None

    @property
    def sysroot(self) -> Path:
        """Debian's cross sysroot of the target's libc (QEMU's -L prefix)."""
        return Path("/usr") / self.gnu_triple

    @property
    def cc(self) -> str:
        return f"{self.gnu_triple}-gcc"

    @property
    def cxx(self) -> str:
        return f"{self.gnu_triple}-g++"

    @property
    def ar(self) -> str:
        return f"{self.gnu_triple}-ar"

    @property
    def emulator(self) -> tuple[str, ...]:
        """Command prefix that runs a target executable on the build host (empty when native)."""
        if self.qemu_binary is None:
            return ()
        return (self.qemu_binary, "-L", str(self.sysroot))

    @property
    def debian_packages(self) -> dict[str, str]:
        """Host tools this target needs, each with the Debian package that provides it."""
        tools = {self.cc: self.compiler_packages[0], self.cxx: self.compiler_packages[1]}
        if self.qemu_binary:
            tools[self.qemu_binary] = "qemu-user"
        return tools

    def which_missing(self) -> dict[str, str]:
        return {tool: pkg for tool, pkg in self.debian_packages.items() if shutil.which(tool) is None}


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="x86_64",
            aliases=("amd64", "x86-64", "x64"),
            gnu_triple="x86_64-linux-gnu",
            conan_arch="x86_64",
            cmake_system_processor="x86_64",
            meson_cpu_family="x86_64",
            meson_cpu="x86_64",
            compiler_flags=(),
            nnpack_backend="x86-64",
            nnpack_backends=("x86-64", "psimd", "scalar"),
            backend_marker_symbols={
                "x86-64": "nnp_sgemm_only_4x24__fma3",
                "psimd": "nnp_sgemm_only_4x8__psimd",
                "scalar": "nnp_sgemm_only_4x3__scalar",
            },
            compiler_packages=("gcc", "g++"),  # the build host's own compiler
            qemu_binary=None,
            debian_arch="amd64",
            wheel_platform="linux_x86_64",
            elf_machine="Advanced Micro Devices X86-64",
            elf_class="ELF64",
            mxnet_use_sse=True,
        ),
        Target(
            name="armv7",
            aliases=("armhf", "armv7hf", "armv7l", "arm"),
            gnu_triple="arm-linux-gnueabihf",
            conan_arch="armv7hf",
            cmake_system_processor="armv7l",
            meson_cpu_family="arm",
            meson_cpu="armv7l",
            compiler_flags=("-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard", "-mfp16-format=ieee"),
            nnpack_backend="neon",
            nnpack_backends=("neon", "psimd", "scalar"),
            backend_marker_symbols={
                "neon": "nnp_sgemm_only_6x8__aarch32_neon",
                "psimd": "nnp_sgemm_only_4x8__psimd",
                "scalar": "nnp_sgemm_only_4x3__scalar",
            },
            compiler_packages=("gcc-arm-linux-gnueabihf", "g++-arm-linux-gnueabihf"),
            qemu_binary="qemu-arm",
            debian_arch="armhf",
            wheel_platform="linux_armv7l",
            # Debian's armhf GCC emits Thumb-2 by default; in the huge functions of MXNet's
            # tensor/indexing_op.cc a Thumb-2 conditional branch (+-1 MB) overflows and gas stops
            # with "conditional branch out of range" (measured here). ARM mode branches reach +-32 MB.
            # -fno-strict-aliasing: mshadow's bf16_t converts through a uint16_t pointer into a float;
            # Debian 11's GCC 10 for ARMv7 moved the float's load above that store, every bf16_t read
            # as 0.0f and OperatorTune<bf16_t>::Initialize (it draws until non-zero) hung `import
            # mxnet` for good (seen in the disassembly of the Debian 11 armv7 build).
            mxnet_flags=("-marm", "-fno-strict-aliasing"),
            # libatomic only if some object calls __atomic_*: then libmxnet.so lists it as NEEDED and
            # auditwheel grafts it (the wheel stage refuses a library that calls it without linking it)
            mxnet_link_flags=("-Wl,--push-state,--as-needed", "-latomic", "-Wl,--pop-state"),
            elf_machine="ARM",
            elf_class="ELF32",
            elf_attributes=("Tag_FP_arch: VFPv4", "Tag_Advanced_SIMD_arch: NEONv1 with Fused-MAC"),
        ),
        Target(
            name="arm64",
            aliases=("aarch64", "armv8", "arm64-v8a"),
            gnu_triple="aarch64-linux-gnu",
            conan_arch="armv8",
            cmake_system_processor="aarch64",
            meson_cpu_family="aarch64",
            meson_cpu="aarch64",
            compiler_flags=(),
            nnpack_backend="neon",
            nnpack_backends=("neon", "psimd", "scalar"),
            backend_marker_symbols={
                "neon": "nnp_sgemm_only_6x8__neon",
                "psimd": "nnp_sgemm_only_4x8__psimd",
                "scalar": "nnp_sgemm_only_4x3__scalar",
            },
            compiler_packages=("gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu"),
            qemu_binary="qemu-aarch64",
            debian_arch="arm64",
            wheel_platform="linux_aarch64",
            elf_machine="AArch64",
            elf_class="ELF64",
        ),
    )
}


def parse_targets(text: str) -> list[Target]:
    """Parse `--arch`: a name, an alias, a comma list, or `all`."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigurationError("no target given: add --arch with one of x86_64, armv7, arm64, a comma list, or all")
    if names == ["all"]:
        return list(TARGETS.values())
    return [parse_target(name) for name in names]


def parse_target(name: str) -> Target:
    key = name.strip().lower()
    for target in TARGETS.values():
        if key == target.name or key in target.aliases:
            return target
    raise UnknownTargetError(name, valid_target_names())


def valid_target_names() -> list[str]:
    return [
        f"{t.name} (also: {', '.join(t.aliases)})" for t in TARGETS.values()
    ]
