"""Inference benchmark, run by the target's Python on an installed MXNet.

Like MXNet's example/image-classification/benchmark_score.py: random weights, 224x224 input,
one warm-up pass, then timed forward passes. The policies (never, always, auto; switched with
nnpack_layers.set_policy, i.e. mx.runtime.nnpack_configure on wheels that read
MXNET_NNPACK_POLICY only once) alternate pass by pass in one process, so both columns see the
same machine state. Prints one `RESULT {json}` line per measurement.

    python bench_models.py --models DIR --networks alexnet,vgg16 --batches 1,2 --policies never,always
    python bench_models.py ... --layers        # per-layer convolution times (batch = each of --batches)
    python bench_models.py ... --check         # correctness only (QEMU): NNPACK vs MXNet's own output
"""

import argparse
import json
import os
import statistics
import time

import mxnet as mx
import numpy as np

try:  # in the wheel, as mxnet.nnpack_bench.bench_models (the on-board benchmark, nnpack_bench.py)
    from .nnpack_layers import set_policy
except ImportError:  # run as a script: its own directory is on sys.path
    from nnpack_layers import set_policy

# The auto policy measures each layer shape's choices on its first calls (a 3x3 stride-1 shape
# at batch 1 in a graph: 9 choices x 4 calls); passes allowed before the timed ones.
SETTLE_PASSES = 100


def emit(**record):
    print("RESULT " + json.dumps(record), flush=True)


def bind(symbol, batch, seed=0):
    rng = np.random.RandomState(seed)
    data_shape = (batch, 3, 224, 224)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=data_shape)
    args = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name.endswith("label"):
            args[name] = mx.nd.zeros(shape)
        else:
            scale = 1.0 if name == "data" else 0.05
            args[name] = mx.nd.array(rng.uniform(-scale, scale, shape).astype(np.float32))
    aux = {}
    for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes):
        aux[name] = mx.nd.ones(shape) if name.endswith("var") else mx.nd.zeros(shape)
    return symbol.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")


def forward_seconds(executor, policy):
    if policy not in ("pypi",):
        set_policy(policy)
    begin = time.perf_counter()
    executor.forward(is_train=False)
    executor.outputs[0].wait_to_read()
    return time.perf_counter() - begin


def tuning_pending():
    pending = getattr(mx.runtime, "nnpack_tuning_pending", None)
    return pending() if pending else 0


def sample_policies(executor, policies, iterations):
    """Seconds of each timed pass per policy, the policies alternating pass by pass."""
    for policy in policies:  # warm-up: workspace allocation, NNPACK initialisation, caches
        forward_seconds(executor, policy)
        if policy == "auto":  # the auto policy measures each layer's choices on its first calls
            for _ in range(SETTLE_PASSES):
                if not tuning_pending():
                    break
                forward_seconds(executor, policy)
    samples = {p: [] for p in policies}
    for _ in range(iterations):
        for policy in policies:
            samples[policy].append(forward_seconds(executor, policy))
    return samples


def time_policies(executor, policies, iterations):
    return {p: statistics.median(s) for p, s in sample_policies(executor, policies, iterations).items()}


def timing_fields(batch, samples):
    """A network record's timing: median seconds per pass, images/sec at the median, the lowest and
    highest images/sec of the passes (the spread), and the seconds of every pass."""
    medians = {p: statistics.median(s) for p, s in samples.items()}
    return dict(seconds=medians, images_per_second={p: batch / t for p, t in medians.items()},
                images_per_second_range={p: [batch / max(s), batch / min(s)] for p, s in samples.items()},
                samples=samples)


def check_outputs(executor, policies):
    """One forward pass per policy: each output's largest difference from the first policy's,
    relative to the first's largest magnitude; and MXNet's NNPACK call counters (None without)."""
    outputs = {}
    for policy in policies:
        if policy != "pypi":
            set_policy(policy)
        executor.forward(is_train=False)
        outputs[policy] = executor.outputs[0].asnumpy().copy()
    reference = outputs[policies[0]]
    scale = max(float(np.abs(reference).max()), 1e-6)
    errors = {p: float(np.abs(o - reference).max()) / scale for p, o in outputs.items()}
    counts = mx.runtime.nnpack_call_counts() if hasattr(mx.runtime, "nnpack_call_counts") else None
    return errors, counts


def conv_layers(symbol_json, symbol, batch):
    """(name, attrs, input shape) of every Convolution, input shapes from MXNet's own inference."""
    nodes = symbol_json["nodes"]
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape(data=(batch, 3, 224, 224))
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    layers = []
    for node in nodes:
        if node["op"] != "Convolution":
            continue
        source = nodes[node["inputs"][0][0]]
        key = "data" if source["op"] == "null" else source["name"] + "_output"
        attrs = node.get("attrs") or node.get("attr") or node.get("param") or {}
        layers.append((node["name"], attrs, shapes[key]))
    return layers


def layer_times(symbol_json, symbol, batch, policies, iterations):
    for name, attrs, shape in conv_layers(symbol_json, symbol, batch):
        data = mx.sym.Variable("data")
        layer = mx.sym.Convolution(data, name=name, **attrs)
        executor = bind_layer(layer, shape)
        times = time_policies(executor, policies, iterations)
        emit(kind="layer", layer=name, batch=batch, input=list(shape),
             kernel=attrs.get("kernel"), stride=attrs.get("stride", "(1, 1)"), filters=attrs.get("num_filter"),
             seconds=times)


def bind_layer(layer, shape, seed=0):
    rng = np.random.RandomState(seed)
    arg_shapes, _, _ = layer.infer_shape(data=shape)
    args = {n: mx.nd.array(rng.uniform(-0.1, 0.1, s).astype(np.float32))
            for n, s in zip(layer.list_arguments(), arg_shapes)}
    return layer.bind(mx.cpu(), args=args, grad_req="null")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True)
    parser.add_argument("--networks", required=True)
    parser.add_argument("--batches", default="1")
    parser.add_argument("--policies", default="never,always,auto")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--layers", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    policies = args.policies.split(",")
    for network in args.networks.split(","):
        path = os.path.join(args.models, f"{network}-symbol.json")
        with open(path) as stream:
            symbol_json = json.load(stream)
        symbol = mx.sym.load(path)  # ends in SoftmaxOutput: its label is bound to zeros
        for batch in [int(b) for b in args.batches.split(",")]:
            if args.layers:
                layer_times(symbol_json, symbol, batch, policies, args.iterations)
                continue
            executor = bind(symbol, batch)
            if args.check:
                errors, counts = check_outputs(executor, policies)
                emit(kind="check", network=network, batch=batch, rel_err=errors, nnpack_calls=counts)
                continue
            samples = sample_policies(executor, policies, args.iterations)
            emit(kind="network", network=network, batch=batch, **timing_fields(batch, samples),
                 threads=os.environ.get("MXNET_CPU_NNPACK_NTHREADS", "4"))


if __name__ == "__main__":
    main()
