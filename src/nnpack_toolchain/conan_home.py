"""Is the private Conan home one this toolchain's Conan can use?

Conan 2 rewrites `<home>/version.txt` on start and migrates (or, for a newer 2.x, downgrades)
the home silently; what it cannot handle is a home of another major version (Conan 1's layout,
settings.yml) or a package database whose tables differ from its own: it then stops with a
sqlite traceback in the middle of a build. Checked before Conan first touches the home.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

from . import log
from .errors import ConfigurationError

VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def conan_version() -> tuple[int, int, int]:
    from conan import __version__

    return parse_version(__version__) or (0, 0, 0)


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = VERSION.match(text.strip())
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


def expected_tables() -> dict[str, list[str]]:
    """The columns of the tables of Conan's package database, as the installed Conan defines them."""
    try:
        from conan.internal.cache.db.packages_table import PackagesDBTable
        from conan.internal.cache.db.recipes_table import RecipesDBTable
    except ImportError:  # a Conan that moved them: only the version is checked
        return {}
    return {t.table_name: [c[0] for c in t.columns_description] for t in (RecipesDBTable, PackagesDBTable)}


def database_problem(db: Path) -> str | None:
    """What is wrong with a Conan package database for this Conan, or None."""
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
            for table, columns in expected_tables().items():
                found = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
                if found != columns:
                    return (f"its package database {db} has table {table!r} with columns {found or 'none'}, "
                            f"not {columns}")
    except sqlite3.Error as exc:
        return f"its package database {db} cannot be read ({exc})"
    return None


def check_conan_home(home: Path) -> None:
    """Refuse, naming what to do, a Conan home that this toolchain's Conan cannot use."""
    ours = conan_version()
    ours_text = ".".join(map(str, ours))
    version_file = home / "version.txt"
    made_by = version_file.read_text(errors="replace").strip() if version_file.is_file() else ""
    if not made_by and (home / "conan.conf").is_file():
        made_by = "1.x"  # Conan 1 wrote conan.conf; Conan 2 writes global.conf
    theirs = parse_version(made_by) or ((1, 0, 0) if made_by == "1.x" else None)
    remedy = (f"remove {home} (it holds only Conan packages, which the next 'invoke nnpack' builds or downloads "
              "again, and the remotes of 'invoke use-remote') or choose another --home")
    if theirs is not None and theirs[0] != ours[0]:
        raise ConfigurationError(f"the Conan home {home} was made by Conan {made_by}; this toolchain runs "
                                 f"Conan {ours_text}, which cannot use it: {remedy}")
    db = home / "p" / "cache.sqlite3"
    problem = database_problem(db) if db.is_file() else None
    if problem:
        by = (f"was made by Conan {made_by}" if theirs not in (None, ours)
              else "is damaged or was made by another Conan version")
        raise ConfigurationError(f"the Conan home {home} {by}: {problem}; this toolchain's "
                                 f"Conan {ours_text} cannot use it: {remedy}")
    if theirs is not None and theirs > ours:
        log.warn(f"the Conan home {home} was last used by Conan {made_by}, newer than this toolchain's "
                 f"Conan {ours_text}; Conan downgrades it (if a build then fails, {remedy})")
