"""The MXNet stage without MXNet's source: patches, tree preparation, failures."""

import os
from pathlib import Path

import pytest

from conftest import run_invoke
from nnpack_toolchain.errors import BuildError, PatchError
from nnpack_toolchain.mxnet import apply_patches, classify_make_failure, mxnet_pin, prepare_tree
from nnpack_toolchain.settings import PATCHES_DIR, Settings
from nnpack_toolchain.sources import Patch, Pin
from nnpack_toolchain.targets import TARGETS


def make_tree(root: Path) -> Path:
    tree = root / "src-tree"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "op.cc").write_text("int a = 1;\nint b = 2;\nint c = 3;\n")
    return tree


def make_patch(root: Path, name: str, old: str, new: str) -> Path:
    patch = root / name
    patch.write_text(f"A test patch.\n\n--- a/src/op.cc\n+++ b/src/op.cc\n@@ -1,3 +1,3 @@\n int a = 1;\n-{old}\n+{new}\n int c = 3;\n")
    return patch


def pin_with(patches: list[Path]) -> Pin:
    return Pin(name="mxnet", version="1.9.1", recipe_dir=Path("."), commit=None, mirrors=(),
               patches=tuple(Patch(p, "test patch") for p in patches), stage="mxnet")


def test_patches_apply_in_order(tmp_path):
    tree = make_tree(tmp_path)
    apply_patches(pin_with([make_patch(tmp_path, "0001-b.patch", "int b = 2;", "int b = 20;")]), tree,
                  tmp_path / "log")
    assert "int b = 20;" in (tree / "src" / "op.cc").read_text()


def test_patch_that_no_longer_applies_names_patch_and_file(tmp_path):
    tree = make_tree(tmp_path)
    (tree / "src" / "op.cc").write_text("int a = 1;\nint b = 99;\nint c = 3;\n")  # upstream changed
    bad = make_patch(tmp_path, "0002-stale.patch", "int b = 2;", "int b = 20;")
    with pytest.raises(PatchError) as info:
        apply_patches(pin_with([bad]), tree, tmp_path / "log")
    assert "0002-stale.patch" in info.value.message and "src/op.cc" in info.value.message
    assert info.value.log_path == tmp_path / "log"


def test_failed_preparation_leaves_no_tree(tmp_path):
    tree = make_tree(tmp_path)
    (tree / "src" / "op.cc").write_text("changed\n")
    settings = Settings(home=tmp_path / "home", local_sources={"mxnet": tree})
    pin = pin_with([make_patch(tmp_path, "0001-x.patch", "int b = 2;", "int b = 3;")])
    with pytest.raises(PatchError):
        prepare_tree(pin, settings, TARGETS["arm64"], tmp_path / "log")
    build = tmp_path / "home" / "build" / "arm64" / settings.base
    assert list(build.iterdir()) == [], "neither a tree nor a half-patched temporary copy may stay"


def test_prepared_tree_is_reused_until_inputs_change(tmp_path):
    tree = make_tree(tmp_path)
    settings = Settings(home=tmp_path / "home", local_sources={"mxnet": tree})
    patch = make_patch(tmp_path, "0001-b.patch", "int b = 2;", "int b = 20;")
    prepared, line = prepare_tree(pin_with([patch]), settings, TARGETS["arm64"], tmp_path / "log")
    assert "UNVERIFIED" in line
    (prepared / "build-object.o").write_text("kept")  # what make produced
    again, _ = prepare_tree(pin_with([patch]), settings, TARGETS["arm64"], tmp_path / "log")
    assert (again / "build-object.o").is_file(), "an unchanged tree is reused, so make resumes"
    (again / "README").write_text("same\n")
    os.utime(again / "README", ns=(1_000_000_000, 1_000_000_000))
    (tree / "README").write_text("same\n")
    patch.write_text(patch.read_text().replace("int b = 20;", "int b = 21;"))
    third, _ = prepare_tree(pin_with([patch]), settings, TARGETS["arm64"], tmp_path / "log")
    assert "int b = 21;" in (third / "src" / "op.cc").read_text()
    # a changed patch: the build products carry over and unchanged files keep their timestamps,
    # so make recompiles only what the change affects
    assert (third / "build-object.o").read_text() == "kept"
    assert (third / "README").stat().st_mtime_ns == 1_000_000_000
    assert (third / "src" / "op.cc").stat().st_mtime_ns > 1_000_000_000


def test_out_of_memory_compiler_gets_advice(tmp_path):
    log = tmp_path / "mxnet.log"
    log.write_text("g++: fatal error: Killed signal terminated program cc1plus\nmake: *** Error 1\n")
    error = classify_make_failure(BuildError("make failed", log_path=log), TARGETS["arm64"],
                                  Settings(home=tmp_path, jobs=2))
    assert "ran out of memory" in error.message and "--jobs 1" in error.message and error.log_path == log


def test_mxnet_without_nnpack_build_says_what_to_run(tmp_path):
    proc = run_invoke("mxnet", "--arch", "armhf", "--home", str(tmp_path))
    assert proc.returncode == 8, proc.stderr
    assert "run 'invoke nnpack --arch armv7' first" in proc.stderr


def test_patch_series_is_complete_and_ordered():
    pin = mxnet_pin()
    names = [p.file.name for p in pin.patches]
    assert names == sorted(names) and len(names) == len(list((PATCHES_DIR / "mxnet").glob("*.patch"))) == 10
    for patch in pin.patches:
        text = patch.file.read_text()
        first_paragraph = text.split("\n\n", 1)[0]
        assert len(first_paragraph) > 40, f"{patch.file.name} must start with its description"
        assert "\n+++ b/" in text
    series = "".join(p.file.read_text() for p in pin.patches)
    for needed in ("nnp_convolution_inference", "nnp_max_pooling_output", "nnp_fully_connected_inference",
                   "MXNET_CPU_NNPACK_NTHREADS", "MXNET_NNPACK_STRICT_1_0", "\"NNPACK\"", "np.bool_",
                   "nnp_convolution_transform_strategy_precompute", "nnp_convolution_transform_strategy_reuse",
                   "std::string(\"auto\")", "def nnpack_tuning_pending"):
        assert needed in series, needed


def test_new_flags_remove_makes_outputs_once(tmp_path: Path) -> None:
    """make compares timestamps only: nnvm's, dmlc-core's and MXNet's own objects must go when the
    flags change (armv7's -fno-strict-aliasing: before, MXNet's objects kept the old flags)."""
    from nnpack_toolchain.mxnet import MAIN_OUTPUTS, SUBMAKE_OUTPUTS, forget_make_outputs

    def populate() -> None:
        for name in (*SUBMAKE_OUTPUTS, *MAIN_OUTPUTS):
            path = tmp_path / name
            if name.endswith("build"):
                (path / "src").mkdir(parents=True, exist_ok=True)
                (path / "src" / "x.o").write_text("object")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("a")

    populate()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "c_api.cc").write_text("source")
    forget_make_outputs(tmp_path, ["ADD_CFLAGS=-O2"])
    assert not any((tmp_path / name).exists() for name in (*SUBMAKE_OUTPUTS, *MAIN_OUTPUTS))
    assert (tmp_path / "src" / "c_api.cc").is_file(), "a source was removed"
    populate()
    forget_make_outputs(tmp_path, ["ADD_CFLAGS=-O2"])  # same flags: kept
    assert all((tmp_path / name).exists() for name in (*SUBMAKE_OUTPUTS, *MAIN_OUTPUTS))
    forget_make_outputs(tmp_path, ["ADD_CFLAGS=-O2 -fno-strict-aliasing"])
    assert not (tmp_path / "build" / "src" / "x.o").exists() and not (tmp_path / "lib" / "libmxnet.so").exists()
    assert not (tmp_path / "3rdparty/tvm/nnvm/lib/libnnvm.a").exists()
