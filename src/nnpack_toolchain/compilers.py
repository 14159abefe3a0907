"""The compilers of a base distribution (distros.py), for one target, in the toolchain home.

Debian's GCC of that release and its target libc and libstdc++ (cross packages `gcc-N-<triple>`,
`libc6-dev-<arch>-cross`, ...; for x86-64 the native `gcc-N` and `libc6-dev`) are downloaded for
the build host (amd64) from the release's archive with a private apt configuration and unpacked
with `dpkg-deb` into `<home>/compilers/<release>-<target>/`, never touching the host's dpkg. GCC is
relocatable: run from there with `--sysroot=<that directory>` it finds its own programs, headers
and libraries inside it, and so links against that release's glibc, never the host's. The
assembler and linker are the host's binutils (newer binutils read older GCC's output; the
release's own binutils would need their shared libraries on the host's library path).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import log
from .distros import Distribution
from .errors import ConfigurationError
from .runner import run
from .settings import Settings
from .sysroot import SysrootPackageError, suite_apt_config, unpack_debs
from .targets import Target

BINUTILS = ("as", "ld", "ld.bfd", "ar", "nm", "objcopy", "objdump", "ranlib", "readelf", "strip")
"""Programs GCC runs or build systems call by the target prefix: the host's binutils for the target."""


@dataclass(frozen=True)
class Compilers:
    target: Target
    distribution: Distribution
    root: Path
    """The unpacked packages: the compilers' sysroot."""

    @property
    def cc(self) -> Path:
        return self.root / "usr" / "bin" / self._name("gcc")

    @property
    def cxx(self) -> Path:
        return self.root / "usr" / "bin" / self._name("g++")

    @property
    def flags(self) -> tuple[str, ...]:
        """What every compile and link needs: this release's headers and libraries, not the host's."""
        return (f"--sysroot={self.root}",)

    @property
    def emulator(self) -> tuple[str, ...]:
        """QEMU with this release's libc of the target as its -L prefix (empty when native)."""
        target = self.target
        return (target.qemu_binary, "-L", str(self.libc_root)) if target.qemu_binary else ()

    @property
    def libc_root(self) -> Path:
        """Where this release's libc for the target lies: QEMU's -L prefix, or the native loader's root."""
        return self.root / "usr" / self.target.gnu_triple if self.target.qemu_binary else self.root

    def _name(self, tool: str) -> str:
        prefix = "" if self.target.is_native else f"{self.target.gnu_triple}-"
        return f"{prefix}{tool}-{self.distribution.gcc}"


def compiler_packages(target: Target, distribution: Distribution) -> list[str]:
    """Debian's package names for the release's GCC targeting `target`, as built for an amd64 host."""
    v = distribution.gcc
    if target.is_native:
        return [f"gcc-{v}", f"g++-{v}", f"cpp-{v}", f"gcc-{v}-base", f"libgcc-{v}-dev", f"libstdc++-{v}-dev",
                "libc6", "libc6-dev", "linux-libc-dev", "libcrypt1", "libcrypt-dev", "libgcc-s1", "libstdc++6",
                "libgomp1", "libatomic1", "libquadmath0", "libitm1"]
    arch, triple = target.debian_arch, target.gnu_triple
    cross = [f"libc6-{arch}-cross", f"libc6-dev-{arch}-cross", f"linux-libc-dev-{arch}-cross",
             f"libgcc-s1-{arch}-cross", f"libstdc++6-{arch}-cross", f"libgomp1-{arch}-cross",
             f"libatomic1-{arch}-cross", f"libgcc-{v}-dev-{arch}-cross", f"libstdc++-{v}-dev-{arch}-cross"]
    return [f"gcc-{v}-{triple}", f"g++-{v}-{triple}", f"cpp-{v}-{triple}", f"gcc-{v}-{triple}-base",
            f"gcc-{v}-cross-base", *cross]


def compilers_dir(settings: Settings, target: Target, distribution: Distribution) -> Path:
    packages = compiler_packages(target, distribution)
    key = hashlib.sha256(f"{distribution.suite}|{sorted(packages)}".encode()).hexdigest()[:12]
    return settings.home / "compilers" / f"{distribution.name}-{target.name}-{key}"


def host_apt_config(settings: Settings, distribution: Distribution) -> Path:
    """Private apt configuration for the release's amd64 packages (the build host's architecture)."""
    return suite_apt_config(settings.home / "apt-host" / distribution.suite, distribution.suite, "amd64")


def compilers_for(target: Target, settings: Settings) -> Compilers:
    """Where the base distribution's compilers for target are (or will be); nothing is downloaded."""
    distribution = settings.distribution
    return Compilers(target, distribution, compilers_dir(settings, target, distribution))


def ensure_compilers(target: Target, settings: Settings) -> Compilers:
    """The base distribution's compilers for target, downloaded and unpacked on first use."""
    compilers = compilers_for(target, settings)
    distribution, final = compilers.distribution, compilers.root
    if (final / ".complete").is_file():
        link_binutils(compilers)
        return compilers
    packages = compiler_packages(target, distribution)
    with log.step("compilers", target.name, f"GCC {distribution.gcc} of Debian {distribution.suite} "
                  f"(glibc {distribution.glibc})", settings.logs_dir) as step:
        config = host_apt_config(settings, distribution)
        env = {"APT_CONFIG": str(config), "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env, log_path=step.log_path, error=SysrootPackageError,
            what=f"apt-get update (Debian {distribution.suite} amd64)")
        downloads = config.parent / "debs" / final.name
        downloads.mkdir(parents=True, exist_ok=True)
        for stale in downloads.glob("*.deb"):
            stale.unlink()
        proc = subprocess.run(["apt-get", "download", "-q", *packages], cwd=downloads, env={**os.environ, **env},
                              capture_output=True, text=True)
        with open(step.log_path, "a") as stream:
            stream.write(f"\n$ apt-get download {' '.join(packages)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            missing = [p for p in packages if f"package {p}" in proc.stderr or f"'{p}'" in proc.stderr]
            raise SysrootPackageError(
                f"Debian {distribution.suite} has no package {', '.join(missing) or '(see the log)'} for the "
                f"{target.name} compilers of {distribution.name}; is {distribution.suite} reachable through "
                "this machine's Debian mirror?", log_path=step.log_path)
        unpack_debs(sorted(downloads.glob("*.deb")), final, target, step.log_path)
        link_binutils(compilers)
        step.note = f"{len(packages)} packages in {final}"
    return compilers


def link_binutils(compilers: Compilers) -> None:
    """GCC looks for the assembler and linker in <root>/usr/<triple>/bin first: the host's binutils
    for the target (Debian's binutils-<triple>; the native ones are found on PATH)."""
    target = compilers.target
    if target.is_native:
        return
    bindir = compilers.root / "usr" / target.gnu_triple / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in BINUTILS:
        host = Path("/usr/bin") / f"{target.gnu_triple}-{tool}"
        if not host.exists():
            raise ConfigurationError(f"{host} is missing: install binutils-{target.gnu_triple} (invoke setup)")
        link = bindir / tool
        if link.is_symlink() and os.readlink(link) == str(host):
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(host)
