"""Writing files so that a reader (or a rerun after a crash) sees the old file or the whole new one."""

from __future__ import annotations

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
