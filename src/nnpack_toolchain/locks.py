"""Exclusive use of a shared directory by one `invoke` at a time (another shell waits and says so).

`flock` on a lock file: released by the kernel when the process dies, so a killed build never
leaves a stale lock. Re-entrant within one thread (a step that holds a lock may call code that
takes it again).
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import log

_held = threading.local()


@contextmanager
def exclusive(lock_file: Path, waiting: str) -> Iterator[None]:
    """Hold lock_file exclusively; print `waiting` once if another process holds it."""
    key = str(lock_file.resolve())
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(waiting)
            fcntl.flock(lock, fcntl.LOCK_EX)
        depth[key] = 1
        try:
            yield
        finally:
            depth.pop(key, None)
            fcntl.flock(lock, fcntl.LOCK_UN)
