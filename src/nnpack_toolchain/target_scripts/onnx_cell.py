"""ONNX Runtime beside MXNet (issue 14), run by a target's Python: outputs, instruction counts, timings.

The same fixed-seed weights and input as bench_models.bind (numpy RandomState(seed) drawn in the
order of the symbol's arguments: data uniform in [-1, 1], weights in [-0.05, 0.05], labels 0;
BatchNorm moving mean 0 and variance 1), for any input size (make_arrays). onnx_export.py writes
the model with MXNet's exporter and the input as input.npy; this script runs it:

    python onnx_cell.py ort --model M.onnx --input input.npy --save ort.npz      # outputs
    python onnx_cell.py ort --model M.onnx --input input.npy --count 0,1         # counted forks
    python onnx_cell.py ort --model M.onnx --input input.npy --time --iterations 5 --threads 2
    python onnx_cell.py mxnet --symbol S.json --input input.npy --save mx.npz --policies never,always
    python onnx_cell.py mxnet --symbol S.json --input input.npy --count 0,1 --policies never

ONNX Runtime runs single-threaded unless --threads says otherwise (intra_op_num_threads = 1,
inter_op_num_threads = 1, sequential execution), with its default graph optimisations (what a
user gets). --count: the session is made and warmed up once, then this process forks
grandchildren doing K1, K2, K1, K2 passes (after one uncounted fork), each exiting at once; the
QEMU insn plugin prints every process's total when it exits, a forked one's including everything
before its fork, so start-up and warm-up cancel (onnx_count.per_image). Prints one
`RESULT {json}` line; a failure exits 1 with a message on stderr.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

from forking import fork_and_wait  # this script's directory


def emit(**record):
    print("RESULT " + json.dumps(record), flush=True)


def fail(message):
    print(f"onnx_cell: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def make_arrays(symbol, data_shape, seed=0):
    """(args, aux) as numpy arrays, drawn exactly as bench_models.bind draws them (there at 224x224),
    then the gamma of every BatchNorm with fix_gamma (MXNet's default) set to 1: MXNet computes with
    1 there whatever the array holds, and MXNet 1.9.1's ONNX exporter ignores fix_gamma and exports
    the array (MobileNet's outputs then differ by 42 %), so both sides get the value MXNet uses."""
    import numpy as np

    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=data_shape)
    args = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name.endswith("label"):
            args[name] = np.zeros(shape, dtype=np.float32)
        else:
            scale = 1.0 if name == "data" else 0.05
            args[name] = rng.uniform(-scale, scale, shape).astype(np.float32)
    aux = {}
    for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes):
        aux[name] = np.ones(shape, np.float32) if name.endswith("var") else np.zeros(shape, np.float32)
    for gamma in fixed_gammas(json.loads(symbol.tojson())):
        if gamma in args:
            args[gamma] = np.ones_like(args[gamma])
    return args, aux


def fixed_gammas(symbol_json):
    """Names of the gamma inputs of BatchNorm nodes whose fix_gamma is on (absent means on)."""
    nodes = symbol_json["nodes"]
    found = []
    for node in nodes:
        attrs = node.get("attrs") or node.get("attr") or node.get("param") or {}
        if node["op"] == "BatchNorm" and str(attrs.get("fix_gamma", "True")).lower() in ("true", "1"):
            found.append(nodes[node["inputs"][1][0]]["name"])
    return found


def heads(symbol):
    """The symbol to run: (logits, probabilities) when it ends in SoftmaxOutput, else itself."""
    import mxnet as mx

    if json.loads(symbol.tojson())["nodes"][-1]["op"] == "SoftmaxOutput":
        return mx.sym.Group([symbol.get_children()[0], symbol]), ["logits", "probabilities"]
    return symbol, [f"output{i}" for i in range(len(symbol.list_outputs()))]


def set_mxnet_policy(policy):
    if policy != "default":
        from nnpack_layers import set_policy  # the project's wheel: this script's directory

        set_policy(policy)


def run_mxnet(args):
    import mxnet as mx
    import numpy as np

    symbol, names = heads(mx.sym.load(args.symbol))
    data = np.load(args.input)
    arrays, aux = make_arrays(symbol, data.shape, args.seed)
    if not np.array_equal(arrays["data"], data):
        fail(f"the input drawn here differs from {args.input}: not the exporter's seed or shape")
    executor = symbol.bind(mx.cpu(), args={k: mx.nd.array(v) for k, v in arrays.items()},
                           aux_states={k: mx.nd.array(v) for k, v in aux.items()}, grad_req="null")
    saved = {}
    policies = args.policies.split(",")
    if args.save is None:  # --count: one policy, warmed up, then the counted forks
        if len(policies) != 1:
            fail("--count takes one policy")
        set_mxnet_policy(policies[0])

        def one_pass():
            executor.forward(is_train=False)
            executor.outputs[0].wait_to_read()

        for _ in range(args.warmup):
            one_pass()
        mx.nd.waitall()
        counted_forks(one_pass, args.count)
        emit(kind="mxnet-count", mxnet=mx.__version__, policy=policies[0], passes=args.count, warmup=args.warmup,
             batch=int(data.shape[0]), engine=os.environ.get("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice"))
        return
    for policy in policies:
        set_mxnet_policy(policy)
        executor.forward(is_train=False)
        for name, output in zip(names, executor.outputs):
            saved[f"{policy}:{name}"] = output.asnumpy()
    np.savez(args.save, **saved)
    emit(kind="mxnet", mxnet=mx.__version__, outputs=names, policies=args.policies.split(","))


def session(model, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])




def run_ort(args):
    import numpy as np
    import onnxruntime as ort

    sess = session(args.model, args.threads)
    data = np.load(args.input)
    feed = {sess.get_inputs()[0].name: data}
    names = [o.name for o in sess.get_outputs()]
    info = dict(onnxruntime=ort.__version__, numpy=np.__version__, batch=int(data.shape[0]), outputs=names,
                threads=args.threads)
    if args.save:
        np.savez(args.save, **dict(zip(names, sess.run(None, feed))))
        emit(kind="ort", **info)
        return
    for _ in range(args.warmup):  # the first run allocates the arena and plans memory
        sess.run(None, feed)
    if args.time:
        samples = []
        for _ in range(args.iterations):
            begin = time.perf_counter()
            sess.run(None, feed)
            samples.append(time.perf_counter() - begin)
        emit(kind="ort-time", seconds=statistics.median(samples), samples=samples, **info)
        return
    counted_forks(lambda: sess.run(None, feed), args.count)
    emit(kind="ort-count", passes=args.count, warmup=args.warmup, **info)


def counted_forks(one_pass, counts):
    """Fork children doing K1, K2, K1, K2 passes (after one uncounted fork), one after another."""
    k1, k2 = (int(k) for k in counts.split(","))

    def passes(count):
        def work():
            for _ in range(count):
                one_pass()
        return work

    gc.collect()
    gc.disable()  # no collection at a different point between two forks
    # A process's first fork costs it more than later ones: an uncounted fork first, then K1, K2, K1, K2.
    for count in (k1, k1, k2, k1, k2):
        if not fork_and_wait(passes(count), "onnx_cell"):
            fail(f"a counted run of {count} passes failed")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=("ort", "mxnet"))
    parser.add_argument("--model", help="ONNX file (ort)")
    parser.add_argument("--symbol", help="MXNet *-symbol.json (mxnet)")
    parser.add_argument("--input", required=True, help="input.npy written by onnx_export.py")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the outputs to this .npz")
    parser.add_argument("--policies", default="default", help="mxnet: NNPACK policies, e.g. never,always")
    parser.add_argument("--count", default="0,1", help="K1,K2: passes of the counted forks")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--time", action="store_true")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        run_ort(args) if args.engine == "ort" else run_mxnet(args)
    except Exception as error:  # noqa: BLE001 - one line for the host
        fail(f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
