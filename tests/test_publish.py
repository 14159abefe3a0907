"""Sharing builds between machines: a real Conan server on loopback as the binary cache.

Home A builds pthreadpool (and header-only fxdiv) for arm64 and publishes the graph; home B,
empty but for the remote, runs the same `conan create --build=missing` and downloads every
binary instead of building it. The server is conan-server from PyPI, in a virtualenv of its own:
its wheel carries a whole copy of Conan, which would overwrite the toolchain's Conan if installed
beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import require_sources, run_invoke, shared_source_cache
from nnpack_toolchain import conan_config, publish
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.runner import run
from nnpack_toolchain.settings import Settings, default_home
from nnpack_toolchain.sources import SourceCache, load_pins, pins_for_backend
from nnpack_toolchain.targets import TARGETS

CONAN_SERVER_VERSION = "2.33.0"  # newest on PyPI; serves the Conan 2.34 client (REST v2)
SERVER_PASSWORD = "s3cret-nntc-test"
REMOTE = "nntc-test"


def conan_server_python() -> Path:
    """Python of a virtualenv with conan-server (kept under <home>/tools; $NNTC_CONAN_SERVER_VENV)."""
    venv = Path(os.environ.get("NNTC_CONAN_SERVER_VENV")
                or default_home() / "tools" / f"conan-server-{CONAN_SERVER_VERSION}")
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import conans.server.launcher"]
    if python.is_file() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True,
                       text=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"conan-server=={CONAN_SERVER_VERSION}"],
                       check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        pytest.skip(f"conan-server {CONAN_SERVER_VERSION} could not be installed into {venv}: "
                    f"{str(detail).strip()[-500:]}")
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_CONF = """[server]
jwt_secret: {secret}
jwt_expire_minutes: 120
ssl_enabled: False
port: {port}
public_port:
host_name: 127.0.0.1
authorize_timeout: 1800
disk_storage_path: {storage}
disk_authorize_timeout: 1800
updown_secret: {secret}

[write_permissions]
*/*@*/*: demo

[read_permissions]
*/*@*/*: *

[users]
demo: {password}
"""

# conan_server listens on 0.0.0.0; its launcher, run this way, listens on loopback only.
LAUNCH = ("import os; from conans.server.launcher import ServerLauncher; "
          "ServerLauncher(server_dir=os.environ['CONAN_SERVER_HOME']).server.run(host='127.0.0.1')")


@pytest.fixture(scope="module")
def conan_server(module_tmp: Callable[[str], Path]):
    """A conan_server on 127.0.0.1:<free port>; user demo may write. Killed at the end, always."""
    python = conan_server_python()
    home = module_tmp("conan-server")
    port = free_port()
    (home / "server.conf").write_text(SERVER_CONF.format(
        secret=os.urandom(16).hex(), port=port, storage=home / "data", password=SERVER_PASSWORD))
    with open(home / "server.log", "w") as log_file:
        proc = subprocess.Popen([str(python), "-c", LAUNCH], env={**os.environ, "CONAN_SERVER_HOME": str(home)},
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.skip(f"conan-server exited with {proc.returncode}: {(home / 'server.log').read_text()[-800:]}")
            try:
                with urllib.request.urlopen(f"{url}/v2/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip(f"conan-server did not answer on {url} within 60 s: "
                            f"{(home / 'server.log').read_text()[-800:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def toolchain_filled_cache(root: Path) -> Path:
    """A fresh source cache filled by the toolchain (import of the shared cache's files), holding
    every pinned source the shared cache has, also those no build here uses: `conan upload` reads
    the metadata of every file of the download cache, not only of those Conan itself fetched."""
    shared = SourceCache(shared_source_cache())
    cache = SourceCache(root)
    for pin in load_pins().values():
        mirror = shared.cached_mirror(pin)
        if mirror is not None:
            cache.import_file(pin, shared.path(mirror.sha256))
    return root


def fresh_settings(home: Path) -> Settings:
    """A machine where nothing ran before: empty home, its own source cache filled by the toolchain."""
    return Settings(home=home, source_cache=toolchain_filled_cache(home / "sources"), jobs=os.cpu_count() or 1)


UPLOADED = re.compile(r"Uploading (recipe|package) '([^']+)'")
SKIPPED = re.compile(r"(Recipe|Package) '([^']+)' already in server, skipping upload")


def upload_log(settings: Settings, target) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """What Conan's upload of the last publish says it uploaded and skipped: (kind, reference) pairs."""
    text = (settings.logs_dir / f"publish-{target.name}.log").read_text()
    return ({(k.lower(), ref) for k, ref in UPLOADED.findall(text)},
            {(k.lower(), ref) for k, ref in SKIPPED.findall(text)})


def published_binaries(settings: Settings, remote: str, pattern: str, log_path: Path, out: Path) -> dict[str, int]:
    """Binaries per package name on the remote, as `conan list -r` of another home reports them."""
    run([*conan_config.conan_command(), "list", pattern, "-r", remote, "--format=json", f"--out-file={out}"],
        env=conan_config.conan_env(settings), log_path=log_path, what="conan list -r")
    result: dict[str, int] = {}
    for name_version, entry in json.loads(out.read_text())[remote].items():
        for revision in entry.get("revisions", {}).values():
            result[name_version.split("/")[0]] = result.get(name_version.split("/")[0], 0) + len(
                revision.get("packages", {}))
    return result


def graph_nodes(settings: Settings, target, reference: str, log_path: Path, out: Path) -> dict[str, dict]:
    """`conan graph info --format=json` of reference: binary status per package name (none skipped)."""
    run([*conan_config.conan_command(), "graph", "info", f"--requires={reference}",
         *conan_config.package_args(target, settings), "-c", "tools.graph:skip_binaries=False",
         "--format=json", f"--out-file={out}"],
        env=conan_config.conan_env(settings), log_path=log_path, what="conan graph info")
    nodes = json.loads(out.read_text())["graph"]["nodes"].values()
    return {n["name"]: n for n in nodes if n.get("package_id")}


def package_revisions(settings: Settings, log_path: Path, out: Path) -> dict[str, set[str]]:
    """Package revisions (prev) of every binary in a home's cache, per package name."""
    run([*conan_config.conan_command(), "list", "*:*#*", "--format=json", f"--out-file={out}"],
        env=conan_config.conan_env(settings), log_path=log_path, what="conan list")
    result: dict[str, set[str]] = {}
    for name_version, entry in json.loads(out.read_text())["Local Cache"].items():
        for revision in entry.get("revisions", {}).values():
            for package in revision.get("packages", {}).values():
                result.setdefault(name_version.split("/")[0], set()).update(package.get("revisions", {}))
    return result


@pytest.mark.slow
def test_second_home_downloads_published_binaries_instead_of_building(conan_server, tmp_path, monkeypatch):
    require_sources("pthreadpool", "fxdiv")
    target = TARGETS["arm64"]
    reference = load_pins()["pthreadpool"].reference

    # Machine A: build, then publish the graph (recipes, binaries, the nntc-base python_requires).
    a = fresh_settings(tmp_path / "a")
    conan_config.prepare_home(a, target)
    log_a = tmp_path / "a.log"
    conan_config.export_recipes(a, ["pthreadpool", "fxdiv"], log_a)
    conan_config.create(target, a, "pthreadpool", log_a)
    monkeypatch.delenv(publish.PASSWORD_ENV, raising=False)
    publish.add_remote(a, REMOTE, conan_server, user="demo", password=SERVER_PASSWORD)
    publish.add_remote(a, REMOTE, conan_server, user="demo", password=SERVER_PASSWORD)  # idempotent
    result = publish.publish(a, target, REMOTE, package="pthreadpool")
    names = {r.split("/")[0] for r in result.recipes}
    assert {"nntc-base", "fxdiv", "pthreadpool"} <= names, result
    assert result.binaries == 2, result  # pthreadpool for arm64, fxdiv (header-only)
    assert SERVER_PASSWORD not in "".join(p.read_text() for p in a.logs_dir.glob("*.log"))
    uploaded, skipped = upload_log(a, target)  # (what an earlier test put on this server is skipped)
    assert {(kind, ref.split("#")[0]) for kind, ref in uploaded} >= {("recipe", reference), ("package", reference)}
    # Publishing again: Conan itself says it skips everything the server already has.
    publish.publish(a, target, REMOTE, package="pthreadpool")
    uploaded_again, skipped_again = upload_log(a, target)
    assert not uploaded_again and skipped_again == uploaded | skipped, (uploaded_again, skipped_again, uploaded)

    # Machine B: an empty Conan home with the remote (anonymous read access).
    b = fresh_settings(tmp_path / "b")
    conan_config.prepare_home(b, target)
    publish.add_remote(b, REMOTE, conan_server)
    log_b = tmp_path / "b.log"
    conan_config.export_recipes(b, ["pthreadpool", "fxdiv"], log_b)

    # Offline, the remote is never asked: the binaries are missing.
    offline = graph_nodes(dataclasses.replace(b, offline=True), target, reference, log_b, tmp_path / "offline.json")
    assert {n["binary"] for n in offline.values()} == {"Missing"}, offline
    # Online, Conan finds every binary on the remote.
    online = graph_nodes(b, target, reference, log_b, tmp_path / "online.json")
    for name in ("pthreadpool", "fxdiv"):
        assert online[name]["binary"] == "Download" and online[name]["binary_remote"] == REMOTE, online[name]

    # The build path of `invoke nnpack` (conan create --build=missing) downloads, builds nothing,
    # and the downloaded library passes the test_package under QEMU.
    start = log_b.stat().st_size
    conan_config.create(target, b, "pthreadpool", log_b)
    create_log = log_b.read_text()[start:]
    # The package graph of the create itself (the test_package's graph comes after it).
    decided = create_log.split("======== Computing necessary packages ========")[1].split("========")[0]
    statuses = re.findall(r"^\s+([\w-]+)/\S+ - (\w+)(?: \((\S+)\))?$", decided, re.MULTILINE)
    assert ("pthreadpool", "Download", REMOTE) in statuses, decided
    assert {status for _, status, _ in statuses} <= {"Download", "Skip", "Cache"}, decided  # fxdiv: Skip
    assert f"{reference}: Downloaded package revision" in create_log
    assert f"{reference}: Calling build()" not in create_log
    assert "pthreadpool-under-target OK" in create_log
    # The binary of A, bit for bit: the same package revision (fxdiv, header-only, was skipped).
    prevs_a = package_revisions(a, log_a, tmp_path / "list-a.json")
    prevs_b = package_revisions(b, log_b, tmp_path / "list-b.json")
    assert prevs_b["pthreadpool"] == prevs_a["pthreadpool"], (prevs_a, prevs_b)


def test_publish_uploads_from_a_source_cache_the_toolchain_filled(conan_server, tmp_path, monkeypatch):
    """Header-only fxdiv, seconds: `conan upload` reads the metadata of every file of the download
    cache (here also NNPACK's, six's, ... which no Conan build touched), then uploads."""
    require_sources("fxdiv")
    target = TARGETS["arm64"]
    a = fresh_settings(tmp_path / "a")
    conan_config.prepare_home(a, target)
    conan_config.export_recipes(a, ["fxdiv"], tmp_path / "a.log")
    conan_config.create(target, a, "fxdiv", tmp_path / "a.log")
    monkeypatch.delenv(publish.PASSWORD_ENV, raising=False)
    publish.add_remote(a, REMOTE, conan_server, user="demo", password=SERVER_PASSWORD)
    publish.publish(a, target, REMOTE, package="fxdiv")
    uploaded, skipped = upload_log(a, target)  # skipped: an earlier test of this server uploaded them
    fxdiv = load_pins()["fxdiv"].reference
    assert {(kind, ref.split("#")[0]) for kind, ref in uploaded | skipped} == {
        ("recipe", fxdiv), ("recipe", "nntc-base/1.0"), ("package", fxdiv)}, (uploaded, skipped)
    b = Settings(home=tmp_path / "b")
    publish.add_remote(b, REMOTE, conan_server)
    assert published_binaries(b, REMOTE, f"{fxdiv}:*", tmp_path / "b.log", tmp_path / "b.json") == {"fxdiv": 1}


@pytest.mark.slow
def test_fresh_home_builds_nnpack_for_arm64_and_publishes_it_through_the_cli(conan_server, tmp_path):
    """The issue's "what must hold": `invoke fetch`, `invoke nnpack --arch arm64`, `invoke publish`
    on a home where nothing ran before, to a loopback conan_server."""
    pins = pins_for_backend("neon")
    require_sources(*(p.name for p in pins))
    home = tmp_path / "home"
    # The shared cache's files, as an older `invoke fetch` (or a copy without them) left them: no .json.
    blobs = home / "sources" / "s"
    blobs.mkdir(parents=True)
    for blob in (shared_source_cache() / "s").iterdir():
        if blob.is_file() and not blob.name.endswith((".json", ".dirty")):
            shutil.copyfile(blob, blobs / blob.name)
    env = {publish.PASSWORD_ENV: SERVER_PASSWORD}
    fetched = run_invoke("fetch", "--offline", *[a for p in pins for a in ("--package", p.name)],
                         "--home", str(home))
    assert fetched.returncode == 0, fetched.stderr
    built = run_invoke("nnpack", "--arch", "arm64", "--tests", "none", "--home", str(home))
    assert built.returncode == 0, built.stderr[-4000:]
    published = run_invoke("publish", "--arch", "arm64", "--remote", REMOTE, "--url", conan_server, "--user", "demo",
                           "--tests", "none", "--home", str(home), env=env)
    assert published.returncode == 0, published.stderr[-4000:]
    nnpack = load_pins()["nnpack"].reference
    assert f"published [arm64] {nnpack} to {REMOTE}: " in published.stderr + published.stdout
    uploaded, _ = upload_log(Settings(home=home), TARGETS["arm64"])
    assert ("package", nnpack) in {(kind, ref.split("#")[0]) for kind, ref in uploaded}, uploaded
    other = Settings(home=tmp_path / "other")
    publish.add_remote(other, REMOTE, conan_server)
    assert published_binaries(other, REMOTE, f"{nnpack}:*", tmp_path / "other.log", tmp_path / "other.json") == {
        "nnpack": 1}


def test_offline_conan_commands_never_use_a_remote(tmp_path):
    target = TARGETS["arm64"]
    settings = Settings(home=tmp_path, offline=True)
    assert "--no-remote" in conan_config.package_args(target, settings)
    assert "--no-remote" not in conan_config.package_args(target, dataclasses.replace(settings, offline=False))
    with pytest.raises(ConfigurationError, match="offline"):
        publish.publish(settings, target, REMOTE)


def test_add_remote_is_idempotent_and_keeps_conancenter_out(tmp_path):
    settings = Settings(home=tmp_path)
    publish.add_remote(settings, REMOTE, "http://127.0.0.1:9/first")
    publish.add_remote(settings, REMOTE, "http://127.0.0.1:9/first")
    publish.add_remote(settings, REMOTE, "http://127.0.0.1:9/second")
    remotes = json.loads((settings.conan_home / "remotes.json").read_text())["remotes"]
    assert [(r["name"], r["url"]) for r in remotes] == [(REMOTE, "http://127.0.0.1:9/second")]


def test_login_without_password_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(publish.PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigurationError, match=publish.PASSWORD_ENV):
        publish.add_remote(Settings(home=tmp_path), REMOTE, "http://127.0.0.1:9", user="demo")


def test_publish_names_an_unknown_remote(tmp_path):
    settings = Settings(home=tmp_path)
    publish.add_remote(settings, "other", "http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="invoke publish --remote nowhere --url"):
        publish.publish(settings, TARGETS["arm64"], "nowhere")


def test_publish_before_building_says_what_to_run(tmp_path):
    settings = Settings(home=tmp_path)
    publish.add_remote(settings, REMOTE, "http://127.0.0.1:9")  # never contacted
    with pytest.raises(ConfigurationError, match="not built for arm64.*invoke nnpack --arch arm64"):
        publish.publish(settings, TARGETS["arm64"], REMOTE)


def test_ccache_remote_env(monkeypatch, tmp_path):
    monkeypatch.delenv(publish.CCACHE_REMOTE_ENV, raising=False)
    assert publish.ccache_remote_env() == {}
    assert publish.ccache_remote_env("redis://cache.local") == {
        "CCACHE_REMOTE_STORAGE": "redis://cache.local", "CCACHE_COMPILERCHECK": "content"}
    monkeypatch.setenv(publish.CCACHE_REMOTE_ENV, "http://cache.local:8080/mxnet")
    assert publish.ccache_remote_env(base_dir=tmp_path) == {
        "CCACHE_REMOTE_STORAGE": "http://cache.local:8080/mxnet", "CCACHE_COMPILERCHECK": "content",
        "CCACHE_BASEDIR": str(tmp_path), "CCACHE_NOHASHDIR": "1"}


@pytest.mark.skipif(shutil.which("ccache") is None or shutil.which("gcc") is None, reason="needs ccache and gcc")
def test_ccache_remote_storage_shares_objects_between_trees(tmp_path):
    """Two trees in different places, two empty local caches: the second compile is a remote hit."""
    remote = tmp_path / "remote"
    stats = []
    for machine in ("a", "b"):
        tree = tmp_path / machine / "mxnet"
        tree.mkdir(parents=True)
        (tree / "x.c").write_text('#include "x.h"\nint f(void) { return X; }\n')
        (tree / "x.h").write_text("#define X 42\n")
        env = {**os.environ, "CCACHE_DIR": str(tmp_path / machine / "ccache"), "CCACHE_CONFIGPATH": os.devnull,
               **publish.ccache_remote_env(remote.as_uri(), base_dir=tmp_path / machine)}
        subprocess.run(["ccache", "gcc", "-c", str(tree / "x.c"), "-o", str(tree / "x.o")], cwd=tree, env=env,
                       check=True)
        stats.append(subprocess.run(["ccache", "--print-stats"], env=env, check=True, capture_output=True,
                                    text=True).stdout)
    counters = [dict(line.split("\t") for line in s.splitlines() if "\t" in line) for s in stats]
    assert counters[0].get("remote_storage_miss") == "1", stats[0]
    assert counters[1].get("remote_storage_hit") == "1", stats[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_remote_is_left_out_with_one_line_and_nnpack_builds_here(tmp_path, capsys):
    """A home that once used a team remote (here: a loopback server that is gone) must still build:
    Conan stops at the first remote it cannot reach, so the toolchain asks only those that answer."""
    settings = Settings(home=tmp_path)
    target = TARGETS["arm64"]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        publish.add_remote(settings, "up", f"http://127.0.0.1:{server.getsockname()[1]}")
        publish.add_remote(settings, "gone", f"http://127.0.0.1:{closed_port()}")
        args = conan_config.package_args(target, settings)
        assert "--no-remote" not in args and args[args.index("-r") + 1] == "up" and args.count("-r") == 1, args
    assert "--no-remote" in conan_config.package_args(target, settings), "no remote answers: ask none"
    captured = capsys.readouterr()
    said = captured.err + captured.out
    assert said.count("Conan remote gone (") == 1 and "invoke use-remote --remove gone" in said, said


def test_use_remote_remove_forgets_a_remote_and_names_the_known_ones(tmp_path):
    settings = Settings(home=tmp_path)
    publish.add_remote(settings, "team", "http://127.0.0.1:9")
    proc = run_invoke("use-remote", "--remove", "nowhere", "--home", str(tmp_path))
    assert proc.returncode == 2 and "no Conan remote 'nowhere'" in proc.stderr and "configured: team" in proc.stderr
    proc = run_invoke("use-remote", "--remove", "team", "--home", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((settings.conan_home / "remotes.json").read_text())["remotes"] == []
    assert conan_config.package_args(TARGETS["arm64"], settings).count("-r") == 0
