"""One real armv7 layer cell of `invoke bench --count`, counted twice with QEMU's default plugin counter and
twice with inline=on (CountOptions.inline, `--inline`): wall time of each and the largest difference of the
instructions per image. Needs an armv7 wheel in the toolchain home (invoke build --arch armv7).

    PYTHONPATH=src python3 benchmarks/count_inline_compare.py
"""
import tempfile
import time
from pathlib import Path

from nnpack_toolchain.count_layers import ALWAYS, MXNET, ConvShape, relative_difference
from nnpack_toolchain.count_cells import CountOptions, layer_cell
from nnpack_toolchain.count_runner import CellRunner
from nnpack_toolchain.settings import Settings
from nnpack_toolchain.smoke import current_wheel
from nnpack_toolchain.target_env import python_env
from nnpack_toolchain.targets import TARGETS

settings = Settings()
target = TARGETS["armv7"]
built = current_wheel(target, settings)  # the wheel invoke wheel last made, and its sha256
wheel = Path(built.wheel)
env = python_env(target, settings)
tmp = Path(tempfile.mkdtemp(prefix="inline-"))
site = tmp / "site"
env.install_wheel(wheel, site, tmp / "pip.log")
shape = ConvShape(batch=1, in_c=64, in_h=28, in_w=28, out_c=64, kernel=(3, 3), pad=(1, 1))
cell = layer_cell(shape, [MXNET, ALWAYS, "NNPACK wt8x8 precompute"])
out = {}
for inline in (False, True, False, True):
    runner = CellRunner(env, site, tmp / f"work-{inline}", settings, CountOptions(inline=inline, jobs=1),
                        {"wheel_sha256": built.wheel_sha256}, tmp / "count.log")
    t = time.monotonic()
    m = runner.measure(cell, use_cache=False)
    secs = time.monotonic() - t
    print(f"inline={inline}: {secs:.0f} s", {k: v.insns_per_image for k, v in m.items()}, flush=True)
    out.setdefault(inline, []).append((secs, {k: v.insns_per_image for k, v in m.items()}))
for k in out[False][0][1]:
    vals = [r[1][k] for runs in out.values() for r in runs]
    print(k, "largest relative difference", max(relative_difference(a, b) for a in vals for b in vals))
