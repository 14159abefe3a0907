"""Presentation of a check-model report: the rich table, the summary lines, the JSON, and ``invoke check-model``.

Fed by :mod:`nnpack_toolchain.check_model`, whose :func:`~nnpack_toolchain.check_model.check_model` builds
the :class:`~nnpack_toolchain.check_model_types.ModelReport` printed here; :func:`main` is the CLI entry of tasks.py.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .check_model import DEFAULT_DATA_SHAPE, check_model, parse_shape
from .check_model_types import Decision, ModelReport, RuleSet
from .model_symbol import tuple_text

ELIGIBILITY_NOTE = ("eligible = this build may hand the layer to NNPACK; under the default MXNET_NNPACK_POLICY=auto "
                    "it times MXNet's own code against NNPACK on the first calls and keeps the faster, so MXNet "
                    "may win some eligible layers (MXNET_NNPACK_POLICY=always runs all of them on NNPACK; "
                    "MXNET_NNPACK_VERBOSE=1 logs each choice)")


def _percent(share: float) -> str:
    """A share as a percentage that never rounds to 100% or 0% unless it is exactly that."""
    text = f"{share:.1%}"
    if text == "100.0%" and share < 1:
        return ">99.9%"
    if text == "0.0%" and share > 0:
        return "<0.1%"
    return text


def _gflops(flops: int) -> str:
    return f"{flops / 1e9:.3f}"


def render_table(report: ModelReport) -> Table:
    """One row per Convolution, Pooling and FullyConnected layer, both rule sets side by side."""
    table = Table(title=f"NNPACK eligibility of {escape(report.model)}, input {report.data_input} "
                        f"{tuple_text(report.data_shape)}", title_justify="left")
    table.add_column("layer")
    table.add_column("op")
    table.add_column("", overflow="fold")
    table.add_column("output", no_wrap=True)
    table.add_column("GFLOP", justify="right")
    for rules in RuleSet:
        table.add_column(rules.label, overflow="fold", min_width=len("eligible"))
    for layer in report.layers:
        cells = []
        for rules in RuleSet:
            decision = layer.decision(rules)
            cells.append("[green]eligible[/green]" if decision.eligible
                         else f"[red]no:[/red] {escape(decision.reason)}")
        table.add_row(escape(layer.name), layer.op, escape(layer.summary), tuple_text(layer.output_shape),
                      _gflops(layer.flops), *cells)
    return table


def summary_lines(report: ModelReport) -> list[str]:
    """Totals per rule set, plus notes about the model (plain text)."""
    lines = []
    for rules in RuleSet:
        totals = report.totals(rules)
        counts = ", ".join(f"{op} {on}/{total}" for op, (on, total) in totals.layers.items())
        lines.append(f"{rules.label}: eligible for NNPACK: {_percent(totals.share)} of the "
                     f"Convolution/FullyConnected/Pooling FLOPs ({_gflops(totals.eligible_flops)} of "
                     f"{_gflops(totals.flops)} GFLOP); eligible layers: {counts or 'none'}")
    lines.append(ELIGIBILITY_NOTE)
    others = {}
    for layer in report.other_layers:
        others[layer.op] = others.get(layer.op, 0) + 1
    if others:
        lines.append("never eligible (counted as 0 FLOPs): "
                     + ", ".join(f"{op} {count}" for op, count in sorted(others.items())))
    lines.append(f"output shape: {', '.join(str(s) for s in report.output_shapes)}")
    lines.extend(f"note: {note}" for note in report.notes)
    return lines


def _decision_json(decision: Decision) -> dict[str, Any]:
    # "on_nnpack" is the old name of "eligible", kept for existing readers
    return {"eligible": decision.eligible, "on_nnpack": decision.eligible, "reason": decision.reason or None,
            "reasons": [{"code": r.code.value, "message": r.message} for r in decision.reasons]}


def report_to_json(report: ModelReport) -> dict[str, Any]:
    """The report as plain JSON data: per layer name, op, shapes, FLOPs and both decisions; totals.

    The eligibility keys have old aliases with the same values (``on_nnpack``, ``nnpack_flops``,
    ``nnpack_share``), from before the report said "eligible".
    """
    return {
        "model": report.model,
        "mxnet_version": report.mxnet_version,
        "data_input": report.data_input,
        "data_shape": list(report.data_shape),
        "batch": report.batch,
        "output_shapes": [list(s) if s is not None else None for s in report.output_shapes],
        "eligibility": ELIGIBILITY_NOTE,
        "flop_convention": "conv 2*N*Cout*Hout*Wout*Cin/groups*kh*kw; FC 2*N*in*out; pooling "
                           "N*C*Hout*Wout*kh*kw; other layers 0. Shares are of conv+FC+pooling FLOPs.",
        "layers": [
            {"name": layer.name, "op": layer.op, "summary": layer.summary,
             "input_shape": list(layer.input_shape), "output_shape": list(layer.output_shape),
             "flops": layer.flops, **{rules.value: _decision_json(layer.decision(rules)) for rules in RuleSet}}
            for layer in report.layers
        ],
        "other_layers": [{"name": o.name, "op": o.op, "output_shape": list(o.output_shape) if o.output_shape else None}
                         for o in report.other_layers],
        "totals": {
            rules.value: {"label": rules.label, "flops": t.flops, "eligible_flops": t.eligible_flops,
                          "eligible_share": round(t.share, 6),
                          "nnpack_flops": t.eligible_flops, "nnpack_share": round(t.share, 6),  # old names
                          "layers": {op: {"eligible": n, "on_nnpack": n, "total": total}
                                     for op, (n, total) in t.layers.items()}}
            for rules in RuleSet for t in [report.totals(rules)]
        },
        "notes": list(report.notes),
    }


def main(model: str, *, batch: int = 1, shape: str = ",".join(map(str, DEFAULT_DATA_SHAPE)), as_json: bool = False,
         console: Console | None = None, stdout: TextIO | None = None) -> ModelReport:
    """``invoke check-model``: print the table and totals to `console` (or JSON to `stdout`)."""
    report = check_model(model, batch=int(batch), data_shape=parse_shape(str(shape)))
    if as_json:
        out = stdout if stdout is not None else sys.stdout
        out.write(json.dumps(report_to_json(report), indent=2) + "\n")
        return report
    console = console or Console()
    console.print(render_table(report))
    for line in summary_lines(report):
        console.print(escape(line))
    return report
