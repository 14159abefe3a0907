"""Sharing builds between machines: a Conan remote as the binary cache, ccache remote storage.

- `add_remote` configures a Conan remote (any Conan 2 server: conan_server, Artifactory, ...) in
  the toolchain's private Conan home and, given a user, logs in. The password comes from the
  argument or $NNTC_CONAN_PASSWORD and is never written to a log or a command line.
- `publish` uploads, for one target, every recipe and binary of the NNPACK graph (NNPACK, its
  dependencies, test and build requirements, the nntc-base python_requires) to a remote.
- Consumers need nothing else: `conan create ... --build=missing` (nnpack.py) asks the enabled
  remotes of the home for a binary before building it, so a second machine with the remote
  configured downloads what the first one published. Recipes are still exported from the
  checkout, so a binary is found only for identical recipes (same recipe revision). Offline
  builds pass `--no-remote` (conan_config.package_args) and never touch a remote.
- `conan upload` also walks the download cache (the source cache): every file there needs
  Conan's `<sha256>.json`, which is written for any file that lacks it before uploading.
- `ccache_remote_env` is the environment for ccache's remote storage, for the MXNet make.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import conan_config, log
from .conan_home import check_conan_home
from .errors import BuildError, ConfigurationError
from .nnpack import resolve_backend
from .runner import run
from .settings import Settings
from .sources import load_pins, pins_for_backend, source_cache
from .targets import Target

PASSWORD_ENV = "NNTC_CONAN_PASSWORD"
"""Password for `add_remote` (login) and `publish` (re-login when the token expired)."""
CCACHE_REMOTE_ENV = "NNTC_CCACHE_REMOTE"
"""ccache remote storage URL for the MXNet build, e.g. http://cache.local:8080/mxnet|layout=bazel,
redis://cache.local or file:///mnt/shared/ccache."""


@dataclass
class PublishResult:
    target: str
    remote: str
    reference: str
    recipes: list[str] = field(default_factory=list)
    """Recipe references uploaded (with revision), python_requires included."""
    binaries: int = 0
    seconds: float = 0.0


def _conan_api(settings: Settings):
    from conan.api.conan_api import ConanAPI

    return ConanAPI(str(settings.conan_home))


def _ensure_remote_list(settings: Settings) -> None:
    """Conan adds ConanCenter to a home without remotes.json; this project never uses it."""
    remotes = settings.conan_home / "remotes.json"
    if not remotes.exists():
        conan_config.write_if_changed(remotes, json.dumps({"remotes": []}, indent=2) + "\n")


def _credentials_env(remote: str, user: str | None, password: str | None) -> dict[str, str]:
    """Conan's own variables for a remote's login: read only when the stored token has expired."""
    if not (user and password):
        return {}
    suffix = remote.replace("-", "_").upper()
    return {f"CONAN_LOGIN_USERNAME_{suffix}": user, f"CONAN_PASSWORD_{suffix}": password}


def add_remote(settings: Settings, name: str, url: str, *, user: str | None = None,
               password: str | None = None) -> None:
    """Add (or update) the Conan remote `name` -> `url` in the private home; log in as `user`.

    Idempotent: an existing remote of the same name gets the new URL and is enabled.
    """
    from conan.api.model import Remote
    from conan.errors import ConanException

    password = password or os.environ.get(PASSWORD_ENV) or None
    if user and not password:
        raise ConfigurationError(f"logging in to Conan remote {name!r} as {user!r} needs a password: "
                                 f"set ${PASSWORD_ENV}")
    check_conan_home(settings.conan_home)
    _ensure_remote_list(settings)
    what = f"Conan remote {name} -> {url}{f' as {user}' if user else ''}"
    with (log.step("remote", name, what, settings.logs_dir) as step,
          open(step.log_path, "a", encoding="utf-8") as stream, contextlib.redirect_stderr(stream)):
        api = _conan_api(settings)
        try:
            current = {r.name: r for r in api.remotes.list(only_enabled=False)}.get(name)
            if current is not None and current.url == url:
                api.remotes.enable(name)
                step.note = "already configured"
            elif current is not None:
                api.remotes.update(name, url=url)
                api.remotes.enable(name)
                step.note = f"URL was {current.url}"
            else:
                api.remotes.add(Remote(name, url))
                step.note = "added"
            if user:
                api.remotes.user_login(api.remotes.get(name), user, password)
                step.note += f", logged in as {user}"
        except ConanException as exc:
            message = str(exc).replace(password, "******") if password else str(exc)
            raise BuildError(f"Conan remote {name} ({url}): {message}", log_path=step.log_path) from None
        stream.write(f"remote {name}: {url}{f' (user {user})' if user else ''}\n")


def remove_remote(settings: Settings, name: str) -> None:
    """Forget the Conan remote `name` (builds stop asking it); an unknown name is an error naming the known ones."""
    from conan.errors import ConanException

    check_conan_home(settings.conan_home)
    _ensure_remote_list(settings)
    api = _conan_api(settings)
    known = [r.name for r in api.remotes.list(only_enabled=False)]
    if name not in known:
        raise ConfigurationError(f"no Conan remote {name!r} in {settings.conan_home} "
                                 f"(configured: {', '.join(known) or 'none'})")
    try:
        api.remotes.remove(name)
    except ConanException as exc:
        raise ConfigurationError(f"cannot remove Conan remote {name!r}: {exc}") from None
    log.info(f"remote {name}: removed from {settings.conan_home}")


def remote_user(settings: Settings, remote: str) -> str | None:
    """The user logged in to `remote` in the private home (None when anonymous)."""
    from conan.errors import ConanException

    api = _conan_api(settings)
    try:
        return api.remotes.user_info(api.remotes.get(remote)).get("user_name")
    except ConanException as exc:
        raise ConfigurationError(f"no Conan remote {remote!r} in {settings.conan_home}; add it with "
                                 f"'invoke publish --remote {remote} --url URL'") from exc


def publish(settings: Settings, target: Target, remote: str, *, package: str = "nnpack") -> PublishResult:
    """Upload the recipes and binaries of `package`'s graph for `target` (default NNPACK's) to `remote`.

    The package must be built in the private cache ('invoke nnpack --arch X' first); the other
    binaries of the graph that are not there (build tools of a downloaded NNPACK) are named and
    left out. What the remote already holds is skipped by Conan, so publishing again is cheap.
    """
    if settings.offline:
        raise ConfigurationError("publish uploads to a Conan remote; it cannot run with --offline")
    check_conan_home(settings.conan_home)
    backend = resolve_backend(target, settings)
    pins = {p.name: p for p in pins_for_backend(backend)}
    if package not in pins:
        raise ConfigurationError(f"no Conan package {package!r} for the {backend} backend; packages: "
                                 + ", ".join(sorted(pins)))
    reference = pins[package].reference
    user = remote_user(settings, remote)
    conan_config.prepare_home(settings, target)
    work = settings.home / "publish" / target.name
    work.mkdir(parents=True, exist_ok=True)
    graph_file, list_file = work / f"{package}-graph.json", work / f"{package}-upload.json"
    conan = conan_config.conan_command()
    env = conan_config.conan_env(settings)
    with log.step("publish", target.name, f"upload {reference} and its dependencies to Conan remote {remote}",
                  settings.logs_dir) as step:
        # The recipes of this checkout: what a consumer exporting them asks the remote for.
        conan_config.export_recipes(settings, list(pins), step.log_path)
        run([*conan, "graph", "info", f"--requires={reference}",
             *conan_config.package_args(target, settings, backend=backend), "--no-remote",
             "-c", "tools.graph:skip_binaries=False", "--format=json", f"--out-file={graph_file}"],
            env=env, log_path=step.log_path, what=f"conan graph info {reference}")
        nodes = [n for n in json.loads(graph_file.read_text())["graph"]["nodes"].values() if n.get("package_id")]
        if not any(n["ref"].split("#")[0] == reference and n["binary"] == "Cache" for n in nodes):
            raise ConfigurationError(
                f"{reference} is not built for {target.name} with this checkout's recipes and these options; "
                f"run 'invoke nnpack --arch {target.name}' "
                "(same --backend/--tests/--source) first", log_path=step.log_path)
        # A machine that downloaded NNPACK never had the binaries of its build tools: not published.
        absent = sorted(f"{n['ref'].split('#')[0]} ({n['context']})" for n in nodes if n["binary"] != "Cache")
        if absent:
            log.warn(f"not in the local cache, not published: {', '.join(absent)}")
        # Every recipe (all in the cache, as --no-remote resolved them): --graph-recipes=cache
        # would drop the python_requires (Conan compares their status "Cache" to "cache").
        run([*conan, "list", f"--graph={graph_file}", "--graph-recipes=*", "--graph-binaries=cache",
             "--format=json", f"--out-file={list_file}"], env=env, log_path=step.log_path, what="conan list --graph")
        # Conan's upload reads the metadata of every file of the download cache (the source cache).
        backfilled = source_cache(settings).backfill_metadata(load_pins().values())
        if backfilled:
            with open(step.log_path, "a", encoding="utf-8") as stream:
                stream.write(f"wrote Conan's metadata of cached sources: {', '.join(backfilled)}\n")
        run([*conan, "upload", f"--list={list_file}", "-r", remote, "--confirm"],
            env={**env, **_credentials_env(remote, user, os.environ.get(PASSWORD_ENV))},
            log_path=step.log_path, what=f"conan upload to {remote}")
        recipes, binaries = summarize_package_list(list_file)
        step.note = f"{len(recipes)} recipes, {binaries} binaries"
    return PublishResult(target=target.name, remote=remote, reference=reference, recipes=recipes,
                         binaries=binaries, seconds=round(step.elapsed, 1))


def summarize_package_list(path: Path) -> tuple[list[str], int]:
    """Recipe references (name/version#rrev) and the number of binaries in a `conan list` JSON."""
    recipes, binaries = [], 0
    for name_version, entry in json.loads(path.read_text()).get("Local Cache", {}).items():
        for rrev, revision in entry.get("revisions", {}).items():
            recipes.append(f"{name_version}#{rrev}")
            binaries += len(revision.get("packages", {}))
    return sorted(recipes), binaries


def ccache_remote_env(url: str | None = None, *, base_dir: Path | None = None) -> dict[str, str]:
    """Environment for ccache's remote storage (ccache >= 4.4; Debian 12 ships 4.7).

    `url` defaults to $NNTC_CCACHE_REMOTE; without either the result is empty (local cache only).
    Objects are shared between machines only when the compile commands match: give a `base_dir`
    holding every absolute path of the commands (the toolchain home: the MXNet tree, the deployed
    NNPACK headers, the sysroots) so ccache rewrites them as relative ones and ignores the working
    directory; builds under different homes with the same layout then hit the same entries.
    The compilers (same Debian cross-gcc packages) must match too: they are checked by content,
    not by mtime, which differs between machines.
    """
    url = url or os.environ.get(CCACHE_REMOTE_ENV)
    if not url:
        return {}
    env = {"CCACHE_REMOTE_STORAGE": url, "CCACHE_COMPILERCHECK": "content"}
    if base_dir is not None:
        env["CCACHE_BASEDIR"] = str(base_dir)
        env["CCACHE_NOHASHDIR"] = "1"
    return env
