"""MXNet 1.9.1 with NNPACK from the pinned source release (70-90 minutes per target on 2 cores, cold ccache).

Marked `mxnet_build` and left out of the default run; run with `python3 -m pytest -m mxnet_build`.
Needs the release tarball in the source cache (skips naming it otherwise) and builds NNPACK first.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_sources
from nnpack_toolchain.mxnet import build_mxnet, mxnet_pin, prepare_tree
from nnpack_toolchain.nnpack import build_nnpack, pins_for_backend
from nnpack_toolchain.targets import TARGETS

pytestmark = pytest.mark.mxnet_build
LAYER_CHECK = Path(__file__).resolve().parents[1] / "src" / "nnpack_toolchain" / "target_scripts" / "nnpack_layers.py"


def test_patch_series_applies_to_the_pinned_release(build_settings, tmp_path):
    require_sources("mxnet")
    tree, line = prepare_tree(mxnet_pin(), build_settings, TARGETS["x86_64"], tmp_path / "prepare.log")
    assert "verified" in line
    assert (tree / "src" / "operator" / "nnpack" / "nnpack_ops.cc").is_file()


@pytest.mark.parametrize("target_name", ["x86_64", "arm64", "armv7"])
def test_libmxnet_links_nnpack_and_reruns_nothing(target_name, build_settings):
    target = TARGETS[target_name]
    require_sources("mxnet", *[p.name for p in pins_for_backend(target.nnpack_backend)])
    build_nnpack(target, build_settings)
    result = build_mxnet(target, build_settings)
    assert "libnnpack.so" in result.needed
    file_output = subprocess.run(["file", "-L", result.library], capture_output=True, text=True).stdout
    assert {"x86_64": "x86-64", "armv7": "ARM, EABI5", "arm64": "ARM aarch64"}[target_name] in file_output
    assert build_mxnet(target, build_settings).up_to_date
    if target.is_native:
        env = dict(os.environ, PYTHONPATH=str(Path(result.library).parents[1] / "python"),
                   MXNET_LIBRARY_PATH=result.library)
        proc = subprocess.run([sys.executable, str(LAYER_CHECK)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
