"""Glue between Invoke tasks and the stages: option parsing and error reporting."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from rich.markup import escape

from .errors import ToolchainError
from .log import console
from .settings import Settings, default_home, parse_local_sources

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Expected failures print one line (plus the log path) and exit with their code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ToolchainError as error:
            console.print(f"[bold red]error:[/bold red] {escape(error.message)}")
            if error.log_path:
                console.print(f"full log: {error.log_path}")
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


def make_settings(*, home: str | None = None, source_cache: str | None = None, jobs: int | None = None,
                  offline: bool = False, source: list[str] | None = None, backend: str = "fast",
                  tests: str = "quick", ccache: bool = True) -> Settings:
    kwargs: dict[str, Any] = {}
    if jobs:
        kwargs["jobs"] = jobs
    return Settings(
        home=Path(home).expanduser().resolve() if home else default_home(),
        source_cache=Path(source_cache).expanduser().resolve() if source_cache else None,
        offline=offline,
        local_sources=parse_local_sources(source),
        backend=backend,
        tests=tests,
        ccache=ccache,
        **kwargs,
    )
