"""The smoke suite's issue-12 checks (imported by smoke_suite.py, run in its process).

Each check returns (ok, detail) and is reported by smoke_suite.timed(). Every check can fail on a
wheel of the series before issue 12; its docstring says how. Several need the mx.runtime
functions of the revised series (nnpack_configure, nnpack_status, nnpack_import_tuning, ...):
on an older wheel require() raises and the check fails naming the missing function, because
what it checks does not exist there (no budget, no release, no pinning, no failure hook).

Order matters (smoke_suite.main): first_call_1x1 must run the process's first convolution, and
the executor checks run after the auto-policy check, whose "nothing pending" counts every plan.
"""

import contextlib
import gc
import json
import multiprocessing
import os
import queue
import sys
import tempfile

import mxnet as mx
import numpy as np

from nnpack_layers import RTOL, conv, conv_shapes, counts, run, set_policy

FORK_TIMEOUT = 120.0  # seconds for the forked child's convolution (a few under QEMU)


def rel_err(got, reference):
    return float(np.abs(got - reference).max() / max(float(np.abs(reference).max()), 1e-6))


def require(*names):
    """The revised series' mx.runtime functions, or an error naming the first one missing."""
    for name in names:
        if not hasattr(mx.runtime, name):
            raise RuntimeError(f"mx.runtime.{name} missing: a wheel of the series before issue 12")
    return [getattr(mx.runtime, name) for name in names]


@contextlib.contextmanager
def captured_stderr():
    """What the process writes to file descriptor 2 inside the block (MXNet's LOG(WARNING) goes
    to std::cerr, from engine threads too); the list gets one string at the end."""
    sys.stderr.flush()
    saved = os.dup(2)
    text = []
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield text
        finally:
            try:
                mx.nd.waitall()  # engine threads' messages of the block's calls
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text.append(capture.read().decode("utf-8", "replace"))


def first_call_1x1():
    """Finding 6. Policy always, 1x1 stride 1 (NNPACK's direct algorithm: a zero-size
    workspace), 16 filters, data (1,8,32,32), as the process's first convolution.
    Old series: the engine thread's workspace never grew, Get(0) returned null, reported as out
    of memory: 'NNPACK Convolution failed with status ...' on every call, MXNet's code ran, the
    counter stays +0. Now: both calls on NNPACK, no warning, MXNet's result."""
    def check():
        layer = conv(kernel=(1, 1), pad=(0, 0), filters=16)
        shapes = conv_shapes(1, 8, 32, filters=16, kernel=(1, 1))
        with captured_stderr() as log:
            before = counts()
            got = run(layer, shapes, "always")
            again = run(layer, shapes, "always")
            grown = counts()[0] - before[0]
        reference = run(layer, shapes, "never")
        warnings = [line for line in log[0].splitlines() if "NNPACK" in line and "fail" in line]
        err = max(rel_err(got, reference), rel_err(again, reference))
        ok = grown == 2 and not warnings and err <= RTOL
        return ok, f"NNPACK calls +{grown} (want 2); warnings {warnings[:1]}; rel err {err:.1e}"
    return check


def padded_pooling_exact(data_shape):
    """Finding 5. Max pooling 2x2 stride 2, pad 1, convention full: the last output row and
    column are windows wholly in the padding. Old series: NNPACK wrote -inf there, MXNet's own
    code -3.4e38, so the bytes differ and -inf is found. Now: MXNet's output bit for bit."""
    def check():
        def layer(data):
            return mx.nd.Pooling(data, kernel=(2, 2), stride=(2, 2), pad=(1, 1), pool_type="max",
                                 pooling_convention="full")
        shapes = {"data": data_shape}
        reference = run(layer, shapes, "never")
        before = counts()
        got = run(layer, shapes, "always")
        grown = counts()[1] - before[1]
        same = got.shape == reference.shape and got.tobytes() == reference.tobytes()
        infs = int(np.isinf(got).sum())
        ok = same and infs == 0 and grown == 1
        return ok, f"bit-exact: {same}; -inf values {infs}; on NNPACK: {grown == 1}"
    return check


def _child_convolve(results):
    try:
        before = counts()
        got = run(conv(), conv_shapes(1, 4, 10), "always")
        results.put((counts()[0] - before[0], got))
    except Exception as error:  # reported by the parent
        results.put((f"{type(error).__name__}: {error}", None))


def fork_then_convolve(timeout=FORK_TIMEOUT):
    """Finding 3. A convolution on NNPACK (its thread pool and workers exist), then fork()
    through multiprocessing's fork start method: the child's first NNPACK convolution must
    finish, on NNPACK, with MXNet's result. Old series: the child's pool has no workers and its
    first call waits for them forever: no result within the timeout, the child is killed."""
    def check():
        reference = run(conv(), conv_shapes(1, 4, 10), "never")
        run(conv(), conv_shapes(1, 4, 10), "always")  # creates the pool and its worker threads
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_child_convolve, args=(results,), daemon=True)
        sys.stdout.flush()
        sys.stderr.flush()
        child.start()
        got = None
        waited = 0.0
        while got is None:
            try:
                got = results.get(timeout=1.0)
            except queue.Empty:
                waited += 1.0
                if waited >= timeout or (not child.is_alive() and waited >= 3.0):
                    break
        if got is None:
            alive = child.is_alive()
            if alive:
                child.kill()
            child.join(10)
            why = "hangs (NNPACK pool)" if alive else f"exited with code {child.exitcode}"
            return False, f"child gave no result within {waited:.0f} s: {why}"
        child.join(timeout)
        grown, output = got
        if output is None:
            return False, f"child failed: {grown}"
        err = rel_err(output, reference)
        ok = grown == 1 and err <= RTOL and child.exitcode == 0
        return ok, f"child: NNPACK calls +{grown}, rel err {err:.1e}, exit code {child.exitcode}"
    return check


# Graph nodes (an executor, a static CachedOp) hold precomputed kernel transforms in their
# operator state; these checks pin the choice of this layer shape to one that precomputes.
CONV_DATA = (1, 16, 24, 24)
CONV_FILTERS = 16
CONV_KEY = list(CONV_DATA) + [CONV_FILTERS, 3, 3, 1, 1, 1, 1]  # the plan key (nnpack_ops.cc)


def conv_executor(weight, data):
    net = mx.sym.Convolution(mx.sym.Variable("data"), kernel=(3, 3), pad=(1, 1),
                             num_filter=CONV_FILTERS, name="conv")
    args = {"data": mx.nd.array(data), "conv_weight": mx.nd.array(weight),
            "conv_bias": mx.nd.zeros(CONV_FILTERS)}
    return net.bind(mx.cpu(), args=args, grad_req="null")


def forward(executor):
    return executor.forward(is_train=False)[0].asnumpy()


def reference_conv(weight, data):
    set_policy("never")
    return forward(conv_executor(weight, data))


def pin_precompute(choice="NNPACK wt8x8 precompute"):
    """Pin the auto policy's choice for CONV_KEY (graph node, batch-1 inference) to a choice
    with a precomputed transform, in the format of mx.runtime.nnpack_export_tuning()."""
    (import_tuning,) = require("nnpack_import_tuning")
    import_tuning(json.dumps({"format": "mxnet-nnpack-tuning", "version": 1, "plans": [
        {"layer": "Convolution", "shape": CONV_KEY, "transforms": 1, "choice": choice}]}))


def transforms_held():
    (status,) = require("nnpack_status")
    return status()["transforms"]


def settle(run_once, model, passes=60):
    """Old wheels (no pinning): let the auto policy's trials decide, as in a real model."""
    for _ in range(passes):
        run_once(model)
        if not mx.runtime.nnpack_tuning_pending():
            return


def one_hot_kernels():
    """Two kernels whose old fingerprint is the same: 1.0 at 3x3 index 4, and at index 5."""
    first = np.zeros((CONV_FILTERS, CONV_DATA[1], 3, 3), np.float32)
    first[0, 0, 1, 1] = 1.0
    second = np.zeros_like(first)
    second[0, 0, 1, 2] = 1.0
    return first, second


def same_buffer_weight_change():
    """Finding 4. A graph node runs with a precomputed transform, then its weights change in
    the same buffer (x[:] = numpy on an executor's argument; Gluon's set_data(numpy) on a
    hybridize(static_alloc=True, static_shape=True) block), from the index-4 kernel to the
    index-5 one: the output must follow the new weights, and a transform must be held (or no
    transform was exercised). Old series: same pointer, same fingerprint, so the old transform
    was reused and the output stayed the old one whenever auto chose a precomputed transform
    (it cannot be pinned there); and there is no nnpack_status, so the check fails in any case."""
    def check():
        pinned = hasattr(mx.runtime, "nnpack_import_tuning")
        data = np.random.RandomState(3).uniform(-1, 1, CONV_DATA).astype(np.float32)
        first, second = one_hot_kernels()
        ref_first, ref_second = reference_conv(first, data), reference_conv(second, data)
        if pinned:
            pin_precompute()
        set_policy("auto")
        held = []
        executor = conv_executor(first, data)
        if not pinned:
            settle(forward, executor)
        outputs = [forward(executor)]
        executor.arg_dict["conv_weight"][:] = second  # same array, same buffer, numpy source
        outputs.append(forward(executor))
        if pinned:
            held.append(transforms_held())
        del executor
        gc.collect()
        mx.nd.waitall()
        before_gluon = transforms_held() if pinned else 0  # 0 unless something still holds one

        def gluon_forward(block):
            return block(mx.nd.array(data)).asnumpy()

        block = mx.gluon.nn.Conv2D(CONV_FILTERS, 3, padding=1, in_channels=CONV_DATA[1])
        block.initialize(mx.init.Zero(), ctx=mx.cpu())
        block.weight.set_data(first)
        block.hybridize(static_alloc=True, static_shape=True)
        if not pinned:
            settle(gluon_forward, block)
        outputs.append(gluon_forward(block))
        block.weight.set_data(second)  # Parameter.set_data: arr[:] = numpy on the same array
        outputs.append(gluon_forward(block))
        if pinned:
            held.append(transforms_held() - before_gluon)
        del block
        gc.collect()

        wanted = [ref_first, ref_second, ref_first, ref_second]
        err = max(rel_err(got, want) for got, want in zip(outputs, wanted))
        scale = RTOL * float(np.abs(ref_first).max())
        stale = [bool(np.abs(outputs[i] - ref_first).max() <= scale) for i in (1, 3)]
        ok = pinned and err <= RTOL and not any(stale) and min(held) >= 1
        held_text = held if pinned else "unknown (no nnpack_status: series before issue 12)"
        return ok, (f"rel err {err:.1e}; stale output (executor, Gluon): {stale}; "
                    f"transforms held (executor, Gluon): {held_text}")
    return check


def transform_allocation_failure():
    """Finding 2. The pinned choice needs a precomputed transform and its allocation fails
    (forced with nnpack_configure(fail_transform_allocation=True)): the layer must fall back
    (the same algorithm without a transform) with the new input's output and hold nothing.
    Old series: a failed allocation with status success was counted as run on NNPACK and left
    the previous call's output; it has no hook to force the failure, so the check fails there."""
    def check():
        configure, release = require("nnpack_configure", "nnpack_release_memory")
        rng = np.random.RandomState(4)
        weight = rng.uniform(-0.5, 0.5, (CONV_FILTERS, CONV_DATA[1], 3, 3)).astype(np.float32)
        data_a = rng.uniform(-1, 1, CONV_DATA).astype(np.float32)
        data_b = rng.uniform(-1, 1, CONV_DATA).astype(np.float32)
        reference_b = reference_conv(weight, data_b)
        pin_precompute()
        set_policy("auto")
        executor = conv_executor(weight, data_a)
        forward(executor)  # a graph node's first call runs without a transform (a state used once)
        got_a = forward(executor)  # builds the transform
        built = transforms_held()
        release()  # the next call has to allocate it again
        configure(fail_transform_allocation=True)
        try:
            before = counts()
            executor.arg_dict["data"][:] = data_b
            got_b = forward(executor)
            on_nnpack = counts()[0] - before[0]
            held = transforms_held()
        finally:
            configure(fail_transform_allocation=False)
        err = rel_err(got_b, reference_b)
        stale = bool(np.array_equal(got_b, got_a))
        ok = built >= 1 and err <= RTOL and not stale and held == 0
        return ok, (f"rel err {err:.1e}; stale output: {stale}; transforms built {built}, held "
                    f"after the failure {held}; NNPACK calls +{on_nnpack}")
    return check


def memory_budget_and_release():
    """Finding 1 and the budget. Budget 0 MB: no transform is held, the output is right.
    The budget as before: the transform is held, within the budget. nnpack_release_memory()
    frees it; the next call rebuilds it; deleting the executor frees it. Old series: no budget,
    no release, no status (transforms were kept for the life of the process): fails."""
    def check():
        configure, release, status = require("nnpack_configure", "nnpack_release_memory",
                                              "nnpack_status")
        rng = np.random.RandomState(5)
        weight = rng.uniform(-0.5, 0.5, (CONV_FILTERS, CONV_DATA[1], 3, 3)).astype(np.float32)
        data = rng.uniform(-1, 1, CONV_DATA).astype(np.float32)
        reference = reference_conv(weight, data)
        budget_mb = status()["memory_budget_bytes"] / float(1 << 20)
        pin_precompute()
        set_policy("auto")
        configure(memory_budget_mb=0)
        try:
            executor = conv_executor(weight, data)
            errs = [rel_err(forward(executor), reference)]
            none_held = status()["transform_bytes"] == 0
        finally:
            configure(memory_budget_mb=repr(budget_mb))
        errs.append(rel_err(forward(executor), reference))
        now = status()
        held = now["transforms"] >= 1 and 0 < now["transform_bytes"] <= now["memory_budget_bytes"]
        release()
        released = status()["transform_bytes"] == 0
        errs.append(rel_err(forward(executor), reference))  # rebuilt on demand
        rebuilt = status()["transforms"] >= 1
        del executor
        gc.collect()
        mx.nd.waitall()
        freed = status()["transforms"] == 0
        ok = max(errs) <= RTOL and none_held and held and released and rebuilt and freed
        return ok, (f"budget 0 holds none: {none_held}; {budget_mb:.0f} MB holds one: {held}; "
                    f"release frees: {released}; rebuilt: {rebuilt}; executor deleted frees: "
                    f"{freed}; rel err {max(errs):.1e}")
    return check


def tuning_export_import(make_network):
    """Tuning and pinning. make_network() gives forward(policy), which runs the suite's small
    network (a new executor per call). The auto policy settles; the exported table has a median for every
    chosen choice; after forgetting everything, the imported table pins the same choices
    (nothing pending after one pass) and the output is MXNet's. Old series: no export/import."""
    def check():
        export, import_tuning, release, pending = require(
            "nnpack_export_tuning", "nnpack_import_tuning", "nnpack_release_memory",
            "nnpack_tuning_pending")
        network_forward = make_network()
        reference = network_forward("never")
        release(forget_tuning=True)
        passes = 0
        while passes < 60:
            network_forward("auto")
            passes += 1
            if pending() == 0:
                break
        table = json.loads(export())
        plans = table["plans"]
        timed_choices = all(p["choice"] in p["median_ms"] for p in plans)
        release(forget_tuning=True)
        import_tuning(json.dumps(table))
        got = network_forward("auto")
        left = pending()
        again = json.loads(export())["plans"]

        def chosen(entries):
            return sorted((p["layer"], p["shape"], p["transforms"], p["choice"]) for p in entries)
        same = chosen(again) == chosen(plans)
        err = float(np.abs(got - reference).max())
        ok = bool(plans) and timed_choices and left == 0 and same and err <= 1e-4
        return ok, (f"{len(plans)} plans after {passes} passes; chosen ones timed: "
                    f"{timed_choices}; after import pending {left}, same choices: {same}; "
                    f"max abs err {err:.1e}")
    return check


def settings_read_once():
    """getenv per call. Policy always through set_policy (nnpack_configure), then
    os.environ['MXNET_NNPACK_POLICY'] = 'never': the next convolution still runs on NNPACK.
    Old series: the variable was read at every call, so 'never' took effect: +0, fails."""
    def check():
        layer, shapes = conv(), conv_shapes(1, 4, 10)
        saved = os.environ.get("MXNET_NNPACK_POLICY")
        set_policy("always")
        os.environ["MXNET_NNPACK_POLICY"] = "never"
        try:
            before = counts()
            out = layer(**{n: mx.nd.ones(s) for n, s in shapes.items()}).asnumpy()
            grown = counts()[0] - before[0]
        finally:
            if saved is None:
                del os.environ["MXNET_NNPACK_POLICY"]
            else:
                os.environ["MXNET_NNPACK_POLICY"] = saved
        return grown == 1 and out.shape == (1, 8, 10, 10), f"NNPACK calls +{grown} (want 1)"
    return check
