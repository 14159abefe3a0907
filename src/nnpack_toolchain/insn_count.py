"""Guest instruction counts under QEMU user mode, with QEMU's own instruction-count plugin.

Debian's qemu-user is built with TCG plugin support (`-plugin`) but ships no plugin and no
`qemu-plugin.h`. The plugin (`tests/plugin/insn.c`) is therefore compiled once from Debian's
source package of exactly the installed qemu-user's source version, against that source's
`include/qemu/qemu-plugin.h` (the plugin API version must match the emulator's), and cached as
`<home>/tools/qemu-plugins/<qemu-user version>/libinsn.so`. The source comes through a private
apt configuration (never the host's apt state) from the host's Debian archive: the release's
suite, its -updates and, when the host has it, its -security archive.

How QEMU 7.2's insn.c counts: by default a callback per executed instruction adds to a counter
of the vCPU (`cpu_index % 8`); in user mode every guest thread is a vCPU, and the plugin prints
each vCPU's count and their total ("total insns: N") at exit. So the total covers every thread
and is exact while no two live threads share a counter (a new thread's index is one past the
highest live one: a pool of at most 8 threads, main included, made once is fine);
two runs of one multi-threaded command differ by a few instructions of futex waits. Counts
depend on the command's paths and environment (the loader and libc read them): compare counts
of runs with the same ones.
`inline=on` (about twice as fast) adds to one global counter without atomics: threads running at
the same time lose counts, so it is only exact for single-threaded guests.
Counts go to QEMU's log (`-d plugin -D <file>`): the guest's own stdout and stderr stay apart.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import log
from .doctor import missing_libraries
from .errors import BuildError, ConfigurationError, MissingToolError, SourceError, ToolchainError
from .locks import exclusive
from .procgroup import run_group
from .runner import run
from .settings import Settings
from .sources import DEBIAN_KEYRING, private_apt_config, system_debian_mirror

QEMU_USER = "qemu-user"
PLUGIN = "libinsn.so"
PLUGIN_SOURCE = "tests/plugin/insn.c"
PLUGIN_HEADER = "include/qemu/qemu-plugin.h"
BUILD_TOOLS = {"apt-get": "apt", "dpkg-query": "dpkg", "dpkg-source": "dpkg-dev", "gcc": "gcc",
               "pkg-config": "pkg-config"}
"""Host commands the plugin's build runs -> their Debian packages (doctor checks gcc and glib too)."""
TOTAL = re.compile(r"^(?:total )?insns: (\d+)$", re.M)
PER_VCPU = re.compile(r"^cpu (\d+) insns: (\d+)$", re.M)
QEMU_OPTIONS_WITH_VALUE = {"-L", "-cpu", "-E", "-U", "-s", "-B", "-R", "-d", "-D", "-p", "-plugin", "-0", "-r", "-g",
                           "-seed", "-trace"}


class InsnCountError(ToolchainError):
    """The counted program failed, or QEMU ran it without giving an instruction count."""

    exit_code = 10


def _dpkg_field(fields: str) -> str:
    try:
        proc = subprocess.run(["dpkg-query", "-W", f"-f={fields}", QEMU_USER], capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError as exc:
        raise MissingToolError({"dpkg-query": "dpkg"}) from exc
    if proc.returncode != 0 or not proc.stdout.strip():
        raise MissingToolError({"qemu-aarch64": QEMU_USER})
    return proc.stdout.strip()


def installed_qemu_version() -> str:
    """The Debian version of the installed qemu-user, e.g. 1:7.2+dfsg-7+deb12u18+b3."""
    return _dpkg_field("${Version}")


def installed_qemu_source() -> tuple[str, str]:
    """Debian's source package and version qemu-user was built from (a binNMU's +bN dropped):
    ('qemu', '1:7.2+dfsg-7+deb12u18')."""
    package, _, version = _dpkg_field("${source:Package} ${source:Version}").partition(" ")
    return package, version


def plugin_path(settings: Settings, qemu_version: str | None = None) -> Path:
    """Where the insn plugin for this qemu-user version is (or will be) cached."""
    version = qemu_version or installed_qemu_version()
    return settings.home / "tools" / "qemu-plugins" / version / PLUGIN


def host_suite() -> str:
    """This host's Debian code name (VERSION_CODENAME of /etc/os-release), e.g. bookworm."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    if not match:
        raise ConfigurationError("no VERSION_CODENAME in /etc/os-release: counting instructions needs a Debian host "
                                 "(its qemu-user's source package comes from Debian's archive)")
    return match.group(1)


def security_mirror() -> str | None:
    """The host's Debian security archive (…/debian-security), if its apt uses one."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        text = path.read_text(errors="replace") if path.is_file() else ""
        for match in re.finditer(r"^(?:URIs:|deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?)\s*(\S+)", text, re.M):
            if match.group(1).rstrip("/").endswith("/debian-security"):
                return match.group(1)
    return None


def qemu_source_lines(suite: str) -> str:
    """deb-src lines for suite, suite-updates and (where the host has it) suite-security."""
    lines = [(system_debian_mirror(), suite), (system_debian_mirror(), f"{suite}-updates")]
    if (security := security_mirror()) is not None:
        lines.append((security, f"{suite}-security"))
    return "".join(f"deb-src [signed-by={DEBIAN_KEYRING}] {uri} {name} main\n" for uri, name in lines)


_PLUGIN_BUILD = threading.Lock()
"""One build of the plugin at a time within this process too (the file lock is per process)."""
_LOG_APPEND = threading.Lock()
"""Counted runs in several threads (count_runner's jobs) append their output to one log whole."""


def ensure_insn_plugin(settings: Settings) -> Path:
    """QEMU's insn plugin for the installed qemu-user, built from its Debian source on first use."""
    final = plugin_path(settings)
    if final.is_file():
        return final
    root = final.parent.parent
    with _PLUGIN_BUILD, exclusive(root / ".lock", "another process is building the QEMU insn plugin; waiting"):
        if final.is_file():
            return final
        missing = {tool: pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None}
        if "pkg-config" not in missing:
            missing.update(missing_libraries())
        if missing:
            raise MissingToolError(missing)
        package, version = installed_qemu_source()
        with log.step("qemu-plugin", "host", f"{PLUGIN} from Debian's {package} {version} source",
                      settings.logs_dir) as step:
            work = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
            try:
                _build(settings, package, version, work, step.log_path)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(work / PLUGIN, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            step.note = str(final)
    return final


def _build(settings: Settings, package: str, version: str, work: Path, log_path: Path) -> None:
    """Download the source package into work, unpack it (Debian's patches applied), compile the plugin."""
    suite = host_suite()
    config = private_apt_config(settings.home / "apt-qemu-source" / suite, qemu_source_lines(suite))
    env = {"APT_CONFIG": str(config), "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env, log_path=log_path, error=SourceError,
        what=f"apt-get update (Debian {suite} sources)")
    downloads = work / "download"
    downloads.mkdir()
    proc = subprocess.run(["apt-get", "source", "--download-only", "-q", f"{package}={version}"], cwd=downloads,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    with open(log_path, "a") as stream:
        stream.write(f"\n$ apt-get source --download-only {package}={version}\n{proc.stdout}{proc.stderr}"
                     f"# exit code {proc.returncode}\n")
    dscs = sorted(downloads.glob(f"{package}_*.dsc"))
    if proc.returncode != 0 or len(dscs) != 1:
        reason = ([line for line in proc.stderr.splitlines() if line.startswith("E:")] or ["no .dsc downloaded"])[-1]
        raise SourceError(f"Debian {suite} (with -updates, -security) has no source package {package} {version} "
                          f"({reason}); upgrade qemu-user to a version the archive has "
                          "(apt-get install --only-upgrade qemu-user) and retry", log_path=log_path)
    tree = work / "tree"
    run(["dpkg-source", "-x", dscs[0], tree], log_path=log_path, error=SourceError,
        what=f"dpkg-source -x {dscs[0].name}")
    glib = subprocess.run(["pkg-config", "--cflags", "--libs", "glib-2.0"], capture_output=True, text=True,
                          check=True).stdout.split()
    run(["gcc", "-shared", "-fPIC", "-O2", f"-I{(tree / PLUGIN_HEADER).parent}", tree / PLUGIN_SOURCE, "-o", work / PLUGIN,
         *glib], log_path=log_path, error=BuildError, what=f"gcc {PLUGIN_SOURCE}")


@dataclass(frozen=True)
class Counted:
    """One counted run: the guest's instruction total, per vCPU (thread slot), and its output."""

    total: int
    per_vcpu: dict[int, int] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    totals: tuple[int, ...] = ()
    """Every total the plugin printed, in order: each forked child's (that exited without exec) when it
    exited, this one's last. A forked child's total includes everything before its fork."""
    plugin_output: str = ""
    """The plugin's whole log: every process's per-vCPU lines (not inline) and totals."""


def parse_counts(text: str) -> tuple[int, dict[int, int]] | None:
    """The last count in the plugin's output (a forked child that exits without exec prints its own
    count first, the parent's comes last): the total and the per-vCPU lines printed before it."""
    totals = list(TOTAL.finditer(text))
    if not totals:
        return None
    last = totals[-1]
    start = totals[-2].end() if len(totals) > 1 else 0
    per_vcpu = {int(m.group(1)): int(m.group(2)) for m in PER_VCPU.finditer(text, start, last.start())}
    return int(last.group(1)), per_vcpu


def all_totals(text: str) -> tuple[int, ...]:
    """Every total in the plugin's output, in the order the processes exited."""
    return tuple(int(m.group(1)) for m in TOTAL.finditer(text))


def counted_argv(command: Sequence[str | os.PathLike[str]], plugin: Path, log_file: Path, *,
                 inline: bool = False) -> list[str]:
    """command (a QEMU user-mode command: `qemu-<arch> [options] program args`) with the plugin and
    its log inserted after the emulator."""
    args = [str(a) for a in command]
    if not args or not Path(args[0]).name.startswith("qemu-"):
        raise ConfigurationError(f"counting instructions needs a QEMU user-mode command (qemu-arm, qemu-aarch64, "
                                 f"qemu-x86_64 ...) first, not {args[:1] or 'nothing'}: pass e.g. the target's "
                                 "Python's argv or Compilers.emulator followed by the program")
    option = str(plugin).replace(",", ",,") + (",inline=on" if inline else "")  # QemuOpts escapes ',' as ',,'
    return [args[0], "-plugin", option, "-d", "plugin", "-D", str(log_file), *args[1:]]


def run_counted(command: Sequence[str | os.PathLike[str]], settings: Settings, *,
                env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 3600,
                inline: bool = False, log_path: Path | None = None) -> Counted:
    """Run command under QEMU with the insn plugin; its count and output. InsnCountError when the
    guest exits non-zero (or by a signal) or QEMU printed no count. log_path: append everything there."""
    guest = _guest(command)
    if guest is not None and not (Path(cwd or ".") / guest).is_file():
        # QEMU 7.2 exits 1 without a word then (its printf is lost to _exit).
        raise InsnCountError(f"no program {guest} to count (QEMU's {Path(str(command[0])).name} would exit "
                             "silently); check the path", log_path=log_path)
    plugin = ensure_insn_plugin(settings)
    with tempfile.TemporaryDirectory(prefix="nntc-insn-") as tmp:
        qemu_log = Path(tmp) / "qemu.log"
        argv = counted_argv(command, plugin, qemu_log, inline=inline)
        try:
            proc = run_group(argv, env=dict(env) if env is not None else None, cwd=cwd, capture_output=True,
                             text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise MissingToolError({argv[0]: QEMU_USER}) from exc
        except subprocess.TimeoutExpired as exc:
            raise InsnCountError(f"{_name(command)} ran longer than {timeout:g} s under QEMU and was stopped; "
                                 "give a larger timeout or a smaller workload", log_path=log_path) from exc
        plugin_out = qemu_log.read_text(errors="replace") if qemu_log.is_file() else ""
    if log_path is not None:
        with _LOG_APPEND, open(log_path, "a") as stream:
            stream.write(f"\n$ {' '.join(argv)}\n# exit code {proc.returncode}\n# stdout:\n{proc.stdout}"
                         f"# stderr:\n{proc.stderr}# QEMU log:\n{plugin_out}")
    counts = parse_counts(plugin_out)
    last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["nothing on stderr"])[-1]
    if counts is None:
        raise InsnCountError(f"QEMU gave no instruction count for {_name(command)} (exit code {proc.returncode}, "
                             f"{last}): check that it is an executable for {Path(str(command[0])).name}",
                             log_path=log_path)
    if proc.returncode != 0:
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with code {proc.returncode}"
        raise InsnCountError(f"{_name(command)} {how} under QEMU (its count of {counts[0]} instructions is not "
                             f"used): {last}; fix the program or its arguments", log_path=log_path)
    return Counted(counts[0], counts[1], proc.stdout, proc.stderr, all_totals(plugin_out), plugin_out)


def count_instructions(command: Sequence[str | os.PathLike[str]], settings: Settings, *,
                       env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 3600,
                       inline: bool = False) -> int:
    """The number of guest instructions command executes under QEMU, over all its threads.

    command starts with the emulator: `[*compilers.emulator, program, *args]`, or a target Python's
    `[*python_env.argv, script]`. inline=True is faster but exact only for single-threaded guests.
    """
    return run_counted(command, settings, env=env, cwd=cwd, timeout=timeout, inline=inline).total


def _guest(command: Sequence[str | os.PathLike[str]]) -> str | None:
    """The guest program of a QEMU command: the first argument that is not an option or its value."""
    args = [str(a) for a in command[1:]]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in QEMU_OPTIONS_WITH_VALUE else 1
    return args[i] if i < len(args) else None


def _name(command: Sequence[str | os.PathLike[str]]) -> str:
    guest = _guest(command)
    return Path(guest).name if guest else str(command[0])
