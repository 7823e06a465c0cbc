"""The model as the program JAX traces: a flat, typed, named graph of its operations.

:func:`trace` runs ``apply(params, x)`` through ``jax.make_jaxpr`` once per structure and
input shape, inlines every ``jit``/``pjit`` call (keeping ``custom_jvp``/``custom_vjp`` calls
whole, so their derivatives survive, and reading a convolution that
:mod:`jaxplain.cpu.small_conv` computes by patches back as one convolution node) and turns
the equations into :class:`Node` objects over integer value ids. Each node gets

- a *name*: its dotted module path, from the name stack where the framework records one
  (Flax linen scopes; the module-call scopes :mod:`jaxplain.forms` opens for NNX
  and Equinox; ``jax.named_scope`` in any code), else the common path of the parameters
  it reads (``block.conv2`` for ``params["block"]["conv2"]["kernel"]``);
- a *kind*: ``"linear"`` (a convolution or contraction of the input with parameters),
  ``"affine"`` (an element-wise add/mul/sub/div of the input with parameters: biases,
  inference batch norm), ``"sum"`` and ``"product"`` (of two activations), ``"max_pool"``,
  ``"sum_pool"``, ``"reduce"``, ``"structural"`` (reshape, transpose, concatenate, pad...),
  ``"elementwise"``, ``"constant"`` (reads no input) or ``"other"``.

Chains of element-wise operations of one activation (and scalar constants), under one
name, are fused into :class:`Unit` s: ``max(x, 0)`` is a ReLU, ``x * sigmoid(x)`` a SiLU,
the tanh form of GELU a GELU, whatever way the code spells them; ``exp(x - max) / sum``
is a softmax. A unit's *kind* names the function (``"relu"``, ``"gelu"``, ``"softmax"``,
``"max_pool"``...). Rules (guided backprop, DeepLift multipliers) attach to units; every
other node is evaluated as traced. Source: JAX's ``jaxpr`` language
(docs: "Understanding Jaxprs") and ``jax.core.eval_jaxpr``, which the interpreter in
:mod:`jaxplain.program.interpret` follows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import numpy as np
from jax.extend import core as jcore

from jaxplain.cpu import small_conv
from jaxplain.forms import SCOPE_MARK

Atom = int | jcore.Literal

INLINED = ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_lin")
STRUCTURAL = {
    "reshape", "transpose", "broadcast_in_dim", "concatenate", "slice", "squeeze", "expand_dims", "pad",
    "convert_element_type", "copy", "copy_p", "rev", "dynamic_slice", "gather", "select_and_gather_add",
    "split", "reduce_precision", "stop_gradient", "optimization_barrier",
}
ELEMENTWISE_UNARY = {
    "neg", "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erfc", "erf_inv", "abs", "sign",
    "sqrt", "rsqrt", "cbrt", "integer_pow", "square", "sin", "cos", "floor", "ceil", "round", "is_finite", "not",
    "convert_element_type", "copy", "copy_p", "reduce_precision", "stop_gradient", "real", "imag",
}
ELEMENTWISE_BINARY = {
    "add", "sub", "mul", "div", "max", "min", "pow", "atan2", "rem", "gt", "ge", "lt", "le", "eq", "ne",
    "and", "or", "xor", "nextafter", "select_n", "clamp", "add_any",
}
LINEAR_IN_INPUT = {"neg", "convert_element_type", "copy", "copy_p", "reduce_precision", "real", "imag"}


@dataclass
class Node:
    """One traced operation: an equation over value ids, with its name and kind."""

    index: int
    eqn: Any
    ins: tuple[Atom, ...]
    outs: tuple[int, ...]
    name: str
    functions: tuple[str, ...]
    kind: str = "other"
    params_read: tuple[str, ...] = ()
    named_by: str = ""

    @property
    def primitive(self) -> str:
        return self.eqn.primitive.name

    def describe(self) -> str:
        where = f" in {self.name!r}" if self.name else ""
        return f"{self.primitive}{where}"


@dataclass
class Unit:
    """A fused element-wise function (or softmax, or pooling) of one activation: where rules attach.

    ``nodes`` are evaluated in order from ``input`` to ``output``; ``kind`` names the function.
    """

    kind: str
    nodes: tuple[int, ...]
    input: int
    output: int
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[int, ...]:
        """The activations the unit reads: ``input``, then ``attributes["more_inputs"]`` (a sum's second term)."""
        return (self.input,) + tuple(self.attributes.get("more_inputs", ()))

    def describe(self) -> str:
        where = f" at {self.name!r}" if self.name else ""
        return f"{self.kind}{where}"


@dataclass
class Graph:
    """The traced program: nodes in execution order, inputs, outputs, units and layer names."""

    nodes: list[Node]
    param_ids: tuple[int, ...]
    param_paths: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    input_ids: tuple[int, ...]
    output_ids: tuple[Atom, ...]
    consts: dict[int, Any]
    out_tree: Any
    depends: set[int]
    units: dict[int, Unit]
    consumers: dict[int, list[int]]
    producer: dict[int, int]

    def unit_list(self) -> list[Unit]:
        return [self.units[k] for k in sorted(self.units)]

    def bias_layers(self) -> list[str]:
        """Leaf layers that add a bias: a convolution (4-d kernel) with its bias, or an inference batch norm.

        FullGrad's bias layers (pytorch-grad-cam's ``Conv2d`` with a bias and ``BatchNorm2d``), found from
        the node kinds: a layer of linear and affine nodes whose linear node reads a 4-d parameter, or a
        layer of affine nodes alone.
        """
        shape_of = dict(zip(self.param_paths, self.param_shapes))
        found: dict[str, list[Node]] = {}
        for node in self.nodes:
            if node.name and node.kind != "constant":
                found.setdefault(node.name, []).append(node)
        names = []
        for name, nodes in found.items():
            kinds = {node.kind for node in nodes}
            if "affine" not in kinds or not kinds <= {"linear", "affine", "structural"}:
                continue
            linear = [node for node in nodes if node.kind == "linear"]
            if linear and not any(len(shape_of.get(path, ())) == 4 for node in linear for path in node.params_read):
                continue
            names.append(name)
        return names

    def aval(self, value: int) -> Any:
        """The abstract value (shape, dtype) of a node output."""
        node = self.nodes[self.producer[value]]
        return node.eqn.outvars[node.outs.index(value)].aval

    def layer_names(self) -> list[str]:
        """Every dotted layer path (each prefix of each node name), in order of first appearance."""
        names: dict[str, None] = {}
        for node in self.nodes:
            if node.name and node.ins and any(isinstance(a, int) and a in self.depends for a in node.ins):
                parts = node.name.split(".")
                for end in range(1, len(parts) + 1):
                    names.setdefault(".".join(parts[:end]))
        return list(names)


def key_name(entry: Any) -> str:
    """One pytree key path entry as a path component."""
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def leaf_paths(params: Any) -> tuple[str, ...]:
    """Dotted paths of the leaves of ``params`` (``block.conv2.kernel``; NNX's trailing ``value`` dropped)."""
    paths = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [key_name(entry) for entry in path]
        if parts and parts[-1] in ("value", "raw_value"):
            parts = parts[:-1]
        paths.append(".".join(parts))
    return tuple(paths)


def _scopes(name_stack: Any) -> tuple[str, ...]:
    """The named scopes of a name stack, transformations (``vmap``, ``jvp``) left out."""
    return tuple(entry.name for entry in getattr(name_stack, "stack", ()) if type(entry).__name__ == "Scope")




class _Flattener:
    def __init__(self, strip: int, marked: bool):
        self.nodes: list[Node] = []
        self.strip = strip
        self.marked = marked
        self.next_id = 0
        self.consts: dict[int, Any] = {}

    def fresh(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def atom(self, env: dict, var: Any) -> Atom:
        if isinstance(var, jcore.Literal):
            return var
        return env[var]

    def run(self, jaxpr: Any, env: dict, stack: tuple[str, ...], functions: tuple[str, ...]) -> None:
        for eqn in jaxpr.eqns:
            full = stack + _scopes(eqn.source_info.name_stack)
            eqn = small_conv.convolution_equation(eqn) or eqn
            primitive = eqn.primitive.name
            if primitive in INLINED and ("jaxpr" in eqn.params or "call_jaxpr" in eqn.params):
                inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
                closed = inner if hasattr(inner, "consts") else None
                inner_jaxpr = inner.jaxpr if closed is not None else inner
                inner_env = {}
                if closed is not None:
                    for var, value in zip(inner_jaxpr.constvars, closed.consts):
                        value_id = self.fresh()
                        self.consts[value_id] = value
                        inner_env[var] = value_id
                for var, outer in zip(inner_jaxpr.invars, eqn.invars):
                    outer_atom = self.atom(env, outer)
                    if isinstance(outer_atom, jcore.Literal):
                        value_id = self.fresh()
                        self.consts[value_id] = outer_atom.val
                        outer_atom = value_id
                    inner_env[var] = outer_atom
                label = eqn.params.get("name")
                self.run(inner_jaxpr, inner_env, full, functions + ((str(label),) if label else ()))
                for var, inner_var in zip(eqn.outvars, inner_jaxpr.outvars):
                    resolved = self.atom(inner_env, inner_var)
                    if isinstance(resolved, jcore.Literal):
                        value_id = self.fresh()
                        self.consts[value_id] = resolved.val
                        resolved = value_id
                    env[var] = resolved
                continue
            ins = tuple(self.atom(env, var) for var in eqn.invars)
            outs = []
            for var in eqn.outvars:
                value_id = self.fresh()
                env[var] = value_id
                outs.append(value_id)
            parts = [part for part in full[self.strip:] if "->" not in part]
            if self.marked:
                parts = [part[len(SCOPE_MARK):] for part in parts if part.startswith(SCOPE_MARK)][-1:]
            name = ".".join(parts)
            self.nodes.append(Node(len(self.nodes), eqn, ins, tuple(outs), name, functions,
                                   named_by="scope" if name else ""))


def _static_value(graph: "_Builder", atom: Atom, depth: int = 8) -> Any:
    """A literal or constant operand's value, through the casts and broadcasts of constants; else None."""
    if isinstance(atom, jcore.Literal):
        return atom.val
    if atom in graph.consts:
        return graph.consts[atom]
    producer = graph.producer.get(atom)
    if depth and producer is not None:
        node = graph.nodes[producer]
        if node.primitive in ("convert_element_type", "broadcast_in_dim") and len(node.ins) == 1:
            return _static_value(graph, node.ins[0], depth - 1)
    return None


def _literal_values(graph: "_Builder", node: Node) -> list[float]:
    values = []
    for atom in node.ins:
        value = None if graph.dependent(atom) else _static_value(graph, atom)
        if value is not None and np.asarray(value).size == 1:
            values.append(float(np.asarray(value).reshape(())))
    return values


class _Builder:
    def __init__(self, flat: _Flattener, param_ids, param_paths, input_ids, output_ids):
        self.nodes = flat.nodes
        self.consts = flat.consts
        self.param_ids = tuple(param_ids)
        self.param_paths = tuple(param_paths)
        self.input_ids = tuple(input_ids)
        self.output_ids = tuple(output_ids)
        self.depends: set[int] = set(input_ids)
        self.reads: dict[int, frozenset[str]] = {pid: frozenset([path]) for pid, path in zip(param_ids, param_paths)}
        self.producer: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = {}

    def analyse(self) -> None:
        for node in self.nodes:
            reads: set[str] = set()
            dependent = False
            for atom in node.ins:
                if isinstance(atom, int):
                    self.consumers.setdefault(atom, []).append(node.index)
                    dependent = dependent or atom in self.depends
                    if atom not in self.depends:
                        reads |= self.reads.get(atom, frozenset())
            for out in node.outs:
                self.producer[out] = node.index
                if dependent:
                    self.depends.add(out)
                else:
                    self.reads[out] = frozenset(reads)
            if dependent:
                node.params_read = tuple(sorted(reads))
                layer = _common_layer(reads) if reads else ""
                if not node.name and layer:
                    node.name, node.named_by = layer, "params"
                elif layer.startswith(node.name + "."):
                    node.name = layer
            node.kind = self.kind_of(node, dependent)

    def dependent(self, atom: Atom) -> bool:
        return isinstance(atom, int) and atom in self.depends

    def kind_of(self, node: Node, dependent: bool) -> str:
        if not dependent:
            return "constant"
        primitive = node.primitive
        live = [atom for atom in node.ins if self.dependent(atom)]
        if primitive in ("conv_general_dilated", "dot_general"):
            return "linear" if len(live) == 1 else "product"
        if primitive == "reduce_window_max":
            return "max_pool"
        if primitive in ("reduce_window_sum", "reduce_window"):
            return "sum_pool"
        if primitive in ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin", "cumsum", "reduce_prod"):
            return "reduce"
        if primitive in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):
            return "custom"
        if primitive in STRUCTURAL:
            return "structural"
        if primitive in ("add", "sub", "add_any"):
            if len(live) == 2:
                return "sum"
            return "affine" if self.reads_params(node) else "elementwise"
        if primitive in ("mul", "div"):
            if len(live) == 2:
                return "product"
            return "affine" if self.reads_params(node) else "elementwise"
        if primitive in ELEMENTWISE_UNARY or primitive in ELEMENTWISE_BINARY:
            return "elementwise"
        return "other"

    def reads_params(self, node: Node) -> bool:
        return any(isinstance(a, int) and not self.dependent(a) and self.reads.get(a) for a in node.ins)


def _common_layer(reads: set[str] | frozenset[str]) -> str:
    """The layer path shared by parameter paths (``block.conv2`` for its ``kernel`` and ``bias``)."""
    split = [path.split(".") for path in sorted(reads)]
    if len(split) == 1:
        return ".".join(split[0][:-1])
    common = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(common)


def _custom_body_kind(node: Node) -> str | None:
    """What a ``custom_jvp``/``custom_vjp`` call computes, read from its body: None if not element-wise."""
    body = node.eqn.params.get("call_jaxpr", node.eqn.params.get("fun_jaxpr"))
    body = getattr(body, "jaxpr", body)
    if body is None:
        return None
    primitives = body_primitives(body)
    if "reduce_window_max" in primitives:
        return "max_pool"
    allowed = ELEMENTWISE_UNARY | ELEMENTWISE_BINARY | STRUCTURAL
    if all(p in allowed or p.startswith("fn:") for p in primitives):
        return "elementwise"
    return None


def body_primitives(jaxpr: Any) -> list[str]:
    """The primitives a jaxpr runs, in order, nested calls inlined (a named call also listed as ``fn:<name>``).

    Args:
        jaxpr: an open jaxpr (a custom call's body).

    Returns:
        Primitive names.
    """
    found = []
    for eqn in jaxpr.eqns:
        inner = None
        for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            if key in eqn.params:
                inner = eqn.params[key]
        if inner is not None and eqn.primitive.name in INLINED + ("custom_jvp_call", "custom_vjp_call"):
            if eqn.params.get("name"):
                found.append(f"fn:{eqn.params['name']}")
            found.extend(body_primitives(getattr(inner, "jaxpr", inner)))
        else:
            found.append(eqn.primitive.name)
    return found


def _units(builder: _Builder) -> dict[int, Unit]:
    """Fuse each element-wise function of one activation (same name) into a unit, and find softmaxes and pools."""
    nodes = builder.nodes
    units: dict[int, Unit] = {}
    claimed: set[int] = set()
    for unit in _softmaxes(builder, claimed):
        units[unit.nodes[0]] = unit
        claimed.update(unit.nodes)
    root: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    root_name: dict[int, str] = {}
    for node in nodes:
        if node.kind == "constant" or node.index in claimed:
            continue
        live = [a for a in node.ins if builder.dependent(a)]
        elementwise = node.kind in ("elementwise", "product", "sum") or node.primitive in LINEAR_IN_INPUT or (
            node.kind == "custom" and _custom_body_kind(node) == "elementwise")
        if node.kind in ("product", "sum") and node.primitive not in ("mul", "div", "add", "sub"):
            elementwise = False
        if elementwise and node.primitive in ("add", "sub", "mul", "div") and builder.reads_params(node):
            elementwise = False
        if elementwise and len(node.outs) == 1 and all(_scalar_or_dependent(builder, a) for a in node.ins):
            roots = {root.get(a, a) for a in live}
            if len(roots) == 1:
                start = roots.pop()
                if root_name.setdefault(start, node.name) == node.name:
                    root[node.outs[0]] = start
                    members.setdefault(start, []).append(node.index)
                    continue
    for start, indices in members.items():
        output = _single_output(builder, start, indices)
        if output is None:
            continue
        kind = _classify(builder, indices, start)
        if kind is None:
            continue
        if _is_statistic(builder, start, nodes[indices[0]].name) or (
                _squares(builder, indices) and _feeds_reduction(builder, output, nodes[indices[0]].name)):
            kind = "statistic"
        units[indices[0]] = Unit(kind, tuple(indices), start, output, nodes[indices[0]].name)
        claimed.update(indices)
    for node in nodes:
        if node.index in claimed:
            continue
        pooled = node.kind == "max_pool" or (node.kind == "custom" and _custom_body_kind(node) == "max_pool")
        if pooled and len(node.outs) == 1:
            live = [a for a in node.ins if builder.dependent(a)]
            units[node.index] = Unit("max_pool", (node.index,), live[0], node.outs[0], node.name,
                                     pool_attributes(node))
    by_output = {unit.output: unit for unit in units.values()}
    for unit in units.values():
        for index in unit.nodes:
            nodes[index].kind = "unit"
        source = unit.input
        while source not in by_output and source in builder.producer:
            node = nodes[builder.producer[source]]
            live = [a for a in node.ins if builder.dependent(a)]
            if node.kind != "structural" or len(live) != 1:
                break
            source = live[0]
        if source in by_output:
            unit.attributes["reads"] = by_output[source]
    return units


def _is_statistic(builder: _Builder, value: int, name: str) -> bool:
    """Whether ``value`` is computed from a reduction in the same named layer (a norm's variance, clamped).

    ``max(var, 0)`` in Flax's LayerNorm is no ReLU of the network: such units are kind ``"statistic"``.
    In code outside any named layer the reduction must be one of squares (a variance written
    inline, ``((h - mean) ** 2).mean()``), so that ``relu(x.mean())`` stays a ReLU.
    """
    seen, stack = set(), [value]
    while stack:
        atom = stack.pop()
        if atom in seen or atom not in builder.producer:
            continue
        seen.add(atom)
        node = builder.nodes[builder.producer[atom]]
        if node.name != name or node.kind in ("linear", "unit", "max_pool", "sum_pool"):
            continue
        if node.kind == "reduce":
            if name or _of_squares(builder, node):
                return True
            continue
        stack.extend(a for a in node.ins if builder.dependent(a))
    return False


def _is_square(node: Node) -> bool:
    if node.primitive == "square" or (node.primitive == "integer_pow" and node.eqn.params.get("y") == 2):
        return True
    return node.primitive == "mul" and len(node.ins) == 2 and node.ins[0] == node.ins[1]


def _of_squares(builder: _Builder, node: Node) -> bool:
    """Whether a reduction reads a square (``x * x``, ``x ** 2``)."""
    live = [a for a in node.ins if builder.dependent(a)]
    if len(live) != 1 or live[0] not in builder.producer:
        return False
    return _is_square(builder.nodes[builder.producer[live[0]]])


def _squares(builder: _Builder, indices: list[int]) -> bool:
    """Whether a fused chain squares its input (a variance's ``(x - mean) ** 2``), not a ReLU before a mean."""
    return any(_is_square(builder.nodes[i]) for i in indices)


def _feeds_reduction(builder: _Builder, value: int, name: str) -> bool:
    """Whether ``value`` only feeds a reduction in the same named layer (a norm's ``x * x``)."""
    consumers = [builder.nodes[i] for i in builder.consumers.get(value, [])]
    return bool(consumers) and all(node.name == name and node.kind == "reduce" for node in consumers)


def _scalar_or_dependent(builder: _Builder, atom: Atom) -> bool:
    if isinstance(atom, jcore.Literal):
        return np.asarray(atom.val).size == 1
    if builder.dependent(atom):
        return True
    value = builder.consts.get(atom)
    if value is not None:
        return np.asarray(value).size == 1
    producer = builder.producer.get(atom)
    if producer is None:
        return False
    node = builder.nodes[producer]
    if node.primitive in ("broadcast_in_dim", "convert_element_type") and not node.params_read:
        return all(_scalar_or_dependent(builder, a) for a in node.ins)
    return False


def _single_output(builder: _Builder, start: int, indices: list[int]) -> int | None:
    inside = set(indices)
    produced = [out for i in indices for out in builder.nodes[i].outs]
    escaping = [out for out in produced
                if out in builder.output_ids or any(c not in inside for c in builder.consumers.get(out, []))]
    return escaping[0] if len(escaping) == 1 and escaping[0] == produced[-1] else None


_JAX_NN = {"relu": "relu", "relu6": "relu6", "silu": "silu", "swish": "silu", "gelu": "gelu", "elu": "elu",
           "celu": "elu", "selu": "selu", "leaky_relu": "leaky_relu", "softplus": "softplus", "sigmoid": "sigmoid",
           "hard_tanh": "hard_tanh", "hard_sigmoid": "hard_sigmoid", "hard_silu": "hard_silu",
           "hard_swish": "hard_silu", "mish": "mish", "log_sigmoid": "log_sigmoid", "tanh": "tanh"}


def _classify(builder: _Builder, indices: list[int], start: int) -> str | None:
    """Name the element-wise function a fused chain computes; None when it is linear."""
    nodes = [builder.nodes[i] for i in indices]
    primitives = Counter()
    for node in nodes:
        if node.primitive in ("custom_jvp_call", "custom_vjp_call"):
            primitives.update(body_primitives(getattr(node.eqn.params["call_jaxpr"], "jaxpr",
                                                       node.eqn.params["call_jaxpr"])))
            label = node.eqn.params.get("name")
            if label:
                primitives[f"fn:{label}"] += 1
        else:
            primitives[node.primitive] += 1
    named = {f for node in nodes for f in node.functions if f in _JAX_NN}
    labels = {key[3:] for key in primitives if key.startswith("fn:") and key[3:] in _JAX_NN}
    if len(named | labels) == 1 and all(_JAX_NN.get(f) for f in named | labels):
        return _JAX_NN[(named | labels).pop()]
    nonlinear = {p for p in primitives if not p.startswith("fn:")} - LINEAR_IN_INPUT - {"add", "sub", "mul", "div"}
    if not nonlinear and not _multiplies_itself(builder, nodes):
        return None
    literals = {v for node in nodes for v in _literal_values(builder, node)}
    transcendental = nonlinear & {"exp", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erfc", "integer_pow",
                                  "pow", "sqrt", "rsqrt"}
    if not transcendental:
        slopes = literals - {0.0, 1.0}
        if nonlinear <= {"max", "min", "gt", "ge", "lt", "le", "and", "select_n", "clamp"} and 6.0 in literals \
                and 0.0 in literals:
            return "relu6"
        if nonlinear <= {"max", "gt", "ge", "lt", "le", "select_n"}:
            if primitives["mul"] and slopes and slopes <= {v for v in slopes if 0 < v < 1}:
                return "leaky_relu"
            if 0.0 in literals and not slopes:
                return "relu"
        return "elementwise"
    if transcendental == {"tanh"}:
        return "tanh"
    if transcendental == {"logistic"}:
        return "silu" if _multiplies_itself(builder, nodes) else "sigmoid"
    if transcendental in ({"tanh", "integer_pow"}, {"erf"}, {"erfc"}, {"tanh", "pow"}):
        return "gelu"
    if "expm1" in transcendental and "log1p" not in transcendental:
        return "elu"
    if transcendental & {"log1p", "log"} and transcendental & {"exp"}:
        return "softplus"
    return "elementwise"


def _multiplies_itself(builder: _Builder, nodes: list[Node]) -> bool:
    return any(node.primitive == "mul" and sum(builder.dependent(a) for a in node.ins) == 2 for node in nodes)


def _softmaxes(builder: _Builder, claimed: set[int]) -> list[Unit]:
    """``exp(x - stop_gradient(max x)) / sum exp(...)`` over an axis (``jax.nn.softmax``): one unit each."""
    found = []
    for node in builder.nodes:
        if node.primitive != "div" or node.index in claimed or node.kind == "constant":
            continue
        numerator, denominator = node.ins
        if not (builder.dependent(numerator) and builder.dependent(denominator)):
            continue
        exp_node = builder.nodes[builder.producer[numerator]]
        chain = _chain_back(builder, denominator, ("broadcast_in_dim", "reshape"))
        if exp_node.primitive != "exp" or chain is None:
            continue
        reduce_node = builder.nodes[chain[-1]]
        if reduce_node.primitive != "reduce_sum" or reduce_node.ins[0] != numerator:
            continue
        sub_node = builder.nodes[builder.producer[exp_node.ins[0]]] if builder.dependent(exp_node.ins[0]) else None
        if sub_node is None or sub_node.primitive != "sub":
            continue
        source = sub_node.ins[0]
        shift = _chain_back(builder, sub_node.ins[1], ("broadcast_in_dim", "stop_gradient", "max", "reshape"))
        if shift is None or builder.nodes[shift[-1]].primitive != "reduce_max":
            continue
        indices = sorted(set(shift + chain + [sub_node.index, exp_node.index, node.index]))
        if any(i in claimed for i in indices) or builder.nodes[shift[-1]].ins[0] != source:
            continue
        axes = tuple(reduce_node.eqn.params["axes"])
        found.append(Unit("softmax", tuple(indices), source, node.outs[0], node.name, {"axes": axes}))
    return found


def _chain_back(builder: _Builder, atom: Atom, passing: tuple[str, ...]) -> list[int] | None:
    """Producers of ``atom`` back through ``passing`` primitives to the first other one (its index last)."""
    chain = []
    while isinstance(atom, int) and atom in builder.producer:
        node = builder.nodes[builder.producer[atom]]
        chain.append(node.index)
        if node.primitive not in passing:
            return chain
        live = [a for a in node.ins if builder.dependent(a)]
        if len(live) != 1:
            return None
        atom = live[0]
    return None


def pool_attributes(node: Node) -> dict[str, Any]:
    """A max pool's ``window``, ``strides`` and ``padding`` (per axis), from the node or its custom call's body.

    Args:
        node: a ``reduce_window_max`` node, or a custom call whose body holds one.

    Returns:
        The three tuples, or an empty dict where no max pool is found.
    """
    if node.primitive == "reduce_window_max":
        params = node.eqn.params
        return {"window": tuple(params["window_dimensions"]), "strides": tuple(params["window_strides"]),
                "padding": tuple(tuple(p) for p in params["padding"])}
    body = node.eqn.params["call_jaxpr"]
    for eqn in getattr(body, "jaxpr", body).eqns:
        if eqn.primitive.name == "reduce_window_max":
            params = eqn.params
            return {"window": tuple(params["window_dimensions"]), "strides": tuple(params["window_strides"]),
                    "padding": tuple(tuple(p) for p in params["padding"])}
    return {}


def trace(apply: Callable[[Any, Any], Any], params: Any, inputs: Any, *, strip: int = 0,
          naming: Callable[[], Any] | None = None) -> Graph:
    """The graph of ``apply(params, inputs)`` (traced abstractly: nothing is computed).

    Args:
        apply: the model as a function of its parameters and a batch.
        params: the parameter pytree (its leaves become named graph inputs).
        inputs: an array or ``jax.ShapeDtypeStruct`` of the batch.
        strip: leading name-stack components to drop (a linen model's own class name).
        naming: a context-manager factory entered while tracing (module-call scopes).

    Returns:
        The :class:`Graph`.
    """
    leaves, _ = jax.tree_util.tree_flatten(params)
    paths = leaf_paths(params)
    spec = jax.ShapeDtypeStruct(inputs.shape, inputs.dtype)

    def flat_apply(leaf_values, x):
        return apply(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaf_values), x)

    if naming is not None:
        with naming():
            closed, out_shape = jax.make_jaxpr(flat_apply, return_shape=True)(leaves, spec)
    else:
        closed, out_shape = jax.make_jaxpr(flat_apply, return_shape=True)(leaves, spec)
    flat = _Flattener(strip, marked=naming is not None)
    env: dict = {}
    for var, value in zip(closed.jaxpr.constvars, closed.consts):
        env[var] = flat.fresh()
        flat.consts[env[var]] = value
    ids = []
    for var in closed.jaxpr.invars:
        env[var] = flat.fresh()
        ids.append(env[var])
    flat.run(closed.jaxpr, env, (), ())
    param_ids, input_ids = ids[: len(leaves)], ids[len(leaves):]
    output_ids = tuple(flat.atom(env, var) for var in closed.jaxpr.outvars)
    builder = _Builder(flat, param_ids, paths, input_ids, output_ids)
    builder.analyse()
    units = _units(builder)
    shapes = tuple(tuple(leaf.shape) for leaf in leaves)
    return Graph(builder.nodes, builder.param_ids, builder.param_paths, shapes, builder.input_ids, output_ids,
                 builder.consts,
                 jax.tree_util.tree_structure(out_shape), builder.depends, units, builder.consumers, builder.producer)
