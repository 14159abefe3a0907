"""--source mxnet=DIR: an edit inside DIR rebuilds (issue 11, defect 3); a tree that is not MXNet
1.9.1 with its submodules is refused before anything is built, naming what is missing."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from conftest import run_invoke
from nnpack_toolchain import mxnet
from nnpack_toolchain.errors import ConfigurationError
from nnpack_toolchain.local_source import check_tree, tree_digest
from nnpack_toolchain.settings import RECIPES_DIR, Settings
from nnpack_toolchain.targets import TARGETS

BASE_H = """#ifndef MXNET_BASE_H_
/*! \\brief major version */
#define MXNET_MAJOR {major}
/*! \\brief minor version */
#define MXNET_MINOR {minor}
/*! \\brief patch version */
#define MXNET_PATCH {patch}
#endif
"""
SUBMODULE_FILES = ("3rdparty/dmlc-core/include/dmlc/base.h", "3rdparty/tvm/nnvm/include/nnvm/graph.h",
                   "3rdparty/dlpack/include/dlpack/dlpack.h", "3rdparty/ps-lite/include/ps/ps.h")


def fake_mxnet(root: Path, version: tuple[int, int, int] = (1, 9, 1), without: tuple[str, ...] = ()) -> Path:
    """A tree with the layout of MXNet's source release (the files the check looks at, and one source)."""
    (root / "include" / "mxnet").mkdir(parents=True)
    major, minor, patch = version
    (root / "include" / "mxnet" / "base.h").write_text(BASE_H.format(major=major, minor=minor, patch=patch))
    for relative in SUBMODULE_FILES:
        if not any(relative.startswith(w + "/") for w in without):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text("// stub\n")
    (root / "src").mkdir()
    (root / "src" / "operator.cc").write_text("int op() { return 1; }\n")
    return root


def test_a_release_tree_with_its_submodules_passes(tmp_path: Path) -> None:
    check_tree("mxnet", fake_mxnet(tmp_path / "mx"), RECIPES_DIR / "mxnet")


def test_a_missing_submodule_is_named(tmp_path: Path) -> None:
    tree = fake_mxnet(tmp_path / "mx", without=("3rdparty/tvm", "3rdparty/ps-lite"))
    with pytest.raises(ConfigurationError, match=r"submodule\(s\) missing: 3rdparty/tvm, 3rdparty/ps-lite") as error:
        check_tree("mxnet", tree, RECIPES_DIR / "mxnet")
    assert "git submodule update --init" in error.value.message


def test_another_mxnet_version_is_refused(tmp_path: Path) -> None:
    tree = fake_mxnet(tmp_path / "mx", version=(1, 8, 0))
    with pytest.raises(ConfigurationError, match=r"it is version 1\.8\.0 .*the pin is 1\.9\.1"):
        check_tree("mxnet", tree, RECIPES_DIR / "mxnet")


def test_the_cli_refuses_a_directory_that_is_not_mxnet(tmp_path: Path) -> None:
    (tmp_path / "not-mxnet").mkdir()
    (tmp_path / "not-mxnet" / "README").write_text("hello\n")
    proc = run_invoke("mxnet", "--arch", "x86_64", "--source", f"mxnet={tmp_path / 'not-mxnet'}",
                      "--home", str(tmp_path / "home"))
    assert proc.returncode == 2, proc.stderr
    assert "no include/mxnet/base.h" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "home" / "build").exists()


def test_tree_digest_follows_content_not_timestamps(tmp_path: Path) -> None:
    tree = fake_mxnet(tmp_path / "mx")
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)  # new timestamps, same content
    assert tree_digest(copy) == tree_digest(tree)
    (copy / "src" / "operator.cc").write_text("int op() { return 2; }\n")
    assert tree_digest(copy) != tree_digest(tree)


def test_an_edit_inside_the_local_tree_prepares_the_build_tree_again(tmp_path: Path) -> None:
    local = fake_mxnet(tmp_path / "mx")
    settings = Settings(home=tmp_path / "home", local_sources={"mxnet": local})
    pin = dataclasses.replace(mxnet.mxnet_pin(), patches=())  # the patches need the real release
    log_path = tmp_path / "prepare.log"
    tree, _ = mxnet.prepare_tree(pin, settings, TARGETS["x86_64"], log_path)
    assert (tree / "src" / "operator.cc").read_text() == "int op() { return 1; }\n"
    stamp = (tree / ".nntc-prepared").read_text()

    (local / "src" / "operator.cc").write_text("int op() { return 2; }\n")
    tree, _ = mxnet.prepare_tree(pin, settings, TARGETS["x86_64"], log_path)
    assert (tree / "src" / "operator.cc").read_text() == "int op() { return 2; }\n", "the edit was not picked up"
    assert (tree / ".nntc-prepared").read_text() != stamp  # and the MXNet step's digest changes with it
