"""Python environments on the target, for the smoke tests and the benchmark: one per Debian release.

Each is a sysroot made from that release's packages for the target architecture (python3,
numpy, pip, OpenBLAS, libgomp; see sysroot.py: private apt, never the host's dpkg), cached by
package list and reused. ARM: its interpreter runs under QEMU user emulation (Debian 13's static
qemu-user, emulator.py) with the sysroot as QEMU's library prefix. x86-64: the sysroot's own dynamic loader starts its interpreter with the
sysroot's library directories, so on every target Python, numpy, glibc and the wheel's libraries
all come from the release, as on a board running it.

Wheels are installed with the release's own pip (`pip install --target <dir>`), so pip's tag
check decides what the release accepts, exactly as on a device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import log
from .distros import DISTRIBUTIONS, Distribution
from .emulator import qemu_for
from .errors import ConfigurationError, ToolchainError
from .procgroup import run_group
from .runner import run
from .settings import Settings
from .sysroot import build_sysroot
from .targets import TARGETS, Target

PYTHON_RELEASE = DISTRIBUTIONS["debian12"]
"""The release whose Python the benchmark runs (its python3.11 and numpy 1.24)."""


def runtime_packages(release: Distribution) -> list[str]:
    """What `import mxnet` needs on a target of this release (mxnet.gluon imports requests);
    libstdc++6 and libatomic1 are on the manylinux whitelist, so wheels expect the system to provide them."""
    return [f"python{release.python}", "python3-numpy", "python3-requests", "python3-pip",
            "libopenblas0-pthread", "libgomp1", "libstdc++6", "libatomic1"]


class WheelRejectedError(ToolchainError):
    """The target's pip refused the wheel (wrong platform tag)."""

    exit_code = 8


@dataclass(frozen=True)
class PythonEnv:
    target: Target
    release: Distribution | None
    """The Debian release of the sysroot; None for a venv of the host (the PyPI column of the bench)."""
    root: Path
    """The release's sysroot for the target (or the venv)."""
    interpreter: Path
    qemu: str | None = None
    """The QEMU binary that runs it (ARM targets): emulator.py's, or the host's for instruction counts."""

    @property
    def argv(self) -> list[str]:
        """Command prefix that starts the target's Python on this host."""
        if self.qemu:
            return [self.qemu, "-L", str(self.root), str(self.interpreter)]
        if self.release is None:
            return [str(self.interpreter)]
        libdirs = [self.root / d / self.target.gnu_triple for d in ("lib", "usr/lib")]
        return [str(dynamic_loader(self.root)), "--library-path", ":".join(map(str, libdirs)), str(self.interpreter)]

    @property
    def label(self) -> str:
        """debian11 (python3.9, numpy 1.19)"""
        if self.release is None:
            return f"venv {self.root.name}"
        return f"{self.release.name} (python{self.release.python}, numpy {self.release.numpy})"

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LD_", "QEMU_"))}
        env.update({"PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                    "PIP_NO_INPUT": "1", "PIP_ROOT_USER_ACTION": "ignore"})
        env.update(extra or {})
        return env

    def run(self, args: Sequence[str | os.PathLike[str]], *, extra_env: Mapping[str, str] | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run the target's Python with args; output captured (the caller decides what is a failure)."""
        return run_group([*self.argv, *map(str, args)], env=self.environment(extra_env), capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def install_wheel(self, wheel: Path, destination: Path, log_path: Path) -> None:
        """pip install --target destination (fresh): the target's pip checks the wheel's tags."""
        self._pip_install(["--no-index", wheel], wheel.name, destination, log_path)

    def install_wheel_once(self, wheel: Path, destination: Path, log_path: Path) -> Path:
        """install_wheel unless `destination` already holds this very wheel (a stamp names it)."""
        stamp = destination / ".nntc-wheel"
        if not (stamp.is_file() and stamp.read_text() == wheel.name):
            self.install_wheel(wheel, destination, log_path)
            stamp.write_text(wheel.name)
        return destination

    def install_from_index(self, requirement: str, index_url: str, destination: Path, log_path: Path) -> None:
        """pip install --index-url index_url requirement, as a board does from the team's index."""
        self._pip_install(["--index-url", index_url, requirement], f"{requirement} from {index_url}",
                          destination, log_path)

    def _pip_install(self, args: list[str | Path], what: str, destination: Path, log_path: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
        try:
            proc = self.run(["-m", "pip", "install", "--no-deps", "--no-compile", "--target", work, *args])
            with open(log_path, "a") as stream:
                stream.write(f"\n$ pip install {what} ({self.target.name}, {self.label})\n"
                             f"{proc.stdout}{proc.stderr}")
            if proc.returncode != 0:
                if "is not a supported wheel on this platform" in proc.stderr:
                    raise WheelRejectedError(
                        f"pip on {self.target.name} refuses {what}: not a supported wheel on this platform "
                        f"(its tag is for another machine); use the wheel built with --arch {self.target.name}",
                        log_path=log_path)
                raise ToolchainError(f"pip install {what} failed on {self.target.name} ({self.label}): "
                                     f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}", log_path=log_path)
            shutil.rmtree(destination, ignore_errors=True)
            os.replace(work, destination)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise


def python_env(target: Target, settings: Settings, release: Distribution = PYTHON_RELEASE) -> PythonEnv:
    """The target's Python of Debian `release`, made once and reused."""
    root = build_sysroot(target, settings, runtime_packages(release), suite=release.suite)
    interpreter = root / "usr" / "bin" / f"python{release.python}"
    if not interpreter.is_file():
        raise ConfigurationError(f"{interpreter} missing from the sysroot; delete {root} and rerun")
    env = PythonEnv(target, release, root, interpreter, qemu_for(target, settings))
    stamp = root / ".nntc-bytecode"
    if not stamp.is_file():
        precompile(env, settings)
        stamp.write_text("stdlib and dist-packages byte-compiled\n")
    return env


def dynamic_loader(root: Path) -> Path:
    """The sysroot's ld.so (x86-64): /lib64 on Debian 11 and 12, /usr/lib64 once /usr is merged."""
    for candidate in ("lib64/ld-linux-x86-64.so.2", "usr/lib64/ld-linux-x86-64.so.2"):  # /lib64 is usr/lib64 on 13
        if (root / candidate).exists():
            return root / candidate
    raise ConfigurationError(f"no ld-linux-x86-64.so.2 in {root}; delete it and rerun")


def native_python(env: PythonEnv, settings: Settings) -> tuple[list[str], str, str]:
    """A native interpreter of env's Python version for compileall: (argv, what it is, -j option).

    Bytecode does not depend on the machine: the host's interpreter if it is that version, else the
    release's x86-64 sysroot interpreter (through its loader, at native speed); QEMU takes minutes.
    """
    version = env.release.python
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return [sys.executable], "host interpreter", "-j0"
    jobs = "-j1"  # workers would start sys.executable, which the host's loader cannot run
    if env.target.is_native:
        return env.argv, "its own interpreter", jobs
    return python_env(TARGETS["x86_64"], settings, env.release).argv, "x86-64 interpreter", jobs


def precompile(env: PythonEnv, settings: Settings) -> None:
    """Byte-compile the sysroot's Python once (Debian does it in postinst scripts, which never ran)."""
    version = env.release.python
    paths = [env.root / "usr" / "lib" / f"python{version}", env.root / "usr" / "lib" / "python3"]
    with log.step("bytecode", env.target.name, f"byte-compile {env.label}", settings.logs_dir) as step:
        argv, step.note, jobs = native_python(env, settings)
        for path in paths:
            if path.is_dir():
                run([*argv, "-m", "compileall", "-q", jobs, "-s", env.root, "-p", "/", path],
                    log_path=step.log_path, what=f"compileall {path}")


def host_venv(settings: Settings, name: str, packages: Sequence[str], log_path: Path, *, offline_hint: str) -> PythonEnv:
    """A venv of the host's Python at <home>/envs/<name> with `packages` from PyPI, made once (remade
    when the package list changes); offline and missing: a ConfigurationError with `offline_hint`."""
    root = settings.home / "envs" / name
    stamp = " ".join(packages) + "\n"
    if not ((root / ".complete").is_file() and (root / ".complete").read_text() == stamp):
        if settings.offline:
            raise ConfigurationError(offline_hint)
        shutil.rmtree(root, ignore_errors=True)
        run([sys.executable, "-m", "venv", root], log_path=log_path, what=f"venv {name}")
        run([root / "bin" / "python", "-m", "pip", "install", "-q", *packages], log_path=log_path,
            what=f"pip install {' '.join(packages)}")
        (root / ".complete").write_text(stamp)
    return PythonEnv(TARGETS["x86_64"], None, root, root / "bin" / "python")
