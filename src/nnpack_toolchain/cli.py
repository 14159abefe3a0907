"""Glue between Invoke tasks and the stages: option parsing and error reporting."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from rich.markup import escape

from .errors import ConfigurationError, ToolchainError
from .local_source import check_source_names
from .log import console
from .procgroup import Terminated, sigterm_unwinds
from .settings import Settings, default_home, parse_local_sources, source_date_epoch

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Expected failures print one line (plus the log path) and exit with their code; SIGTERM and SIGHUP
    unwind like Ctrl-C (tools started with procgroup.run_group are stopped, group and all); exit 128 + signal."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_unwinds():
                return func(*args, **kwargs)
        except ToolchainError as error:
            console.print(f"[bold red]error:[/bold red] {escape(error.message)}")
            if error.log_path:
                console.print(f"full log: {error.log_path}")
            sys.exit(error.exit_code)
        except Terminated as stop:
            console.print(f"[bold red]stopped:[/bold red] {stop}; the tools it ran were stopped with it")
            sys.exit(stop.exit_code)

    return wrapper  # type: ignore[return-value]


def parse_count(value: object, option: str, *, default_hint: str = "") -> int | None:
    """A whole number >= 1 from an option (Invoke passes strings); None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{option} takes a whole number (1 or more), not {value!r}") from None
    if number < 1:
        raise ConfigurationError(f"{option} must be at least 1, not {number}{default_hint}")
    return number


def usable_home(home: Path) -> Path:
    """The toolchain home, created if needed; refuses one this user cannot write to, and one whose
    path Debian 12's pkg-config cannot pass to Meson (non-ASCII bytes come out backslash-escaped)."""
    odd = sorted(set(c for c in str(home) if ord(c) > 127), key=str(home).index)
    if odd:
        raise ConfigurationError(
            f"toolchain home {home} has non-ASCII characters ({', '.join(odd)}): Debian 12's pkg-config "
            "escapes them byte by byte and Meson cannot read the NNPACK test package's flags; choose a path "
            "of ASCII characters (spaces are fine) with --home DIR or $NNPACK_TOOLCHAIN_HOME")
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".nntc-write-test-"):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"toolchain home {home} is not writable ({exc.strerror or exc}); choose another with --home DIR "
            "or $NNPACK_TOOLCHAIN_HOME") from None
    return home


def make_settings(*, home: str | None = None, source_cache: str | None = None, jobs: object = None,
                  offline: bool = False, source: list[str] | None = None, backend: str = "fast",
                  tests: str = "quick", ccache: bool = True, base: str | None = None,
                  prebuilt: str = "auto", distribute: str | None = None) -> Settings:
    kwargs: dict[str, Any] = {}
    parsed_jobs = parse_count(jobs, "--jobs", default_hint=f"; leave it out to use every core ({os.cpu_count()})")
    if parsed_jobs is not None:
        kwargs["jobs"] = parsed_jobs
    if base:
        kwargs["base"] = base
    local_sources = parse_local_sources(source)
    check_source_names(local_sources)
    settings = Settings(
        home=Path(home).expanduser().resolve() if home else default_home(),
        source_cache=Path(source_cache).expanduser().resolve() if source_cache else None,
        offline=offline,
        local_sources=local_sources,
        backend=backend,
        tests=tests,
        ccache=ccache,
        prebuilt=prebuilt,
        distribute=distribute,
        **kwargs,
    )
    if distribute:
        from .distribute import parse_scheduler

        parse_scheduler(distribute)  # a bad HOST[:PORT] is refused before any work
    source_date_epoch(None)  # a bad $SOURCE_DATE_EPOCH is refused before any work
    usable_home(settings.home)  # after every option is checked: a bad option creates nothing
    return settings
