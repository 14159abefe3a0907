"""The wheel's smoke suite, run by the target's Python (under QEMU on ARM) on the installed wheel.

Prints one `RESULT {json}` line per test (test, ok, seconds, detail); the host builds the table.
The issue-12 checks (memory budget, fork, weight changes, exact fallbacks) are in
smoke_issue12.py; main() runs them in this process, in the order that they need.

    python smoke_suite.py             # everything except the forced initialisation failure
    python smoke_suite.py init-failure  # run with MXNET_NNPACK_FORCE_INIT_FAILURE=1
"""

import json
import os
import sys
import time

started = time.time()
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

IMPORT_SECONDS = time.time() - started

from nnpack_layers import RTOL, conv, conv_shapes, counts, fc, pool, run, set_policy  # noqa: E402
import smoke_issue12 as issue12  # noqa: E402
import smoke_tuning as tuning  # noqa: E402


def report(test, ok, seconds, detail=""):
    print("RESULT " + json.dumps({"test": test, "ok": bool(ok), "seconds": round(seconds, 2), "detail": detail}),
          flush=True)


def timed(test, check):
    begin = time.time()
    try:
        ok, detail = check()
    except Exception as error:  # a failing check is a result, not a crash of the suite
        ok, detail = False, f"{type(error).__name__}: {error}"
    report(test, ok, time.time() - begin, detail)


def eligible(layer, shapes, counter):
    def check():
        reference = run(layer, shapes, "never")
        before = counts()
        got = run(layer, shapes, "always")
        grown = counts()[counter] - before[counter]
        err = float(np.abs(got - reference).max() / max(np.abs(reference).max(), 1e-6))
        return err <= RTOL and grown == 1, f"rel err {err:.1e}; ran on NNPACK: {grown == 1}"
    return check


def fallback(layer, shapes):
    def check():
        reference = run(layer, shapes, "never")
        before = counts()
        got = run(layer, shapes, "always")
        grown = [a - b for a, b in zip(counts(), before)]
        same = bool(np.array_equal(got, reference))
        return same and not any(grown), f"identical to MXNet's own: {same}; NNPACK calls +{grown}"
    return check


def small_network_forward():
    """forward(policy) of a small conv/BN/pool/FC network with fixed random weights."""
    data = mx.sym.Variable("data")
    net = mx.sym.Convolution(data, kernel=(3, 3), pad=(1, 1), num_filter=16, name="conv1")
    net = mx.sym.Activation(net, act_type="relu")
    net = mx.sym.Pooling(net, kernel=(2, 2), stride=(2, 2), pool_type="max", pooling_convention="full")
    net = mx.sym.Convolution(net, kernel=(3, 3), pad=(1, 1), num_filter=32, no_bias=True, name="conv2")
    net = mx.sym.BatchNorm(net, fix_gamma=False, name="bn2")
    net = mx.sym.Activation(net, act_type="relu")
    net = mx.sym.Pooling(net, kernel=(2, 2), stride=(2, 2), pool_type="max", pooling_convention="full")
    net = mx.sym.FullyConnected(net, num_hidden=10, name="fc")
    net = mx.sym.softmax(net)
    shapes = {"data": (1, 3, 32, 32)}
    arg_shapes, _, aux_shapes = net.infer_shape(**shapes)
    rng = np.random.RandomState(1)
    args = {n: mx.nd.array(rng.uniform(-0.5, 0.5, s).astype(np.float32)) for n, s in zip(net.list_arguments(), arg_shapes)}
    aux = {n: mx.nd.array(rng.uniform(0.5, 1.5, s).astype(np.float32)) for n, s in zip(net.list_auxiliary_states(), aux_shapes)}

    def forward(policy):
        set_policy(policy)
        executor = net.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")
        return executor.forward(is_train=False)[0].asnumpy()

    return forward


def small_network():
    def check():
        forward = small_network_forward()
        reference = forward("never")
        before = counts()
        got = forward("always")
        grown = [a - b for a, b in zip(counts(), before)]
        err = float(np.abs(got - reference).max())
        ok = err <= 1e-4 and grown == [2, 2, 1] and got.shape == (1, 10)
        return ok, f"max abs err {err:.1e}; NNPACK conv/pool/fc calls +{grown} (want [2, 2, 1])"
    return check


def auto_policy():
    """Policy auto: trial calls, then a per-layer choice; always MXNet's result."""
    def check():
        forward = small_network_forward()
        reference = forward("never")
        worst, passes = 0.0, 0
        while passes < 40:
            worst = max(worst, float(np.abs(forward("auto") - reference).max()))
            passes += 1
            if mx.runtime.nnpack_tuning_pending() == 0:
                break
        settled = mx.runtime.nnpack_tuning_pending() == 0
        worst = max(worst, float(np.abs(forward("auto") - reference).max()))
        return worst <= 1e-4 and settled, f"tuned after {passes} passes: {settled}; max abs err {worst:.1e}"
    return check


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "all"
    report("import mxnet", True, IMPORT_SECONDS, f"mxnet {mx.__version__} from {os.path.dirname(mx.__file__)}")
    if mode == "init-failure":
        timed("nnp_initialize failure falls back", fallback(conv(), conv_shapes(1, 4, 10)))
        timed("  ... and again (warning logged once)", fallback(conv(), conv_shapes(1, 4, 10)))
        return
    if mode == "deterministic":  # MXNET_ENFORCE_DETERMINISM=1, read once per process
        timed("MXNET_ENFORCE_DETERMINISM: auto measures nothing", tuning.deterministic_auto())
        return
    timed("Features() has NNPACK", lambda: (mx.runtime.Features().is_enabled("NNPACK"), ""))
    # The process's first convolution (finding 6 needs an engine thread that never ran one).
    timed("1x1 first call on NNPACK, no warning", issue12.first_call_1x1())
    timed("convolution 3x3 on NNPACK", eligible(conv(), conv_shapes(1, 4, 10), 0))
    timed("max-pooling 2x2/2 on NNPACK", eligible(pool(), {"data": (1, 3, 9, 9)}, 1))
    timed("fully-connected on NNPACK", eligible(fc(10), {"data": (2, 32), "weight": (10, 32), "bias": (10,)}, 2))
    timed("dilated convolution falls back", fallback(conv(dilate=(2, 2), pad=(2, 2)), conv_shapes(1, 4, 10)))
    timed("grouped convolution falls back", fallback(conv(num_group=2), conv_shapes(1, 4, 10, num_group=2)))
    timed("padded max-pool (1,1,3,3) bit-exact", issue12.padded_pooling_exact((1, 1, 3, 3)))
    timed("padded max-pool (1,4,9,9) bit-exact", issue12.padded_pooling_exact((1, 4, 9, 9)))
    # Old series: flatten=False was never dispatched (NNPACK calls +0).
    timed("fully-connected flatten=False on NNPACK",
          eligible(fc(6, flatten=False), {"data": (2, 3, 8), "weight": (6, 8), "bias": (6,)}, 2))
    timed("settings read once, not per call", issue12.settings_read_once())
    timed("small network forward", small_network())
    timed("auto policy settles and matches", auto_policy())
    timed("fork then convolve", issue12.fork_then_convolve())
    timed("same-buffer weight change detected", issue12.same_buffer_weight_change())
    timed("transform allocation failure falls back", issue12.transform_allocation_failure())
    timed("memory budget, release, executor frees", issue12.memory_budget_and_release())
    timed("tuning exports and imports (pinned)", issue12.tuning_export_import(small_network_forward))
    timed("two layers of one shape: precompute measured", tuning.shared_shape_precompute_measured())
    timed("settings checked before any is applied", tuning.settings_checked_before_applied())
    timed("memory budget 'inf' is unlimited", tuning.unlimited_budget())
    timed("precompute off holds no transform", tuning.precompute_off())


if __name__ == "__main__":
    main()
