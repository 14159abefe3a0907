"""Target sysroots from Debian's packages for the target architecture.

A private apt configuration (its own state, cache and an empty dpkg status file) downloads the
`.deb` files of the requested packages and their dependencies for the target's Debian
architecture; apt verifies them against the archive's signed indexes. Each is unpacked with
`dpkg -x` into a temporary directory that is renamed into place only when complete: the host's
dpkg is never touched and a failed or interrupted run leaves no half-made sysroot.

Fix-ups that maintainer scripts or the alternatives system would have done on a real target:
absolute symlinks are made relative (QEMU's -L prefix and the cross linker resolve them inside
the sysroot, not on the host), and libblas.so.3 / liblapack.so.3 links are added.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from . import log
from .errors import SourceError
from .runner import run
from .settings import Settings
from .sources import DEBIAN_KEYRING, private_apt_config, system_debian_mirror
from .targets import Target



@dataclass(frozen=True)
class DebPackage:
    """A Debian package unpacked into a sysroot or a compilers directory, as apt downloaded it."""

    name: str
    version: str
    arch: str

    def purl(self, distro: str) -> str:
        from packageurl import PackageURL

        return PackageURL(type="deb", namespace="debian", name=self.name, version=self.version,
                          qualifiers={"arch": self.arch, "distro": distro}).to_string()


def unpacked_packages(root: Path) -> list[DebPackage]:
    """The packages unpacked into `root` (a sysroot, a compilers directory), from its `.complete` list of
    .deb file names, name_version_arch.deb with apt's URL-quoting (an epoch's colon is %3a). These
    are whatever Debian served when the directory was made: the versions say what a build used
    (two machines' wheels differ when their downloads did). Empty when `root` is not complete."""
    marker = root / ".complete"
    if not marker.is_file():
        return []
    packages = []
    for line in marker.read_text().split():
        parts = line.removesuffix(".deb").split("_")
        if len(parts) != 3 or not line.endswith(".deb"):
            raise SourceError(f"{marker}: {line!r} is not a .deb file name (name_version_arch.deb); "
                              f"delete {root} and rerun to unpack it again")
        name, version, arch = (urllib.parse.unquote(part) for part in parts)
        packages.append(DebPackage(name, version, arch))
    return packages


class SysrootPackageError(SourceError):
    """A requested package does not exist for the target architecture, or a .deb was bad."""


def sysroot_dir(settings: Settings, target: Target, packages: list[str], suite: str) -> Path:
    key = hashlib.sha256(f"{suite}|{target.debian_arch}|{sorted(packages)}".encode()).hexdigest()[:12]
    return settings.home / "sysroots" / f"{target.name}-{suite}-{key}"


def apt_config(settings: Settings, target: Target, suite: str) -> Path:
    """Private apt configuration for the target's Debian architecture (created once, then reused)."""
    return suite_apt_config(settings.home / "apt-target" / suite / target.debian_arch, suite, target.debian_arch)


def suite_apt_config(root: Path, suite: str, arch: str) -> Path:
    """A private apt configuration under root for Debian `suite` (and its -updates) and `arch`."""
    config = root / "apt.conf"
    if config.is_file():
        return config
    mirror = system_debian_mirror()
    sources = "".join(f"deb [arch={arch} signed-by={DEBIAN_KEYRING}] {mirror} {name} main\n"
                      for name in (suite, f"{suite}-updates"))
    return private_apt_config(root, sources, {
        "APT::Architecture": arch,
        "APT::Architectures": arch,
        "APT::Install-Recommends": "false",
    })


def build_sysroot(target: Target, settings: Settings, packages: list[str], suite: str | None = None) -> Path:
    """Return a sysroot with `packages` (and dependencies) for target from Debian `suite` (default: the
    base distribution's); build it if missing."""
    suite = suite or settings.distribution.suite
    final = sysroot_dir(settings, target, packages, suite)
    if (final / ".complete").is_file():
        add_merged_usr_links(final)  # idempotent; sysroots made by older versions get the new links too
        add_blas_links(final, target)
        return final
    with log.step("sysroot", target.name, f"Debian {suite} {target.debian_arch}: {' '.join(packages)}",
                  settings.logs_dir) as step:
        config = apt_config(settings, target, suite)
        env = {"APT_CONFIG": str(config), "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env, log_path=step.log_path, error=SysrootPackageError,
            what=f"apt-get update ({target.debian_arch})")
        missing = [p for p in packages if not _available(p, env)]
        if missing:
            raise SysrootPackageError(
                f"no Debian {suite} package {', '.join(missing)} for architecture {target.debian_arch}; "
                "check the name (apt-cache search NAME)"
            )
        archives = config.parent / "cache" / "archives"
        run(["apt-get", "clean"], env=env, log_path=step.log_path, error=SysrootPackageError,
            what="apt-get clean")  # the archive dir then holds exactly this sysroot's packages
        run(["apt-get", "install", "--download-only", "-y", "-q", *packages], env=env, log_path=step.log_path,
            error=SysrootPackageError, what="apt-get install --download-only")
        debs = sorted(archives.glob(f"*_{target.debian_arch}.deb")) + sorted(archives.glob("*_all.deb"))
        unpack_debs(debs, final, target, step.log_path)
        step.note = f"{len(debs)} packages"
    return final


def unpack_debs(debs: list[Path], final: Path, target: Target, log_path: Path) -> None:
    """Unpack every .deb into a temporary directory, fix it up, then rename it to `final`.

    A corrupt .deb fails with its name and leaves nothing behind: neither `final` nor the
    temporary directory.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        for deb in debs:
            run(["dpkg-deb", "--extract", deb, work], log_path=log_path, error=SysrootPackageError,
                what=f"unpack {deb.name} (a corrupt download? delete {deb} and retry)")
        relativize_symlinks(work)
        add_merged_usr_links(work)
        add_blas_links(work, target)
        (work / ".complete").write_text("\n".join(d.name for d in debs) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _available(package: str, env: dict[str, str]) -> bool:
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", package], env={**os.environ, **env},
                          capture_output=True, text=True)
    return proc.returncode == 0 and "Package:" in proc.stdout


def relativize_symlinks(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_symlink():
            target = os.readlink(path)
            if target.startswith("/"):
                inside = root / target.lstrip("/")
                path.unlink()
                path.symlink_to(os.path.relpath(inside, path.parent))


def add_merged_usr_links(root: Path) -> None:
    """/lib -> usr/lib etc. where only /usr has them (Debian 13 ships its files under /usr and
    base-files, not unpacked here, makes the links): the ELF interpreter path /lib/ld-linux-*.so.*
    must resolve inside the sysroot."""
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        if (root / "usr" / name).is_dir() and not (root / name).exists() and not (root / name).is_symlink():
            (root / name).symlink_to(f"usr/{name}")


def add_blas_links(root: Path, target: Target) -> None:
    """What update-alternatives would do: libblas.so.3, liblapack.so.3, libopenblas.so.0 -> OpenBLAS."""
    libdir = root / "usr" / "lib" / target.gnu_triple
    for soname in ("libblas.so.3", "liblapack.so.3", "libopenblas.so.0"):
        for candidate in sorted(libdir.glob(f"openblas-pthread/{soname}")):
            link = libdir / soname
            if not link.exists() and not link.is_symlink():
                link.symlink_to(os.path.relpath(candidate, libdir))
