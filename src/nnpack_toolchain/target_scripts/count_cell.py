"""One cell of the instruction-count benchmark (`invoke bench --count`), run by the target's
Python under QEMU's instruction-count plugin (one process per cell).

A cell is a whole network (a zoo symbol file, random weights from a fixed seed) or a single
Convolution layer (--layer JSON: a network of that one layer) at one batch size, bound once, and
a list of variants (--variants FILE, JSON), each a way to run it:

  {"name": "MXNet", "policy": "never"}            MXNet's own code (im2col + OpenBLAS)
  {"name": "NNPACK always", "policy": "always"}   NNPACK for every eligible layer, its own algorithm
  {"name": "NNPACK wt8x8", "policy": "auto", "tuning": TABLE}
      the auto policy with its choices pinned from TABLE (mx.runtime.nnpack_import_tuning). That
      is how one NNPACK algorithm is forced on a layer: a table whose plan for the layer's shape
      says "NNPACK wt8x8", "NNPACK ft16x16 precompute", "MXNet", ... (the host runs the cell
      with MXNET_ENFORCE_DETERMINISM=1: a shape the table does not list runs NNPACK's own
      algorithm, and nothing is timed).

Why forks: importing mxnet alone is about 6e9 guest instructions whose count differs from run
to run by some 1e5 (it is not the work being measured, but it is larger than a small layer's
pass). So the start-up is done once, and each variant runs in a forked child (policy, pinned
table, --warmup passes: workspaces, NNPACK's initialisation, the second call that builds a
precomputed kernel transform), which forks four grandchildren in turn doing K1, K2, K1, K2
counted passes and exiting (after one uncounted fork: a process's first fork costs it more than
later ones). QEMU's plugin prints each process's total when it exits, a forked
one's including everything before its fork: the four grandchildren's totals differ only by the
passes and by the child's own few instructions between two forks (d), which the repeated K1 and
K2 measure. The host takes the per-pass work from them (count_layers.fork_counts).

The plugin's log then holds, in order: per variant the five grandchildren's totals (the first
uncounted) and the child's, then this process's. Each child checks that its pinned choices are the ones that ran
(exported table, NNPACK's call counter in its last warm-up pass, a held transform) and prints
one `RESULT {json}` line; a failure exits 1 with a message on stderr.

    python count_cell.py --models DIR --network resnet18 --batch 1 --variants v.json --passes 0,1
    python count_cell.py --layer '{"input": [1, 16, 16, 16], "num_filter": 16, "kernel": [3, 3],
        "pad": [1, 1]}' --variants v.json --passes 0,1
"""

import argparse
import gc
import json
import os
import sys

import mxnet as mx

from bench_models import SETTLE_PASSES, bind, bind_layer, emit, tuning_pending  # this script's directory
from forking import fork_and_wait
from nnpack_layers import set_policy


def fail(message):
    print(f"count_cell: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def one_pass(executor):
    executor.forward(is_train=False)
    executor.outputs[0].wait_to_read()


def conv_calls():
    counts = mx.runtime.nnpack_call_counts() if hasattr(mx.runtime, "nnpack_call_counts") else None
    return (counts or {}).get("convolution", 0)


def layer_symbol(spec):
    attrs = {"num_filter": spec["num_filter"], "kernel": tuple(spec["kernel"]),
             "stride": tuple(spec.get("stride") or (1, 1)), "pad": tuple(spec.get("pad") or (0, 0)),
             "no_bias": bool(spec.get("no_bias", False))}
    if spec.get("num_group", 1) != 1:
        attrs["num_group"] = spec["num_group"]
    if spec.get("dilate"):
        attrs["dilate"] = tuple(spec["dilate"])
    return mx.sym.Convolution(mx.sym.Variable("data"), name="conv", **attrs)


def pinned_problems(imported, exported):
    """Imported plans that did not end up pinned to their choice (the build could not run it)."""
    have = {(p["layer"], tuple(p["shape"]), int(p.get("transforms", 0))): p["choice"]
            for p in exported.get("plans", [])}
    problems = []
    for plan in imported.get("plans", []):
        key = (plan["layer"], tuple(plan["shape"]), int(plan.get("transforms", 0)))
        if have.get(key) != plan["choice"]:
            problems.append(f"{plan['layer']} {','.join(map(str, plan['shape']))}: pinned {plan['choice']!r}, "
                            f"runs {have.get(key)!r}")
    return problems


def openblas_core():
    """The kernels of the OpenBLAS libraries loaded (the wheel grafts its own, libopenblasp-*, which
    MXNet's own convolutions use; numpy loads the system's), as "file: core": counts depend on them."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = [line.split()[-1] for line in maps if "openblas" in line and line.split()[-1].startswith("/")]
    except OSError:
        paths = []
    found = []
    for name in sorted(dict.fromkeys(paths), key=lambda path: "openblas" not in os.path.basename(path)):
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            found.append(f"{os.path.basename(name)}: {lib.openblas_get_corename().decode()}")
        except (OSError, AttributeError):
            continue
    return found




def run_variant(executor, variant, warmup, passes, batch):
    """In a forked child: set the variant up, warm up, fork the counted grandchildren, report."""
    imported = variant.get("tuning")
    if imported:
        mx.runtime.nnpack_import_tuning(imported)
    set_policy(variant["policy"])
    # With MXNET_ENFORCE_DETERMINISM=1 (the host's setting) auto measures nothing: a shape without a
    # pinned choice (a FullyConnected layer) runs NNPACK's own algorithm and stays "pending" for ever.
    # Without it, auto times its choices on the first calls: pass until it settles.
    deterministic = bool((mx.runtime.nnpack_status() or {}).get("deterministic"))
    timed = variant["policy"] == "auto" and not deterministic
    calls = 0
    done = 0
    while done < warmup or (timed and tuning_pending() and done < SETTLE_PASSES):
        before = conv_calls()
        one_pass(executor)
        calls = conv_calls() - before  # of the last warm-up pass: what every counted pass runs
        done += 1
    pending = tuning_pending() if timed else 0
    if pending:
        fail(f"{variant['name']}: the auto policy is still measuring {pending} layer shape(s) after {done} passes")
    exported = json.loads(mx.runtime.nnpack_export_tuning() or "{}") if variant["policy"] == "auto" else {}
    problems = pinned_problems(imported, exported) if imported else []
    if problems:
        fail(f"{variant['name']}: pinned choice not used: " + "; ".join(problems))
    status = mx.runtime.nnpack_status() if hasattr(mx.runtime, "nnpack_status") else None

    def counted(count):
        def work():
            for _ in range(count):
                one_pass(executor)
        return work

    gc.collect()
    gc.disable()  # no collection at a different point between two forks
    # The first fork of a process costs its parent some 1e3 instructions more than later ones
    # (one-time initialisation): an uncounted fork first, then K1, K2, K1, K2.
    for count in (passes[0], passes[0], passes[1], passes[0], passes[1]):
        if not fork_and_wait(counted(count), "count_cell"):
            fail(f"{variant['name']}: a counted run of {count} passes failed")
    emit(kind="count", variant=variant["name"], policy=variant["policy"], batch=batch, warmup=done,
         passes=list(passes), nnpack_conv_calls_per_pass=calls, transforms=(status or {}).get("transforms"),
         transform_bytes=(status or {}).get("transform_bytes"), workspace_bytes=(status or {}).get("workspace_bytes"),
         memory_budget_bytes=(status or {}).get("memory_budget_bytes"),
         conv_choices=sorted({p["choice"] for p in exported.get("plans", []) if p["layer"] == "Convolution"}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", help="directory of <network>-symbol.json files")
    parser.add_argument("--network")
    parser.add_argument("--layer", help="a Convolution as JSON: input [N,C,H,W], num_filter, kernel, stride, pad, "
                                        "no_bias, num_group, dilate")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", required=True, help="JSON file: a list of {name, policy, tuning}")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--passes", default="0,1", help="K1,K2: counted passes of the grandchildren")
    args = parser.parse_args()
    if (args.network is None) == (args.layer is None):
        fail("give --network (with --models) or --layer")
    passes = tuple(int(p) for p in args.passes.split(","))
    with open(args.variants) as stream:
        variants = json.load(stream)
    if args.layer is not None:
        spec = json.loads(args.layer)
        batch = spec["input"][0]
        executor = bind_layer(layer_symbol(spec), tuple(spec["input"]))
    else:
        batch = args.batch
        executor = bind(mx.sym.load(os.path.join(args.models, f"{args.network}-symbol.json")), batch)
    mx.nd.waitall()
    emit(kind="cell", network=args.network, layer=json.loads(args.layer) if args.layer else None, batch=batch,
         variants=[v["name"] for v in variants], engine=os.environ.get("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice"),
         openblas=openblas_core())
    for variant in variants:
        if not fork_and_wait(lambda: run_variant(executor, variant, args.warmup, passes, batch), "count_cell"):
            fail(f"variant {variant['name']} failed (see above)")


if __name__ == "__main__":
    main()
