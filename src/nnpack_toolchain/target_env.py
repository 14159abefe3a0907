"""Python environments on the target, for the smoke tests.

ARM targets: a sysroot made from Debian's packages for the target architecture (python3.11,
numpy, pip, OpenBLAS, libgomp; see sysroot.py: private apt, never the host's dpkg), cached by
package list and reused; its interpreter runs under QEMU user emulation with the sysroot as
QEMU's library prefix, so Python, numpy and the wheel's libraries all come from the target.
x86-64: a venv of the host with numpy from PyPI.

Wheels are installed with the target's own pip (`pip install --target <dir>`), so pip's tag
check decides what the target accepts, exactly as on a device.
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
from .distros import DISTRIBUTIONS
from .errors import ConfigurationError, ToolchainError
from .runner import run
from .settings import Settings
from .sysroot import build_sysroot
from .targets import Target

PYTHON_RELEASE = DISTRIBUTIONS["debian12"]
"""The release whose Python the smoke tests run (its python3.11 and numpy 1.24)."""
PYTHON_VERSION = PYTHON_RELEASE.python
RUNTIME_PACKAGES = [f"python{PYTHON_VERSION}", "python3-numpy", "python3-requests", "python3-pip",
                    "libopenblas0-pthread", "libgomp1", "libstdc++6"]
"""What `import mxnet` needs on an ARM target (mxnet.gluon imports requests), from Debian 12;
libstdc++6 is on the manylinux whitelist, so the wheel expects the system to provide it."""
HOST_REQUIREMENTS = ("numpy>=1.24,<2", "requests>=2.20,<3")
"""The x86-64 venv: MXNet 1.9.1 needs numpy < 2 (Debian 12 has 1.24) and requests."""


class WheelRejectedError(ToolchainError):
    """The target's pip refused the wheel (wrong platform tag)."""

    exit_code = 8


@dataclass(frozen=True)
class PythonEnv:
    target: Target
    root: Path
    """The sysroot (ARM) or the venv (x86-64)."""
    interpreter: Path

    @property
    def argv(self) -> list[str]:
        """Command prefix that starts the target's Python on this host."""
        if self.target.qemu_binary:
            return [self.target.qemu_binary, "-L", str(self.root), str(self.interpreter)]
        return [str(self.interpreter)]

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LD_", "QEMU_"))}
        env.update({"PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                    "PIP_NO_INPUT": "1", "PIP_ROOT_USER_ACTION": "ignore"})
        env.update(extra or {})
        return env

    def run(self, args: Sequence[str | os.PathLike[str]], *, extra_env: Mapping[str, str] | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run the target's Python with args; output captured (the caller decides what is a failure)."""
        return subprocess.run([*self.argv, *map(str, args)], env=self.environment(extra_env), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def install_wheel(self, wheel: Path, destination: Path, log_path: Path) -> None:
        """pip install --target destination (fresh): the target's pip checks the wheel's tags."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
        try:
            proc = self.run(["-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
                             "--target", work, wheel])
            with open(log_path, "a") as stream:
                stream.write(f"\n$ pip install {wheel.name} ({self.target.name})\n{proc.stdout}{proc.stderr}")
            if proc.returncode != 0:
                if "is not a supported wheel on this platform" in proc.stderr:
                    raise WheelRejectedError(
                        f"pip on {self.target.name} refuses {wheel.name}: not a supported wheel on this platform "
                        f"(its tag is for another machine); use the wheel built with --arch {self.target.name}",
                        log_path=log_path)
                raise ToolchainError(f"pip install {wheel.name} failed on {self.target.name}: "
                                     f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}", log_path=log_path)
            shutil.rmtree(destination, ignore_errors=True)
            os.replace(work, destination)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise


def python_env(target: Target, settings: Settings) -> PythonEnv:
    """The target's Python environment, made once and reused."""
    if target.qemu_binary:
        return sysroot_python(target, settings)
    return host_venv(target, settings)


def sysroot_python(target: Target, settings: Settings) -> PythonEnv:
    root = build_sysroot(target, settings, RUNTIME_PACKAGES, suite=PYTHON_RELEASE.suite)
    interpreter = root / "usr" / "bin" / f"python{PYTHON_VERSION}"
    if not interpreter.is_file():
        raise ConfigurationError(f"{interpreter} missing from the sysroot; delete {root} and rerun")
    env = PythonEnv(target, root, interpreter)
    stamp = root / ".nntc-bytecode"
    if not stamp.is_file():
        precompile(env, settings)
        stamp.write_text("stdlib and dist-packages byte-compiled\n")
    return env


def precompile(env: PythonEnv, settings: Settings) -> None:
    """Byte-compile the sysroot's Python once (Debian does it in postinst scripts, which never ran).

    The host's interpreter does it when it is the same Python version (same bytecode, much faster
    than under QEMU); otherwise the target's interpreter does it under QEMU.
    """
    paths = [env.root / "usr" / "lib" / f"python{PYTHON_VERSION}", env.root / "usr" / "lib" / "python3"]
    with log.step("bytecode", env.target.name, f"byte-compile the sysroot's Python {PYTHON_VERSION}",
                  settings.logs_dir) as step:
        same = f"{sys.version_info.major}.{sys.version_info.minor}" == PYTHON_VERSION
        argv = [sys.executable] if same else env.argv
        for path in paths:
            if path.is_dir():
                run([*argv, "-m", "compileall", "-q", "-j0" if same else "-j1", "-s", env.root, "-p", "/", path],
                    log_path=step.log_path, what=f"compileall {path}")
        step.note = "host interpreter" if same else "under QEMU"


def host_venv(target: Target, settings: Settings) -> PythonEnv:
    root = settings.home / "envs" / target.name
    interpreter = root / "bin" / "python"
    stamp = " ".join(HOST_REQUIREMENTS) + "\n"
    if (root / ".complete").is_file() and (root / ".complete").read_text() == stamp:
        return PythonEnv(target, root, interpreter)
    with log.step("python-env", target.name, f"venv with {' '.join(HOST_REQUIREMENTS)}", settings.logs_dir) as step:
        if settings.offline:
            raise ConfigurationError(f"no Python environment for {target.name} at {root}, and offline mode "
                                     "cannot install its packages: run once online")
        root.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root.parent))
        try:
            run([sys.executable, "-m", "venv", work], log_path=step.log_path, what="python -m venv")
            run([work / "bin" / "python", "-m", "pip", "install", "-q", *HOST_REQUIREMENTS],
                log_path=step.log_path, what=f"pip install {' '.join(HOST_REQUIREMENTS)}")
            (work / ".complete").write_text(stamp)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(work, root)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return PythonEnv(target, root, interpreter)
