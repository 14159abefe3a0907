"""One cell of the memory benchmark, run by the target's Python in a process of its own.

A network at one batch size under one policy (never, always, auto): the first pass, then for
auto the passes until its tuning settles (the cost of the tuning phase: passes and seconds,
first pass included), then --iterations timed passes. The process's peak RSS (getrusage's
ru_maxrss: the high-water mark of the whole process, MXNet, NNPACK, weights and Python) is only
meaningful because nothing else ran in this process. Prints one `RESULT {json}` line.

    python memory_cell.py --models DIR --network vgg16 --batch 1 --policy auto --iterations 5
"""

import argparse
import os
import resource
import statistics
import time

import mxnet as mx

from bench_models import SETTLE_PASSES, bind, emit, tuning_pending  # this script's directory
from nnpack_layers import set_policy


def one_pass(executor):
    begin = time.perf_counter()
    executor.forward(is_train=False)
    executor.outputs[0].wait_to_read()
    return time.perf_counter() - begin


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True)
    parser.add_argument("--network", required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--policy", required=True, choices=("never", "always", "auto"))
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    set_policy(args.policy)  # before the first layer call: nothing of another policy is kept
    symbol = mx.sym.load(os.path.join(args.models, f"{args.network}-symbol.json"))
    executor = bind(symbol, args.batch)
    mx.nd.waitall()
    rss_bound = peak_rss_bytes()
    settle_seconds = one_pass(executor)
    settle_passes = 1
    while args.policy == "auto" and tuning_pending() and settle_passes < SETTLE_PASSES:
        settle_seconds += one_pass(executor)
        settle_passes += 1
    samples = [one_pass(executor) for _ in range(args.iterations)]
    status = mx.runtime.nnpack_status() if hasattr(mx.runtime, "nnpack_status") else {}
    emit(kind="memory", network=args.network, batch=args.batch, policy=args.policy,
         peak_rss_bytes=peak_rss_bytes(), rss_after_bind_bytes=rss_bound,
         settle_passes=settle_passes if args.policy == "auto" else 0,
         settle_seconds=settle_seconds if args.policy == "auto" else 0.0,
         pending_after_settle=tuning_pending() if args.policy == "auto" else 0,
         seconds=statistics.median(samples), samples=samples,
         transform_bytes=status.get("transform_bytes"), workspace_bytes=status.get("workspace_bytes"),
         memory_budget_bytes=status.get("memory_budget_bytes"))


if __name__ == "__main__":
    main()
