"""Export an MXNet symbol with fixed-seed weights to ONNX with MXNet's own exporter (issue 14).

Run by a Python with mxnet 1.9.1 and onnx (onnx_compare.export_env: PyPI's mxnet wheel, x86-64;
the ONNX file does not depend on the machine):

    python onnx_export.py --symbol resnet18-symbol.json --batch 1 --size 224 --out DIR

Writes DIR/model.onnx, DIR/input.npy (the input, drawn as bench_models.bind draws it) and
DIR/mxnet.npz (this MXNet's outputs on it), and prints one `RESULT {json}` line.

A symbol ending in SoftmaxOutput is exported with two outputs, the logits (SoftmaxOutput's
input) and the probabilities, so the comparison is not flattened by the softmax. Three things
a user of MXNet 1.9.1's exporter meets are handled here: it ignores BatchNorm's fix_gamma and
exports the gamma array where MXNet computes with 1 (onnx_cell.make_arrays sets those gammas to
1 for both); its SoftmaxOutput converter fails on the
label variable (IndexError in get_inputs) unless the label is passed as a parameter (it becomes
an unused initializer, which ONNX Runtime drops); and every weight is listed as a graph input
too (IR version 3 style), which stops ONNX Runtime from treating weights as constants (no
BatchNorm folding, no constant folding), so those inputs are removed, as ONNX Runtime's own
remove_initializer_from_input.py does.
"""

import argparse
import collections
import json
import os

import mxnet as mx
import numpy as np
import onnx

from onnx_cell import heads, make_arrays  # this script's own directory is on sys.path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    symbol, names = heads(mx.sym.load(args.symbol))
    shape = (args.batch, 3, args.size, args.size)
    arrays, aux = make_arrays(symbol, shape, args.seed)
    params = {k: mx.nd.array(v) for k, v in arrays.items() if k != "data"}  # labels too (see above)
    params.update({k: mx.nd.array(v) for k, v in aux.items()})
    executor = symbol.bind(mx.cpu(), args={k: mx.nd.array(v) for k, v in arrays.items()},
                           aux_states={k: mx.nd.array(v) for k, v in aux.items()}, grad_req="null")
    executor.forward(is_train=False)
    np.savez(os.path.join(args.out, "mxnet.npz"), **{f"default:{n}": o.asnumpy() for n, o in zip(names, executor.outputs)})
    np.save(os.path.join(args.out, "input.npy"), arrays["data"])

    path = os.path.join(args.out, "model.onnx")
    mx.onnx.export_model(symbol, params, in_shapes=[shape], in_types=[np.float32], onnx_file_path=path)
    model = onnx.load(path)
    initializers = {i.name for i in model.graph.initializer}
    weights_as_inputs = [i for i in model.graph.input if i.name in initializers]
    for entry in weights_as_inputs:
        model.graph.input.remove(entry)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    ops = collections.Counter(node.op_type for node in model.graph.node)
    print("RESULT " + json.dumps(dict(
        kind="export", mxnet=mx.__version__, onnx=onnx.__version__, opset=model.opset_import[0].version,
        ir_version=model.ir_version, batch=args.batch, size=args.size, seed=args.seed,
        inputs=[i.name for i in model.graph.input], outputs=[o.name for o in model.graph.output],
        output_roles=names, ops=dict(sorted(ops.items())), weights_removed_from_inputs=len(weights_as_inputs),
        bytes=os.path.getsize(path))), flush=True)


if __name__ == "__main__":
    main()
