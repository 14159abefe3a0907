"""The QEMU that runs the target Pythons (smoke suite, bench): Debian 13's qemu-user 10.0.

Debian 12's qemu-user 7.2 aborts when a fork()ed child of a process that has had threads starts
a thread of its own ("cpu_exec: assertion failed: (cpu == current_cpu)", or the plugin core's
vcpu_init_hook assertion): exactly what Python's multiprocessing (fork start method) does with
MXNet, whose engine and NNPACK have threads. A board runs such a child fine, so the smoke suite
must too. Debian 13's qemu-user is linked statically (static-pie), so its binaries run on the
Debian 12 host: its package is downloaded for amd64 from trixie with a private apt configuration
(never the host's dpkg) and unpacked once into `<home>/tools/qemu-<version>/`.

The host's QEMU 7.2 still runs NNPACK's tests and the instruction counts (its plugin API is the
one insn_count.py builds against; the static binaries cannot load plugins).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import log
from .distros import DISTRIBUTIONS
from .errors import ConfigurationError, SourceError
from .locks import exclusive
from .runner import run
from .settings import Settings
from .sysroot import suite_apt_config
from .targets import Target

RELEASE = DISTRIBUTIONS["debian13"]
PACKAGE = "qemu-user"


def tools_dir(settings: Settings) -> Path:
    return settings.home / "tools"


def installed(settings: Settings) -> Path | None:
    """The unpacked QEMU's bin directory, if there is one."""
    found = sorted(tools_dir(settings).glob(f"qemu-{RELEASE.suite}-*/.complete"))
    return found[-1].parent / "usr" / "bin" if found else None


def ensure_qemu(settings: Settings) -> Path:
    """Debian 13's qemu-user, downloaded and unpacked on first use; returns its bin directory."""
    bin_dir = installed(settings)
    if bin_dir is not None:
        return bin_dir
    if settings.offline:
        raise ConfigurationError(f"no Debian {RELEASE.suite} qemu-user in {tools_dir(settings)}, and offline mode "
                                 "cannot download it: run once online")
    tools_dir(settings).mkdir(parents=True, exist_ok=True)
    with exclusive(tools_dir(settings) / ".qemu.lock", "waiting for another download of qemu-user"), \
            log.step("qemu", "host", f"qemu-user of Debian {RELEASE.suite} (static: forks with threads work)",
                     settings.logs_dir) as step:
        bin_dir = installed(settings)
        if bin_dir is not None:
            return bin_dir
        config = suite_apt_config(settings.home / "apt-host" / RELEASE.suite, RELEASE.suite, "amd64")
        env = {"APT_CONFIG": str(config), "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env, log_path=step.log_path, error=SourceError,
            what=f"apt-get update ({RELEASE.suite} amd64)")
        shown = subprocess.run(["apt-cache", "show", "--no-all-versions", PACKAGE], env={**os.environ, **env},
                               capture_output=True, text=True, check=False).stdout
        versions = [line.split(": ", 1)[1] for line in shown.splitlines() if line.startswith("Version: ")]
        if not versions:
            raise SourceError(f"no {PACKAGE} in Debian {RELEASE.suite} for amd64 (apt-cache show found none)",
                              log_path=step.log_path)
        version = versions[0]
        work = Path(tempfile.mkdtemp(prefix=".qemu-", dir=tools_dir(settings)))
        try:
            run(["apt-get", "download", "-q", f"{PACKAGE}={version}"], cwd=work, env=env, log_path=step.log_path,
                error=SourceError, what=f"apt-get download {PACKAGE}={version}")
            [deb] = work.glob("*.deb")
            run(["dpkg-deb", "--extract", deb, work], log_path=step.log_path, error=SourceError,
                what=f"unpack {deb.name}")
            deb.unlink()
            (work / ".complete").write_text(f"{PACKAGE} {version} ({RELEASE.suite})\n")
            final = tools_dir(settings) / f"qemu-{RELEASE.suite}-{version.split(':')[-1]}"
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        step.note = f"{PACKAGE} {version}"
    return final / "usr" / "bin"


def qemu_for(target: Target, settings: Settings) -> str | None:
    """The QEMU binary that runs target's Pythons (None: the target is the host)."""
    if target.qemu_binary is None:
        return None
    return str(ensure_qemu(settings) / target.qemu_binary)
