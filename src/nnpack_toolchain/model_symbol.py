"""Reading an MXNet ``*-symbol.json``: the file, its nodes and their attribute values.

The first stage of ``invoke check-model``: :func:`load_symbol` reads a symbol dict, a file or ``zoo:NAME``
(from :mod:`nnpack_toolchain.model_zoo`), :func:`parse_nodes` validates it into a list of :class:`Node`,
and the ``parse_*`` helpers read node attributes. :mod:`nnpack_toolchain.check_model` analyses what this returns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

Shape = tuple[int, ...]

SYMBOL_HINT = ("give the model's *-symbol.json (written by mx.sym.save or HybridBlock.export), "
               "or zoo:NAME for a built-in model")


# Reading the symbol file -------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    index: int
    op: str
    name: str
    attrs: dict[str, str]
    inputs: tuple[tuple[int, int], ...]


def fail(message: str) -> ConfigurationError:
    return ConfigurationError(message)


def load_symbol(model: dict[str, Any] | Path | str) -> tuple[dict[str, Any], str]:
    """The symbol dict and a label for it, from a dict, a file path, or ``zoo:NAME``."""
    if isinstance(model, dict):
        return model, "<symbol>"
    text = str(model)
    if isinstance(model, str) and text.startswith("zoo:"):
        from .model_zoo import get_model

        return get_model(text[4:]), text
    path = Path(text).expanduser()
    if not path.is_file():
        raise fail(f"{path}: no such file; {SYMBOL_HINT}")
    raw = path.read_bytes()
    try:
        symbol = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        what = "binary data" if isinstance(error, UnicodeDecodeError) else f"JSON error: {error}"
        raise fail(f"{path} is not JSON ({what}); {SYMBOL_HINT}, not the .params weights file") from None
    return symbol, str(path)


def parse_nodes(symbol: Any, label: str = "<symbol>") -> list[Node]:
    """Validate the structure of an MXNet symbol dict and return its nodes (topological order)."""
    if not isinstance(symbol, dict) or not isinstance(symbol.get("nodes"), list):
        found = f"keys {', '.join(map(str, list(symbol)[:6]))}" if isinstance(symbol, dict) else type(symbol).__name__
        raise fail(f"{label} is not an MXNet symbol: no 'nodes' list at the top level (found {found}); {SYMBOL_HINT}")
    raw_nodes = symbol["nodes"]
    if not raw_nodes:
        raise fail(f"{label} is an MXNet symbol with no nodes; {SYMBOL_HINT}")
    nodes: list[Node] = []
    for index, raw in enumerate(raw_nodes):
        where = f"{label}: node #{index}"
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str) or not isinstance(raw.get("name"), str):
            raise fail(f"{where} is not an MXNet node (needs string 'op' and 'name'); {SYMBOL_HINT}")
        where = f"{label}: node #{index} ({raw['name']!r}, {raw['op']})"
        attrs: dict[str, str] = {}
        for key in ("param", "attr", "attrs"):  # MXNet < 0.9 wrote "param", < 1.0 "attr"
            value = raw.get(key) or {}
            if not isinstance(value, dict):
                raise fail(f"{where}: {key!r} must be an object of strings")
            attrs.update({str(k): str(v) for k, v in value.items()})
        raw_inputs = raw.get("inputs", [])
        if not isinstance(raw_inputs, list):
            raise fail(f"{where}: 'inputs' must be a list of [node, output, version]")
        inputs = []
        for entry in raw_inputs:
            if (not isinstance(entry, list) or len(entry) < 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)):
                raise fail(f"{where}: input {entry!r} is not [node, output, version]")
            source = entry[0]
            if not 0 <= source < len(raw_nodes):
                raise fail(f"{where} takes its input from node #{source}, but the file has only "
                            f"{len(raw_nodes)} nodes (#0..#{len(raw_nodes) - 1}): the symbol file is "
                            f"truncated or edited; save it again with mx.sym.save")
            if source >= index:
                raise _order_error(raw_nodes, index, source, label, where)
            inputs.append((source, entry[1]))
        if raw["op"] == "null" and inputs:
            raise fail(f"{where}: a variable ('null' op) cannot have inputs")
        nodes.append(Node(index, raw["op"], raw["name"], attrs, tuple(inputs)))
    heads = symbol.get("heads")
    if heads is not None and (not isinstance(heads, list) or not all(
            isinstance(h, list) and h and isinstance(h[0], int) and 0 <= h[0] < len(nodes) for h in heads)):
        raise fail(f"{label}: 'heads' must list [node, output, version] of existing nodes")
    return nodes


def _raw_inputs(raw: Any, count: int) -> list[int]:
    """The input node indices of a not yet validated node (whatever of it is well formed)."""
    entries = raw.get("inputs") if isinstance(raw, dict) else None
    return [e[0] for e in entries or [] if isinstance(e, list) and e and isinstance(e[0], int)
            and not isinstance(e[0], bool) and 0 <= e[0] < count] if isinstance(entries, list) else []


def _raw_label(raw_nodes: list[Any], index: int) -> str:
    raw = raw_nodes[index]
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"{name!r} (#{index})" if isinstance(name, str) else f"#{index}"


def _order_error(raw_nodes: list[Any], index: int, source: int, label: str, where: str) -> ConfigurationError:
    """Node `index` takes an input from `source` >= index: a cycle through it, or a forward reference."""
    fix = "the file was edited or corrupted; save it again with mx.sym.save"
    if source == index:
        return fail(f"{where} takes its input from itself: a cycle, which an MXNet graph cannot have; {fix}")
    path, seen = {source: index}, {source}
    frontier = [source]
    while frontier and index not in seen:  # does `source` depend on `index`? breadth-first along inputs
        node = frontier.pop(0)
        for parent in _raw_inputs(raw_nodes[node], len(raw_nodes)):
            if parent not in seen:
                seen.add(parent)
                path[parent] = node
                frontier.append(parent)
    if index in seen:  # path[x] takes its input from x: follow it from `index` up to `source`
        chain = [index]
        while chain[-1] != source:
            chain.append(path[chain[-1]])
        cycle = [index, *reversed(chain)]  # index <- source <- ... <- index
        names = " <- ".join(_raw_label(raw_nodes, i) for i in cycle)
        return fail(f"{label}: the graph has a cycle: {names} (each node takes its input from the next), which an "
                     f"MXNet graph cannot have; {fix}")
    other = raw_nodes[source]
    what = (f" ({other['name']!r}, {other['op']})" if isinstance(other, dict) and isinstance(other.get("name"), str)
            and isinstance(other.get("op"), str) else "")
    return fail(f"{where} takes its input from node #{source}{what}, which comes after it; MXNet symbol files list "
                 f"every node after its inputs (topological order); {fix}")


def mxnet_version(symbol: dict[str, Any]) -> int | None:
    """The ``mxnet_version`` recorded in the file (e.g. 10901 for 1.9.1), if any."""
    value = (symbol.get("attrs") or {}).get("mxnet_version")
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        return value[1]
    return None


# Attribute values ------------------------------------------------------------------------------


def parse_tuple(node: Node, key: str) -> Shape | None:
    text = node.attrs.get(key)
    if text is None or text.strip() in ("", "None", "()", "[]"):
        return None
    body = text.strip().strip("()[]")
    try:
        return tuple(int(part) for part in body.split(",") if part.strip())
    except ValueError:
        raise fail(f"layer {node.name!r} ({node.op}): {key}={text!r} is not a tuple of integers") from None


def parse_int(node: Node, key: str, default: int) -> int:
    text = node.attrs.get(key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise fail(f"layer {node.name!r} ({node.op}): {key}={text!r} is not an integer") from None


def parse_bool(node: Node, key: str, default: bool) -> bool:
    text = node.attrs.get(key)
    if text is None:
        return default
    if text.strip().lower() in ("true", "1"):
        return True
    if text.strip().lower() in ("false", "0"):
        return False
    raise fail(f"layer {node.name!r} ({node.op}): {key}={text!r} is not True or False")


def parse_str(node: Node, key: str, default: str | None) -> str | None:
    text = node.attrs.get(key)
    return default if text is None or text == "None" else text.strip("'\"")


def tuple_text(values: Sequence[int]) -> str:
    return str(tuple(values))
