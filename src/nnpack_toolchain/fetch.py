"""Stage 1: fill the source cache with every pinned source, verified by sha256."""

from __future__ import annotations

from pathlib import Path

from . import log
from .errors import ConfigurationError, MissingSourceError, SourceError
from .settings import Settings
from .sources import git_clone_command, load_pins, source_cache


def fetch_sources(settings: Settings, *, names: list[str] | None = None,
                  from_git: dict[str, Path] | None = None) -> list[str]:
    """Fetch (or import from git clones) the named packages, all by default; returns one line each.

    Every name and every --from-git clone is checked before anything is fetched. Packages given
    only with --from-git are imported too.
    """
    pins = load_pins()
    from_git = from_git or {}
    unknown = sorted((set(names or []) | set(from_git)) - set(pins))
    if unknown:
        raise ConfigurationError(f"unknown package{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                 f"(--package/--from-git); pinned packages: {', '.join(pins)}")
    for name, repo in from_git.items():
        git_clone_command(pins[name], repo)
    wanted = list(dict.fromkeys([*(names or list(pins)), *from_git]))
    cache = source_cache(settings)
    lines, missing, failed = [], [], []
    with log.step("fetch", "all", f"pinned sources into {settings.sources_dir}", settings.logs_dir) as step:
        backfilled = cache.backfill_metadata(pins.values())
        if backfilled:
            log.info(f"wrote Conan's metadata (<sha256>.json) of {len(backfilled)} cached files")
            with open(step.log_path, "a") as stream:
                stream.write("metadata written for: " + ", ".join(backfilled) + "\n")
        for name in wanted:  # every package is tried; failures are reported at the end
            pin = pins[name]
            try:
                if name in from_git:
                    origin = cache.import_git(pin, from_git[name])
                else:
                    origin = cache.resolve(pin, offline=settings.offline).origin
            except MissingSourceError as exc:
                missing.extend(exc.missing)
                continue
            except SourceError as exc:
                failed.append(exc.message)
                log.warn(exc.message)
                continue
            lines.append(f"{pin.reference}: {origin}")
            log.info(lines[-1])
        with open(step.log_path, "a") as stream:
            stream.write("\n".join(lines + failed) + "\n")
        if missing:
            raise MissingSourceError(missing, offline=settings.offline)
        if failed:
            raise SourceError(f"{len(failed)} of {len(wanted)} pinned sources could not be fetched "
                              f"(the others are in the cache):\n" + "\n".join(failed))
    return lines
