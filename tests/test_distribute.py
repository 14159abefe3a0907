"""Compiling across machines with icecream (distribute.py), on a cluster of this machine alone: a
scheduler and two daemons on their own ports, sockets, logs and environment directories, as
icecream's own tests/test.sh runs them. `nntc-local` is the client's daemon (--no-remote, one
job), `nntc-remote` takes remote jobs (two); ICECC_TEST_REMOTEBUILD and ICECC_PREFERRED_HOST
send every compile to nntc-remote, which runs it in a chroot of the shipped environment.

As root, iceccd and the scheduler drop to the `icecc` user (made by Debian's package), so their
directory is a fresh one in /tmp owned by it (pytest's own tmp_path lies in a 0700 directory
they cannot enter). Without root (or CAP_SYS_CHROOT) iceccd takes no remote jobs: those tests
skip, saying so. The daemons' TCP port listens on every interface: iceccd 1.4 with `-i lo`
binds the loopback twice and fails (it always adds a loopback listener to the named one).

icecream gives no job to a daemon whose machine is busy (load 1000 from /proc/stat's idle time),
and this machine may be busy with other builds: as root, nntc-remote runs in a private mount
namespace where /proc/stat is a still copy, i.e. it sees the idle machine a remote host would be
(without that, remote jobs may wait minutes and icecc builds locally after 4).

Objects are compared without -g: with it, DWARF's DW_AT_producer records the options, and
icecream adds -fdirectives-only and two --param ggc-* to the remote command line
(-gno-record-gcc-switches keeps them out).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnpack_toolchain.compilers import ensure_compilers
from nnpack_toolchain.distribute import (cluster_hosts, cluster_jobs, distributed_compiler, make_environment,
                                         parse_scheduler, scheduler_reachable)
from nnpack_toolchain.doctor import OPTIONAL_TOOLS, debian_packages, tools_for
from nnpack_toolchain.elfinfo import elf_kind
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.targets import TARGETS

ICECREAM = ("icecc", "icecc-create-env", "icecc-scheduler", "iceccd")
SOURCES = {
    "shapes.cpp": "#include <memory>\n#include <vector>\nstruct Shape { virtual ~Shape() = default; "
                  "virtual double area() const = 0; };\nstruct Square : Shape { double s; explicit Square(double v) "
                  ": s(v) {} double area() const override { return s * s; } };\ndouble total(int n) { "
                  "std::vector<std::unique_ptr<Shape>> v; for (int i = 0; i < n; ++i) "
                  "v.push_back(std::make_unique<Square>(i)); double t = 0; for (auto& s : v) t += s->area(); "
                  "return t; }\n",
    "words.cpp": "#include <map>\n#include <sstream>\n#include <string>\nstd::map<std::string, int> "
                 "count(const std::string& text) { std::map<std::string, int> m; std::istringstream in(text); "
                 "std::string w; while (in >> w) ++m[w]; return m; }\n",
    "atomics.cpp": "#include <atomic>\n#include <cstdint>\n#include <thread>\nstd::int64_t run() { "
                   "std::atomic<std::int64_t> n{0}; std::thread a([&] { n += 2; }), b([&] { n += 3; }); "
                   "a.join(); b.join(); return n.load(); }\n",
    "checksum.c": "#include <stddef.h>\n#include <stdint.h>\nuint32_t adler32(const unsigned char* p, size_t n) "
                  "{ uint32_t a = 1, b = 0; for (size_t i = 0; i < n; ++i) { a = (a + p[i]) % 65521; "
                  "b = (b + a) % 65521; } return (b << 16) | a; }\n",
}
FLAGS = ("-O2", "-fPIC", "-Wall")


def tool(name: str) -> str | None:
    """icecream's programs, the daemons' in /usr/sbin even when PATH lacks it."""
    return shutil.which(name) or (str(Path("/usr/sbin", name)) if Path("/usr/sbin", name).is_file() else None)


def icecream_missing() -> str | None:
    missing = [name for name in ICECREAM if tool(name) is None]
    if missing:
        return f"icecream is not installed ({', '.join(missing)}): apt-get install icecc (or invoke setup)"
    return None


def free_port(pair: bool = False) -> int:
    """A free loopback TCP port (and, with pair, the next one free too, and the port free for UDP)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not pair:
            return port
        try:
            with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port + 1))
                udp.bind(("", port))
            return port
        except OSError:
            continue


@dataclass
class Cluster:
    directory: Path
    scheduler: str
    remote_port: int
    remote_name: str = "nntc-remote"

    @property
    def local_socket(self) -> Path:
        return self.directory / "nntc-local.socket"

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def remote_compiles(self) -> int:
        return self.log(self.remote_name).count("Remote compilation completed with exit code 0")


def _wait(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"icecream test cluster: {what} within {seconds:.0f} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """icecc-scheduler and two iceccd on this machine; stopped (by their process ids) afterwards."""
    if problem := icecream_missing():
        pytest.skip(problem)
    directory = Path(tempfile.mkdtemp(prefix="nntc-icecream-"))
    if os.geteuid() == 0:  # they drop to this user, who must write logs, sockets and environments
        user = pwd.getpwnam("icecc" if _has_user("icecc") else "nobody")
        os.chown(directory, user.pw_uid, user.pw_gid)
    port, remote_port = free_port(pair=True), free_port()
    cluster = Cluster(directory, f"127.0.0.1:{port}", remote_port)
    netname = f"nntc-test-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICECC", "USE_SCHEDULER"))}
    processes: list[subprocess.Popen[bytes]] = []

    def start(*argv: str, socket_name: str | None = None) -> None:
        extra = {"ICECC_TEST_SOCKET": str(directory / f"{socket_name}.socket")} if socket_name else {}
        processes.append(subprocess.Popen(argv, env={**env, **extra}, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def daemon(name: str, *options: str, idle: bool = False) -> None:
        argv = (str(tool("iceccd")), "-s", cluster.scheduler, "-n", netname, "-N", name,
                "-b", str(directory / f"envs-{name}"), "-l", str(directory / f"{name}.log"), "-vvv", *options)
        start(*(still_proc_stat(directory) if idle else ()), *argv, socket_name=name)

    try:
        start(str(tool("icecc-scheduler")), "-p", str(port), "-i", "lo", "-n", netname,
              "-l", str(directory / "scheduler.log"), "-vv")
        _wait(lambda: scheduler_reachable(cluster.scheduler), "the scheduler did not listen")
        daemon("nntc-local", "--no-remote", "-m", "1")
        daemon(cluster.remote_name, "-p", str(remote_port), "-m", "2", idle=True)
        _wait(lambda: len(cluster_hosts(cluster.scheduler) or []) == 2, "the daemons did not log in")
        yield cluster
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def still_proc_stat(directory: Path) -> tuple[str, ...]:
    """A prefix running a command with a still copy of /proc/stat (an idle machine to iceccd), or
    nothing where private mount namespaces are not permitted."""
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    if os.geteuid() != 0 or not shutil.which("unshare") or subprocess.run(probe, capture_output=True).returncode:
        return ()
    still = directory / "idle-proc-stat"
    still.write_text(Path("/proc/stat").read_text())
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /proc/stat && exec "$@"',
            str(still))


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def remote_cluster(cluster: Cluster) -> Cluster:
    if "Cannot use chroot, no remote jobs accepted." in cluster.log(cluster.remote_name):
        pytest.skip("iceccd takes remote jobs only as root or with CAP_SYS_CHROOT (it compiles in a chroot)")
    return cluster


def test_scheduler_spec_and_setup_installs_icecc_without_requiring_it() -> None:
    assert parse_scheduler("build-farm") == ("build-farm", 8765)
    assert parse_scheduler("10.0.0.5:9000") == ("10.0.0.5", 9000)
    with pytest.raises(ConfigurationError, match=r"HOST or HOST:PORT .* not 'farm:x'"):
        parse_scheduler("farm:x")
    assert "icecc" in debian_packages() and OPTIONAL_TOOLS["icecc-create-env"] == "icecc"
    assert "icecc" not in tools_for(list(TARGETS.values())), "doctor and the builds must not require icecc"


def test_no_scheduler_means_local_jobs_said_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(home=tmp_path, jobs=2)
    assert make_environment(TARGETS["arm64"], settings, f"127.0.0.1:{port}") == ({}, 2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"  warning: icecream scheduler 127.0.0.1:{port} not reachable: compiling locally with 2 jobs"]
    assert not (tmp_path / "icecc").exists() and not (tmp_path / "compilers").exists()


def test_scheduler_lists_the_daemons_and_their_jobs(cluster: Cluster) -> None:
    hosts = {h.name: h for h in cluster_hosts(cluster.scheduler) or []}
    assert set(hosts) == {"nntc-local", "nntc-remote"}
    assert (hosts["nntc-local"].max_jobs, hosts["nntc-remote"].max_jobs) == (1, 2)
    assert {h.platform for h in hosts.values()} == {"x86_64"}
    assert cluster_jobs(cluster.scheduler) == 3
    assert cluster_hosts(f"127.0.0.1:{free_port()}") is None and cluster_jobs(f"127.0.0.1:{free_port()}") is None


def test_no_local_daemon_means_local_jobs(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICECC_TEST_SOCKET", str(tmp_path / "no-daemon.socket"))
    settings = Settings(home=tmp_path, jobs=2)
    assert make_environment(TARGETS["armv7"], settings, cluster.scheduler) == ({}, 2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"no icecream daemon (iceccd) on this machine to send jobs to {cluster.scheduler}" \
        in lines[0] and lines[0].endswith("compiling locally with 2 jobs")


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_remote_objects_are_the_local_ones(name: str, remote_cluster: Cluster, build_settings: Settings,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each object compiled on nntc-remote (half through ccache with CCACHE_PREFIX, as build_mxnet
    would, half as `icecc <compiler>`) is for the target and byte for byte the local compile."""
    cluster, target = remote_cluster, TARGETS[name]
    compilers = ensure_compilers(target, build_settings)
    monkeypatch.setenv("ICECC_TEST_SOCKET", str(cluster.local_socket))
    started = time.monotonic()
    env, jobs = make_environment(target, build_settings, cluster.scheduler)
    made_in = time.monotonic() - started
    tarball = build_settings.home / "icecc" / f"{compilers.root.name}.tar.gz"
    assert env["ICECC_VERSION"] == f"x86_64:{tarball}" and env["CCACHE_PREFIX"].endswith("icecc") and jobs == 3
    icecc_log = tmp_path / "icecc.log"
    remote_env = {**os.environ, **env, "CCACHE_DIR": str(tmp_path / "ccache"), "ICECC_TEST_REMOTEBUILD": "1",
                  "ICECC_PREFERRED_HOST": cluster.remote_name, "ICECC_DEBUG": "debug", "ICECC_LOGFILE": str(icecc_log)}
    before, times = cluster.remote_compiles(), []
    for index, (source, text) in enumerate(SOURCES.items()):
        (tmp_path / source).write_text(text)
        compiler = str(compilers.cc if source.endswith(".c") else compilers.cxx)
        command = [*compilers.flags, *FLAGS, "-c", source, "-o"]
        wrapped = f"ccache {compiler}" if index % 2 == 0 else distributed_compiler(compiler, env)
        seconds = []
        for how, argv, run_env in (("remote", [*wrapped.split(), *command], remote_env),
                                   ("local", [compiler, *command], None)):
            clock = time.monotonic()
            subprocess.run([*argv, f"{source}.{how}.o"], cwd=tmp_path, env=run_env, check=True, timeout=600)
            seconds.append(time.monotonic() - clock)
        times.append((source, *seconds))
    log_text = icecc_log.read_text(errors="replace")
    assert log_text.count(f"Have to use host 127.0.0.1:{cluster.remote_port}") == len(SOURCES), log_text[-3000:]
    assert cluster.remote_compiles() - before == len(SOURCES), cluster.log(cluster.remote_name)[-3000:]
    for source in SOURCES:
        remote, local = ((tmp_path / f"{source}.{how}.o").read_bytes() for how in ("remote", "local"))
        assert elf_kind(remote[:64]) == f"{target.elf_class} {target.elf_machine}"
        assert remote == local, f"{source}: the remote object differs from the local one"
    print(f"\nicecream [{name}]: environment {tarball.stat().st_size / 1e6:.1f} MB, made in {made_in:.1f} s; "
          f"remote {sum(t[1] for t in times):.1f} s vs local {sum(t[2] for t in times):.1f} s for {len(SOURCES)} "
          "objects (" + ", ".join(f"{s} {r:.1f}/{loc:.2f}" for s, r, loc in times) + ")")
