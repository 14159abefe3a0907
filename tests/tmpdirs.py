"""Temporary directories for module-scoped fixtures, removed with the module.

A module's fixture often holds a toolchain home (cross compilers, sysroots: 0.2-2 GB). With
`tmp_path_factory.mktemp` it stays until the whole run ends, so a run's disk use grows with every
module (a CI run peaked at 10.6 GB). `module_tmp` removes what it made when the module's tests are
done, unless one of them failed: then, like a failed test's `tmp_path`, it stays for inspection.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_tmp(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
