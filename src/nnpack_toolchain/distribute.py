"""Compiling across machines with icecream (Debian's `icecc`, 1.4 in bookworm).

Every machine of the cluster runs `iceccd`, one runs `icecc-scheduler`. A compile started as
`icecc <g++> ...` asks the build machine's own iceccd for a host, preprocesses locally (with this
project's --sysroot headers) and ships the preprocessed source plus, once per host, an
*environment*: a tarball with the compiler proper (gcc, g++, cc1, cc1plus, as, objcopy and the
libraries they load), made by `icecc-create-env`. The remote daemon unpacks it and compiles in a
chroot of it, so the hosts need neither the sysroots nor Debian 11's GCC; they need root (or
CAP_SYS_CHROOT) for that chroot.

Environments are named by the platform they *run on*, not the target they compile for: every
compiler of this project is a Debian amd64 package, so each target's environment is an x86_64
one (`ICECC_VERSION=x86_64:<home>/icecc/<compilers dir>.tar.gz`) and only x86_64 daemons take
its jobs. One make builds one target, so one environment per ICECC_VERSION is enough (icecream's
`=<prefix>` form would split on the last dash of `arm-linux-gnueabihf-g++-10`).

Whether the scheduler is up and how many jobs the cluster offers come from the scheduler itself:
it answers plain-text commands on its port + 1 (8766 by default; a firewall must let it through
as well as 8765 and the daemons' 10245): `listcs` lists each daemon with `[platform]` and
`jobs=running/max`.
`ICECC_SCHEDULER` is read by iceccd (and icemon) when looking for a scheduler, not by the icecc
client: the build machine's iceccd must be started with `-s HOST:PORT` of the same scheduler.

Remote objects are byte for byte the local ones (tests/test_distribute.py), except with -g:
DW_AT_producer then records the options icecream adds remotely (-fdirectives-only and two
--param ggc-*); -gno-record-gcc-switches keeps them out.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import log
from .compilers import ensure_compilers
from .doctor import OPTIONAL_TOOLS
from .errors import BuildError, ConfigurationError, MissingToolError
from .runner import run
from .settings import Settings
from .targets import Target

DEFAULT_SCHEDULER_PORT = 8765
PLATFORM = "x86_64"
"""The platform the compilers run on (Debian amd64 packages): the environments' platform."""
LOCAL_DAEMON_SOCKETS = ("/var/run/icecc/iceccd.socket", "/var/run/iceccd.socket")
LOCAL_DAEMON_TCP = ("127.0.0.1", 10245)
_LISTCS = re.compile(r"^\s*(?P<name>\S+) \((?P<address>[^)]*)\) \[(?P<platform>[^\]]*)\] "
                     r"speed=\S+ jobs=(?P<running>\d+)/(?P<max>\d+) load=(?P<load>\d+)")


class IcecreamError(BuildError):
    """An icecream environment could not be made."""


@dataclass(frozen=True)
class ClusterHost:
    """One daemon as the scheduler lists it."""

    name: str
    address: str
    platform: str
    running: int
    max_jobs: int
    load: int
    """0 (idle) to 1000: a daemon at 1000 (its machine busy) is given no job."""


def parse_scheduler(spec: str) -> tuple[str, int]:
    """`HOST` or `HOST:PORT` (default port 8765) as (host, port)."""
    host, sep, port = spec.strip().rpartition(":")
    if not sep:
        host, port = spec.strip(), str(DEFAULT_SCHEDULER_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise ConfigurationError(f"--distribute expects the icecream scheduler as HOST or HOST:PORT "
                                 f"(default port {DEFAULT_SCHEDULER_PORT}), not {spec!r}")
    return host, int(port)


def scheduler_reachable(scheduler: str, timeout: float = 3.0) -> bool:
    """Whether an icecream scheduler answers on its text port (its port + 1) with its greeting.

    Not a bare connection to its main port: icecc-scheduler 1.4 stalls for seconds (here up to
    half a minute, daemons included) after a connection that closes without icecream's handshake.
    """
    return _text_session(scheduler, None, timeout) is not None


def cluster_hosts(scheduler: str, timeout: float = 5.0) -> list[ClusterHost] | None:
    """The daemons the scheduler knows, from `listcs` on its text port; None when it cannot be asked."""
    lines = _text_session(scheduler, "listcs", timeout)
    if lines is None:
        return None
    return [ClusterHost(m["name"], m["address"], m["platform"], int(m["running"]), int(m["max"]), int(m["load"]))
            for m in map(_LISTCS.match, lines) if m]


def _text_session(scheduler: str, command: str | None, timeout: float) -> list[str] | None:
    """The lines the scheduler's text interface answers to `command` ([] without one); None when
    nothing there greets as icecream ("200-ICECC <version>: ...")."""
    host, port = parse_scheduler(scheduler)
    try:
        with socket.create_connection((host, port + 1), timeout=timeout) as conn:
            conn.settimeout(timeout)
            stream = conn.makefile("rwb")
            greeting = _read_until(stream, "200 ")  # ends with "200 Use 'help' for help and 'quit' to quit."
            if not any(line.startswith("200-ICECC") for line in greeting):
                return None
            lines: list[str] = []
            if command:
                stream.write(f"{command}\n".encode())
                stream.flush()
                lines = _read_until(stream, "200 done")
            stream.write(b"quit\n")
            stream.flush()
            return lines
    except (OSError, EOFError):
        return None


def _read_until(stream: IO[bytes], prefix: str) -> list[str]:
    """Lines up to the one starting with prefix (not included)."""
    lines: list[str] = []
    while True:
        raw = stream.readline()
        if not raw:
            raise EOFError("the scheduler closed the connection")
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith(prefix):
            return lines
        lines.append(line)


def cluster_jobs(scheduler: str, timeout: float = 5.0) -> int | None:
    """The compile jobs the cluster offers for this project's (x86_64) environments: the sum of
    the x86_64 daemons' maximum jobs (the build machine's own daemon included); None when the
    scheduler cannot be asked or lists none."""
    hosts = cluster_hosts(scheduler, timeout)
    total = sum(h.max_jobs for h in hosts or [] if h.platform == PLATFORM)
    return total or None


def local_daemon() -> str | None:
    """Where the icecc client finds this machine's iceccd (icecream 1.4's client/main.cpp order:
    $ICECC_TEST_SOCKET alone if set, else the sockets, ~/.iceccd.socket, then TCP port 10245)."""
    test = os.environ.get("ICECC_TEST_SOCKET")
    home = os.environ.get("HOME")
    paths = [test] if test else [*LOCAL_DAEMON_SOCKETS, *([f"{home}/.iceccd.socket"] if home else [])]
    for path in paths:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(2)
                conn.connect(path)
                return path
        except OSError:
            continue
    if test:
        return None
    try:
        with socket.create_connection(LOCAL_DAEMON_TCP, timeout=2):
            return "%s:%d" % LOCAL_DAEMON_TCP
    except OSError:
        return None


def require_icecc() -> None:
    """Raise MissingToolError (naming Debian's icecc package) unless icecream's client tools are here."""
    missing = {tool: pkg for tool, pkg in OPTIONAL_TOOLS.items() if pkg == "icecc" and shutil.which(tool) is None}
    if missing:
        raise MissingToolError(missing)


def toolchain_env(target: Target, settings: Settings) -> Path:
    """The icecc environment of the target's compilers, `<home>/icecc/<compilers dir>.tar.gz`,
    made once with icecc-create-env (in a temporary directory, then renamed into place)."""
    compilers = ensure_compilers(target, settings)
    final = settings.home / "icecc" / f"{compilers.root.name}.tar.gz"
    if final.is_file():
        return final
    require_icecc()
    final.parent.mkdir(parents=True, exist_ok=True)
    with log.step("icecc-env", target.name, f"icecream environment of {compilers.cxx.name}",
                  settings.logs_dir) as step:
        work = Path(tempfile.mkdtemp(prefix=".make-", dir=final.parent))
        try:
            run(["icecc-create-env", "--gcc", compilers.cc, compilers.cxx], cwd=work, log_path=step.log_path,
                error=IcecreamError, what=f"icecc-create-env for the {target.name} compilers")
            made = sorted(work.glob("*.tar.gz"))
            if len(made) != 1:
                raise IcecreamError(f"icecc-create-env left {len(made)} tarballs in {work}, not one; see the log")
            made[0].replace(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        step.note = f"{final.stat().st_size / 1e6:.1f} MB in {final}"
    return final


def make_environment(target: Target, settings: Settings, scheduler: str, *,
                     jobs: int | None = None) -> tuple[dict[str, str], int]:
    """The environment and `make -j` count that send the target's compiles to the icecream
    cluster of `scheduler` (HOST[:PORT]): ICECC_VERSION names the target's environment and
    CCACHE_PREFIX=icecc makes ccache hand its misses to icecc (without ccache, prefix the compiler
    with `icecc`: see `distributed_compiler`). Jobs: `jobs` if given, else what the scheduler lists.

    When the scheduler or this machine's iceccd does not answer: no variables and settings.jobs,
    said in one line.
    """
    host, port = parse_scheduler(scheduler)
    where = f"{host}:{port}"
    if not scheduler_reachable(where):
        log.warn(f"icecream scheduler {where} not reachable: compiling locally with {settings.jobs} jobs")
        return {}, settings.jobs
    require_icecc()
    if local_daemon() is None:
        log.warn(f"no icecream daemon (iceccd) on this machine to send jobs to {where} (start it with "
                 f"'iceccd -s {where}'): compiling locally with {settings.jobs} jobs")
        return {}, settings.jobs
    tarball = toolchain_env(target, settings)
    make_jobs = jobs or cluster_jobs(where) or settings.jobs
    log.info(f"icecream [{target.name}]: {make_jobs} jobs on the cluster of {where} (environment {tarball.name})")
    icecc = shutil.which("icecc") or "icecc"
    return {"ICECC_VERSION": f"{PLATFORM}:{tarball}", "CCACHE_PREFIX": icecc}, make_jobs


def distributed_compiler(compiler: str, env: Mapping[str, str]) -> str:
    """The CXX for make: unchanged when not distributing or under ccache (CCACHE_PREFIX does it),
    else `icecc <compiler>`."""
    if "ICECC_VERSION" not in env or compiler.split(maxsplit=1)[0].endswith("ccache"):
        return compiler
    return f"{env.get('CCACHE_PREFIX', 'icecc')} {compiler}"
