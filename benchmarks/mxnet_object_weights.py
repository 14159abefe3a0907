#!/usr/bin/env python3
"""The relative cost of each MXNet object file, for the MXNet step's time-left estimate.

MXNet's 362 objects take from a second to several minutes each (the numpy and tensor operator
files instantiate kernels for every dtype), and make builds the quick ones first, so a rate of
objects per minute says "10 min left" when two hours are. An object's size tracks its compile time
well enough for an estimate: in the armv7 build of session 11 (object mtimes, 2 jobs) the gap before
each object's completion correlates 0.71 with its size, and the time left estimated from sizes was
within 20-35 % from 10 % of the build on, where counting objects was off by 2-3x.

Reads a finished build tree and writes {object name as make's `-o` gives it: KiB}, the name
relative to the directory the (sub-)make runs in: `build/src/...o` for MXNet and nnvm,
`recordio.o` for dmlc-core (two names shared by MXNet and nnvm keep the larger size):

    python3 benchmarks/mxnet_object_weights.py ~/.cache/nnpack-toolchain/build/armv7/debian11/mxnet-1.9.1 \\
        > src/nnpack_toolchain/mxnet_objects.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUB_MAKES = ("3rdparty/tvm/nnvm", "3rdparty/dmlc-core")


def object_weights(tree: Path) -> dict[str, int]:
    weights: dict[str, int] = {}
    for path in sorted(tree.rglob("*.o")):
        relative = path.relative_to(tree).as_posix()
        for sub in SUB_MAKES:
            if relative.startswith(sub + "/"):
                relative = relative[len(sub) + 1:]
                break
        kib = max(1, round(path.stat().st_size / 1024))
        weights[relative] = max(kib, weights.get(relative, 0))
    return weights


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: mxnet_object_weights.py BUILT_MXNET_TREE > mxnet_objects.json", file=sys.stderr)
        return 2
    weights = object_weights(Path(argv[0]))
    if not weights:
        print(f"error: no object files under {argv[0]}: give a tree MXNet's make has built", file=sys.stderr)
        return 1
    json.dump(weights, sys.stdout, indent=0, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
