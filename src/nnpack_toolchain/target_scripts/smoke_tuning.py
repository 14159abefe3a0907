"""The smoke suite's checks of the auto policy's tuning and settings (review of the issue-12 series).

Each check returns (ok, detail) for smoke_suite.timed() and can fail on the draft series that the
review read; its docstring says how.
"""

import json

import mxnet as mx
import numpy as np

from nnpack_layers import RTOL, counts, set_policy
from smoke_issue12 import (CONV_DATA, CONV_FILTERS, CONV_KEY, conv_executor, forward, pin_precompute, reference_conv,
                           rel_err, require, transforms_held)

SETTLE_CAP = 150  # forward passes allowed for the two-layer graph to settle


def two_layer_executor(rng):
    """Two convolutions of one shape (CONV_KEY) in one graph, as ResNet's and VGG's blocks have."""
    data = mx.sym.Variable("data")
    first = mx.sym.Convolution(data, kernel=(3, 3), pad=(1, 1), num_filter=CONV_FILTERS, name="conv1")
    second = mx.sym.Convolution(mx.sym.relu(first), kernel=(3, 3), pad=(1, 1), num_filter=CONV_FILTERS,
                                name="conv2")
    weight = (CONV_FILTERS, CONV_DATA[1], 3, 3)
    args = {"data": mx.nd.array(rng.uniform(-1, 1, CONV_DATA).astype(np.float32)),
            "conv1_weight": mx.nd.array(rng.uniform(-0.3, 0.3, weight).astype(np.float32)),
            "conv1_bias": mx.nd.zeros(CONV_FILTERS),
            "conv2_weight": mx.nd.array(rng.uniform(-0.3, 0.3, weight).astype(np.float32)),
            "conv2_bias": mx.nd.zeros(CONV_FILTERS)}
    return second.bind(mx.cpu(), args=args, grad_req="null")


def shared_shape_precompute_measured():
    """Review bug 1. Two layers of one shape in a graph (batch-1 inference). Each layer's first
    call of a precompute choice builds its own transform and is not timed. Draft series: those
    first builds counted as cold calls and closed the choice unmeasured once two layers had built
    one, so no precompute choice of a shared shape was ever timed (ResNet-18 and VGG-16 have
    several). Now: the settled plan has a median for every precompute choice it tried."""
    def check():
        export, release, pending = require("nnpack_export_tuning", "nnpack_release_memory",
                                           "nnpack_tuning_pending")
        executor = two_layer_executor(np.random.RandomState(11))
        set_policy("never")
        reference = forward(executor)
        release(forget_tuning=True)
        set_policy("auto")
        passes, worst = 0, 0.0
        while passes < SETTLE_CAP:
            worst = max(worst, rel_err(forward(executor), reference))
            passes += 1
            if pending() == 0:
                break
        plans = [p for p in json.loads(export())["plans"]
                 if p["layer"] == "Convolution" and p["shape"] == CONV_KEY and p["transforms"] == 1]
        timed = sorted(n for p in plans for n in p["median_ms"] if n.endswith(" precompute"))
        ok = len(plans) == 1 and len(timed) >= 1 and worst <= RTOL
        return ok, (f"settled after {passes} passes: {pending() == 0}; precompute choices timed: {timed}; "
                    f"rel err {worst:.1e}")
    return check


def settings_checked_before_applied():
    """Review nit 3. nnpack_configure(policy='never', verbose=2): the bad verbose value must
    raise and change nothing. Draft series: keys were applied one at a time, so the policy was
    already 'never' when verbose failed."""
    def check():
        configure, status = require("nnpack_configure", "nnpack_status")
        set_policy("always")
        try:
            configure(policy="never", verbose=2)
            raised = False
        except mx.base.MXNetError:
            raised = True
        policy = status()["policy"]
        set_policy("auto")
        return raised and policy == "always", f"raised: {raised}; policy afterwards {policy!r} (want 'always')"
    return check


def unlimited_budget():
    """Review bug 8. memory_budget_mb='inf' (or 1e20) means no limit. Draft series: the byte
    count overflowed a size_t (undefined; 0 on x86-64), so nothing could be precomputed."""
    def check():
        configure, status = require("nnpack_configure", "nnpack_status")
        before = status()["memory_budget_bytes"]
        got = {}
        try:
            for value in ("inf", "1e20"):
                configure(memory_budget_mb=value)
                got[value] = status()["memory_budget_bytes"]
        finally:
            configure(memory_budget_mb=repr(before / float(1 << 20)))
        ok = all(v >= 2 ** 32 - 1 for v in got.values())
        return ok, f"budget bytes {got} (want the largest size_t)"
    return check


def precompute_off():
    """Review bug 3's remedy. nnpack_configure(precompute=False) (MXNET_NNPACK_PRECOMPUTE=0, for
    weights written behind the engine's back): a graph node whose pinned choice precomputes holds
    no transform, and the output is right. Draft series: no such setting (TypeError)."""
    def check():
        configure, status = require("nnpack_configure", "nnpack_status")
        rng = np.random.RandomState(12)
        weight = rng.uniform(-0.5, 0.5, (CONV_FILTERS, CONV_DATA[1], 3, 3)).astype(np.float32)
        data = rng.uniform(-1, 1, CONV_DATA).astype(np.float32)
        reference = reference_conv(weight, data)
        pin_precompute()
        set_policy("auto")
        configure(precompute=False)
        try:
            executor = conv_executor(weight, data)
            errs = [rel_err(forward(executor), reference) for _ in range(3)]
            held, flag = transforms_held(), status()["precompute"]
            del executor
        finally:
            configure(precompute=True)
        ok = held == 0 and flag == 0 and max(errs) <= RTOL
        return ok, f"transforms held {held}; status precompute {flag}; rel err {max(errs):.1e}"
    return check


def deterministic_auto():
    """Review bug 10 (run in a process with MXNET_ENFORCE_DETERMINISM=1). The auto policy then
    measures nothing: every call runs NNPACK's own algorithm choice (imported choices would be
    used), so six calls give the same bytes. Draft series: auto alternated between MXNet's code
    and each NNPACK algorithm on these calls (outputs differ in the last bits), and
    nnpack_status() had no 'deterministic'."""
    def check():
        (status,) = require("nnpack_status")
        rng = np.random.RandomState(13)
        weight = rng.uniform(-0.5, 0.5, (CONV_FILTERS, CONV_DATA[1], 3, 3)).astype(np.float32)
        data = rng.uniform(-1, 1, CONV_DATA).astype(np.float32)
        set_policy("auto")
        executor = conv_executor(weight, data)
        before = counts()
        outputs = [forward(executor) for _ in range(6)]
        on_nnpack = counts()[0] - before[0]
        same = all(o.tobytes() == outputs[0].tobytes() for o in outputs)
        flag = status().get("deterministic")
        ok = flag == 1 and same and on_nnpack == 6
        return ok, f"deterministic {flag}; identical outputs: {same}; NNPACK calls +{on_nnpack} (want 6)"
    return check
