"""Checks, on the target, that the patched MXNet runs eligible layers on NNPACK correctly.

For each case the same layer runs twice in one process: with the NNPACK policy never (MXNet's
own code) and with NNPACK allowed (policy always), switched with set_policy(). Eligible layers
must match within a tolerance and be counted by MXNNPACKGetCallCounts; ineligible ones must give
exactly MXNet's result and not be counted.
Prints one line per case and a final 'N passed, N failed' line; exits 1 on any failure.

    python nnpack_layers.py [--quick]
"""

import os
import sys
import time

import mxnet as mx
import numpy as np

RTOL = 1e-3  # NNPACK's Winograd/FFT algorithms are approximate


def set_policy(policy):
    """Switch the NNPACK policy (auto, always, never) for the calls that follow.

    Wheels of the issue-12 series read MXNET_NNPACK_POLICY once, at first use, and change it
    only through mx.runtime.nnpack_configure (which first waits for queued operations, so they
    run with the old policy); writing os.environ has no effect on them. Older wheels have no
    nnpack_configure and read the variable at every layer call.
    """
    configure = getattr(mx.runtime, "nnpack_configure", None)
    if configure is not None:
        configure(policy=policy)
    else:
        os.environ["MXNET_NNPACK_POLICY"] = policy


def run(symbol_fn, shapes, policy, seed=0):
    set_policy(policy)
    rng = np.random.RandomState(seed)
    arrays = {name: mx.nd.array(rng.uniform(-1, 1, shape).astype(np.float32)) for name, shape in shapes.items()}
    out = symbol_fn(**arrays)
    return out.asnumpy()


def counts():
    c = mx.runtime.nnpack_call_counts()
    return (c["convolution"], c["pooling"], c["fully_connected"])


def conv(kernel=(3, 3), stride=(1, 1), pad=(1, 1), dilate=(1, 1), num_group=1, no_bias=False, filters=8):
    def f(data, weight, bias=None):
        kwargs = dict(kernel=kernel, stride=stride, pad=pad, dilate=dilate, num_group=num_group,
                      num_filter=filters, no_bias=no_bias)
        return mx.nd.Convolution(data, weight, bias, **kwargs) if bias is not None else \
            mx.nd.Convolution(data, weight, **kwargs)
    return f


def conv_shapes(batch, channels, size, filters=8, kernel=(3, 3), num_group=1, no_bias=False):
    shapes = {"data": (batch, channels, size, size), "weight": (filters, channels // num_group) + kernel}
    if not no_bias:
        shapes["bias"] = (filters,)
    return shapes


def pool(kernel=(2, 2), stride=(2, 2), convention="full", pool_type="max"):
    def f(data):
        return mx.nd.Pooling(data, kernel=kernel, stride=stride, pool_type=pool_type, pooling_convention=convention)
    return f


def fc(hidden, no_bias=False, flatten=True):
    def f(data, weight, bias=None):
        if bias is None:
            return mx.nd.FullyConnected(data, weight, num_hidden=hidden, no_bias=True, flatten=flatten)
        return mx.nd.FullyConnected(data, weight, bias, num_hidden=hidden, flatten=flatten)
    return f


# (name, layer function, input shapes, counter index that must grow or None when ineligible)
CASES = [
    ("conv 3x3 batch 1", conv(), conv_shapes(1, 4, 10), 0),
    ("conv 3x3 batch 1 stride 2", conv(stride=(2, 2)), conv_shapes(1, 4, 11), 0),
    ("conv 3x3 batch 2 stride 1", conv(), conv_shapes(2, 4, 10), 0),
    ("conv 5x5 no pad batch 1", conv(kernel=(5, 5), pad=(0, 0)), conv_shapes(1, 3, 12, kernel=(5, 5)), 0),
    ("conv 3x3 no_bias (beyond 1.0)", conv(no_bias=True), conv_shapes(1, 4, 10, no_bias=True), 0),
    ("conv dilated -> fallback", conv(dilate=(2, 2), pad=(2, 2)), conv_shapes(1, 4, 10), None),
    ("conv grouped -> fallback", conv(num_group=2), conv_shapes(1, 4, 10, num_group=2), None),
    ("conv batch 2 stride 2 -> fallback", conv(stride=(2, 2)), conv_shapes(2, 4, 11), None),
    ("max-pool 2x2/2 full", pool(), {"data": (1, 3, 9, 9)}, 1),
    ("max-pool 2x2/2 full batch 2", pool(), {"data": (2, 3, 8, 8)}, 1),
    ("max-pool valid -> fallback", pool(convention="valid"), {"data": (1, 3, 9, 9)}, None),
    ("avg-pool -> fallback", pool(pool_type="avg"), {"data": (1, 3, 8, 8)}, None),
    ("fc batch 1", fc(10), {"data": (1, 32), "weight": (10, 32), "bias": (10,)}, 2),
    ("fc batch 4 flatten", fc(7), {"data": (4, 2, 3, 4), "weight": (7, 24), "bias": (7,)}, 2),
    ("fc no_bias", fc(5, no_bias=True), {"data": (3, 16), "weight": (5, 16)}, 2),
]


def main():
    features = mx.runtime.Features()
    results = []
    started = time.time()
    ok = features.is_enabled("NNPACK")
    results.append(("Features() reports NNPACK", ok, ""))
    if mx.runtime.nnpack_call_counts() is None:
        results.append(("MXNNPACKGetCallCounts exported", False, "libmxnet has no NNPACK counters"))
    else:
        for name, layer, shapes, counter in CASES:
            reference = run(layer, shapes, "never")
            before = counts()
            got = run(layer, shapes, "always")
            grown = [a - b for a, b in zip(counts(), before)]
            if counter is None:
                good = np.array_equal(got, reference) and not any(grown)
                detail = "exact fallback" if good else f"diff {np.abs(got - reference).max():.3g}, counts +{grown}"
            else:
                err = np.abs(got - reference).max() / max(np.abs(reference).max(), 1e-6)
                good = err <= RTOL and grown[counter] == 1
                detail = f"rel err {err:.2e}, on NNPACK: {grown[counter] == 1}"
            results.append((name, good, detail))
    failed = sum(1 for _, good, _ in results if not good)
    for name, good, detail in results:
        print(f"{'PASS' if good else 'FAIL'}  {name:38} {detail}")
    print(f"layers: {time.time() - started:.1f} s")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
