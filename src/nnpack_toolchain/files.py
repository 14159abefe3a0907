"""Writing files so that a reader (or a rerun after a crash) sees the old file or the whole new one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike[str], text: str, *, tmp_dir: Path | None = None) -> Path:
    """Write text to a temporary file next to path (or in tmp_dir, on the same file system), fsync
    it, then rename it over path.

    A failure at any point leaves the previous file (or none) and no temporary file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=tmp_dir or target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def save_figure(figure: Any, plt: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a plot) and close it."""
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)
    return path


class ResultsJson:
    """A long run's results as `<stem>.json` in directory: after every step `<stem>.partial.json`
    (`"partial": true`) holds what is done so far, readable while (or if never) the rest is done;
    `save` writes the complete file and removes the partial one. A complete file from an earlier
    run stays until replaced."""

    def __init__(self, directory: Path, stem: str) -> None:
        self.path = directory / f"{stem}.json"
        self.partial_path = directory / f"{stem}.partial.json"

    def save_partial(self, results: dict[str, Any]) -> Path:
        return atomic_write_text(self.partial_path, json.dumps({**results, "partial": True}, indent=2) + "\n")

    def save(self, results: dict[str, Any]) -> Path:
        atomic_write_text(self.path, json.dumps(results, indent=2) + "\n")
        self.partial_path.unlink(missing_ok=True)
        return self.path
