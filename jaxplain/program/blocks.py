"""The program's layers as relevance methods see them: linear blocks, merged norms, sums, pools.

Relevance rules (LRP, excitation backprop) act on *layers*, not on single operations. One
pass over a :class:`~jaxplain.program.graph.Graph` groups its nodes into :class:`Block` s
(units over one or two activations, as :class:`~jaxplain.program.graph.Unit`), each with a
*kind* a composite maps to a rule:

- ``"convolution"`` and ``"dense"``: a linear node reading parameters (``conv_general_dilated``,
  ``dot_general``) and the affine nodes of the same layer after it (its bias), through
  shape-only reshapes. An affine-only layer reading nothing but such a block's output
  (an inference batch norm, a layer scale) is folded into it when the composite merges
  batch norms: Zennit's ``MergeBatchNorm`` canonizer, found by data flow;
- ``"batch_norm"``: an affine-only layer left unmerged;
- ``"sum"``: the sum (or difference) of two activations, a residual addition;
- ``"avg_pool"``: a ``reduce_window`` sum, a ``reduce_sum`` or a contraction with a constant
  that is no parameter (an adaptive pooling matrix), with the division by the window that
  follows (average pooling, ``x.mean(...)``);
- ``"scale"``: element-wise operations linear in one activation with constants (``x / 2``);
- ``"activation"``: a fused element-wise non-linearity (ReLU, GELU, sigmoid...);
- ``"max_pool"``, ``"softmax"``: those units;
- ``"product"``: the product of two activations (a gate ``h * sigmoid(g)``, attention's
  ``Q K^T`` and ``A V``);
- ``"norm"``: a layer that normalises by a statistic of its input (LayerNorm, RMSNorm).

Structural operations (reshape, transpose, concatenate, slice, pad) keep their gradient, which
routes relevance without changing it. Anything else is an operation no rule can be given, and
:func:`unclassified` lists it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxplain.program.graph import Graph, Node, Unit, _static_value

Block = Unit

LINEAR_KINDS = ("convolution", "dense")
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "sigmoid", "tanh", "softplus",
               "hard_tanh", "hard_sigmoid", "hard_silu", "mish", "log_sigmoid", "elementwise")
NONNEGATIVE_UNITS = ("relu", "relu6", "sigmoid", "softplus", "softmax", "hard_sigmoid")
SHAPE_ONLY = ("reshape", "squeeze", "expand_dims", "transpose", "convert_element_type", "copy", "copy_p")
GRADIENT_KINDS = ("structural", "constant")
"""Node kinds left to their gradient: structural operations and constants."""


@dataclass(frozen=True)
class Blocks:
    """The relevance view of one graph.

    Attributes:
        blocks: every block, in execution order of their last node.
        merged: for each merged norm layer's name, the linear block's name it was folded into.
        nonnegative: names of linear blocks whose input is non-negative by construction.
    """

    blocks: tuple[Block, ...]
    merged: tuple[tuple[str, str], ...]
    nonnegative: tuple[str, ...]

    def first(self, kinds: tuple[str, ...]) -> Block | None:
        """The first block (in execution order) of one of ``kinds``."""
        return next((block for block in self.blocks if block.kind in kinds), None)


def _live(graph: Graph, node: Node) -> list[int]:
    return [a for a in node.ins if isinstance(a, int) and a in graph.depends]


def _only_consumer(graph: Graph, value: int) -> Node | None:
    consumers = graph.consumers.get(value, [])
    if len(consumers) != 1 or value in graph.output_ids:
        return None
    return graph.nodes[consumers[0]]


def _is_affine(graph: Graph, node: Node, value: int) -> bool:
    """An element-wise add/sub/mul/div of ``value`` with parameters, affine in ``value``, same shape out."""
    if node.kind != "affine" or len(_live(graph, node)) != 1:
        return False
    if node.primitive == "div" and node.ins[0] != value:
        return False
    return tuple(graph.aval(node.outs[0]).shape) == tuple(graph.aval(value).shape)


def _is_shape_only(graph: Graph, node: Node) -> bool:
    if node.kind != "structural" or len(_live(graph, node)) != 1:
        return False
    if node.primitive in SHAPE_ONLY:
        return True
    if node.primitive == "broadcast_in_dim":
        return int(np.prod(graph.aval(node.outs[0]).shape)) == int(np.prod(graph.aval(_live(graph, node)[0]).shape))
    return False


def _follow(graph: Graph, value: int, name: str, claimed: set[int]) -> tuple[list[int], int]:
    """Affine and shape-only nodes of layer ``name`` after ``value`` (a chain of single consumers)."""
    chain = []
    while True:
        node = _only_consumer(graph, value)
        if node is None or node.index in claimed or node.name != name:
            return chain, value
        if not (_is_affine(graph, node, value) or _is_shape_only(graph, node)):
            return chain, value
        chain.append(node.index)
        value = node.outs[0]


def _layer_nodes(graph: Graph) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for node in graph.nodes:
        if node.kind != "constant":
            found.setdefault(node.name, []).append(node.index)
    return found


def _affine_layer(graph: Graph, value: int, by_name: dict[str, list[int]], claimed: set[int]) -> tuple[list[int], int]:
    """The nodes of the affine-only layer (all of its live nodes) that reads ``value`` and nothing else."""
    node = _only_consumer(graph, value)
    if node is None or node.index in claimed or not node.name or not _is_affine(graph, node, value):
        return [], value
    chain, end = _follow(graph, value, node.name, claimed)
    if not any(graph.nodes[i].kind == "affine" for i in chain) or sorted(chain) != sorted(by_name[node.name]):
        return [], value
    return chain, end


def _linear_kind(graph: Graph, node: Node) -> str:
    """A convolution, or a contraction reading a 4-d kernel (a convolution computed over gathered patches)."""
    if node.primitive == "conv_general_dilated":
        return "convolution"
    shapes = dict(zip(graph.param_paths, graph.param_shapes))
    return "convolution" if any(len(shapes.get(path, ())) == 4 for path in node.params_read) else "dense"


def _scalar_constant(graph: Graph, node: Node) -> bool:
    """An element-wise node linear in its one activation, its other operand a constant (no parameter)."""
    if node.kind != "elementwise" or len(_live(graph, node)) != 1 or len(node.outs) != 1:
        return False
    if node.primitive in ("neg", "convert_element_type", "copy", "copy_p", "reduce_precision"):
        return True
    if node.primitive not in ("mul", "div", "add", "sub"):
        return False
    live = _live(graph, node)[0]
    if node.primitive == "div" and node.ins[0] != live:
        return False
    return tuple(graph.aval(node.outs[0]).shape) == tuple(graph.aval(live).shape)


def analyse(graph: Graph, *, merge: bool = True) -> Blocks:
    """Group ``graph``'s nodes into relevance blocks (see the module docstring).

    Args:
        graph: the traced program.
        merge: fold affine-only layers (inference batch norms) into the linear block they read.

    Returns:
        The :class:`Blocks`.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> from jaxplain import program
        >>> model = program.structured(jx.demo.load_model(), "example")
        >>> view = analyse(program.graph_of(model, jnp.zeros((1, 16, 16, 3))))
        >>> [block.kind for block in view.blocks][:3]
        ['convolution', 'activation', 'max_pool']
    """
    by_name = _layer_nodes(graph)
    claimed: set[int] = set()
    for unit in graph.units.values():
        claimed.update(unit.nodes)
    blocks: list[Block] = []
    merged: list[tuple[str, str]] = []
    for block in _norms(graph):
        blocks.append(block)
        claimed.update(block.nodes)
    for node in graph.nodes:
        if node.index in claimed or node.kind == "constant":
            continue
        live = _live(graph, node)
        pooled = node.kind == "linear" and not node.params_read
        if node.kind == "linear" and not pooled and len(live) == 1 and len(node.outs) == 1:
            chain, end = _follow(graph, node.outs[0], node.name, claimed)
            members = [node.index] + chain
            attributes = {"linear": node.index}
            if merge:
                norm, norm_end = _affine_layer(graph, end, by_name, claimed | set(members))
                if norm:
                    merged.append((graph.nodes[norm[0]].name, node.name))
                    attributes["merged"] = graph.nodes[norm[0]].name
                    members, end = members + norm, norm_end
            blocks.append(Block(_linear_kind(graph, node), tuple(members), live[0], end, node.name, attributes))
            claimed.update(members)
        elif node.kind == "affine" and len(live) == 1 and _is_affine(graph, node, live[0]):
            chain, end = _follow(graph, node.outs[0], node.name, claimed)
            members = [node.index] + chain
            blocks.append(Block("batch_norm", tuple(members), live[0], end, node.name))
            claimed.update(members)
        elif node.kind == "sum" and len(live) == 2 and len(node.outs) == 1:
            blocks.append(Block("sum", (node.index,), live[0], node.outs[0], node.name,
                                {"more_inputs": (live[1],)}))
            claimed.add(node.index)
        elif (node.kind == "sum_pool" or node.primitive == "reduce_sum" or pooled) and len(live) == 1 \
                and len(node.outs) == 1:
            members, value = [node.index], node.outs[0]
            while True:
                follower = _only_consumer(graph, value)
                if follower is None or follower.index in claimed or not (
                        _scalar_constant(graph, follower) or _is_shape_only(graph, follower)):
                    break
                members.append(follower.index)
                value = follower.outs[0]
            blocks.append(Block("avg_pool", tuple(members), live[0], value, node.name))
            claimed.update(members)
        elif _scalar_constant(graph, node):
            members, value = [node.index], node.outs[0]
            while True:
                follower = _only_consumer(graph, value)
                if follower is None or follower.index in claimed or not _scalar_constant(graph, follower):
                    break
                members.append(follower.index)
                value = follower.outs[0]
            blocks.append(Block("scale", tuple(members), live[0], value, node.name))
            claimed.update(members)
        elif node.kind == "product" and len(live) == 2 and len(node.outs) == 1:
            blocks.append(Block("product", (node.index,), live[0], node.outs[0], node.name,
                                {"more_inputs": (live[1],), "primitive": node.primitive}))
            claimed.add(node.index)
    for unit in graph.units.values():
        if unit.kind == "statistic" or not _floating(graph, unit.output):
            continue
        kind = "activation" if unit.kind in ACTIVATIONS else unit.kind
        blocks.append(Block(kind, unit.nodes, unit.input, unit.output, unit.name, dict(unit.attributes, unit=unit.kind)))
    blocks.sort(key=lambda block: block.nodes[-1])
    return Blocks(tuple(blocks), tuple(merged), _nonnegative(graph, blocks))


def _norms(graph: Graph) -> list[Block]:
    """Normalisations found from their data flow, whatever their names: a product (or quotient) of an
    activation and a value computed from a statistic of it (a variance, a mean square), with every
    node back to their common input (the nodes read only inside the norm). The block runs from that
    input to the product; a scale and shift after it are affine layers of their own."""
    statistic_units = [unit for unit in graph.units.values() if unit.kind == "statistic"]
    derived = {unit.output for unit in statistic_units}
    unit_of = {index: unit for unit in statistic_units for index in unit.nodes}
    for node in graph.nodes:
        if node.index in unit_of or node.kind == "constant":
            continue
        reads = any(isinstance(a, int) and a in derived for a in node.ins)
        joins = node.primitive in ("mul", "div") and not all(a in derived for a in _live(graph, node))
        if reads and not joins:
            derived.update(node.outs)
    allowed = ("reduce", "structural", "elementwise", "sum", "affine")
    found = []
    taken: set[int] = set()
    for node in graph.nodes:
        live = _live(graph, node)
        if node.primitive not in ("mul", "div") or len(live) != 2 or node.index in taken:
            continue
        scaled = [a in derived for a in live]
        if scaled.count(True) != 1 or (node.primitive == "div" and live[1] not in derived):
            continue
        members, needed = {node.index}, set(live)
        for index in range(node.index - 1, -1, -1):
            inner = graph.nodes[index]
            if not any(out in needed for out in inner.outs):
                continue
            kind_ok = index in unit_of or (inner.kind in allowed and (
                inner.kind != "affine" or all(out in derived for out in inner.outs))
                and (inner.kind != "sum" or inner.primitive == "sub"))
            read_inside = all(c in members for out in inner.outs for c in graph.consumers.get(out, []))
            if kind_ok and read_inside and not any(out in graph.output_ids for out in inner.outs):
                members.add(index)
                needed.update(_live(graph, inner))
        boundary = {value for value in needed if graph.producer.get(value) not in members}
        produced = {out for index in members for out in graph.nodes[index].outs}
        leaks = [out for out in produced - {node.outs[0]}
                 if out in graph.output_ids or any(c not in members for c in graph.consumers.get(out, []))]
        if len(boundary) != 1 or leaks or not any(i in unit_of for i in members):
            continue
        ordered = tuple(sorted(members))
        found.append(Block("norm", ordered, boundary.pop(), node.outs[0], node.name))
        taken.update(ordered)
    return found


def _nonnegative(graph: Graph, blocks: list[Block]) -> tuple[str, ...]:
    """Names of the linear blocks whose input is non-negative: a ReLU's output, or a pool, sum,
    concatenation or reshape of non-negative values only."""
    by_output = {block.output: block for block in blocks}
    known: dict[int, bool] = {}

    def nonnegative(value: int, depth: int = 0) -> bool:
        if value in known:
            return known[value]
        result = False
        block = by_output.get(value)
        if depth > 200:
            result = False
        elif block is not None:
            if block.attributes.get("unit") in NONNEGATIVE_UNITS:
                result = True
            elif block.kind in ("max_pool", "avg_pool", "sum") or (block.kind == "scale" and _positive_scaling(graph,
                                                                                                       block)):
                result = all(nonnegative(v, depth + 1) for v in block.inputs)
        elif value in graph.producer:
            node = graph.nodes[graph.producer[value]]
            live = _live(graph, node)
            if node.kind == "structural" and live and (node.primitive != "pad" or _zero_padding(graph, node)):
                result = all(nonnegative(v, depth + 1) for v in live)
        known[value] = result
        return result

    return tuple(block.name for block in blocks if block.kind in LINEAR_KINDS and nonnegative(block.input))


def _nonnegative_scalar(graph: Graph, atom) -> bool:
    constant = _static_value(graph, atom)
    return constant is not None and np.asarray(constant).size == 1 and float(np.asarray(constant)) >= 0


def _zero_padding(graph: Graph, node: Node) -> bool:
    return _nonnegative_scalar(graph, node.ins[1])


def _positive_scaling(graph: Graph, block: Block) -> bool:
    """A scale block that only multiplies or divides by non-negative scalars (``x / 49``)."""
    for index in block.nodes:
        node = graph.nodes[index]
        if node.primitive in ("mul", "div"):
            if not all(_nonnegative_scalar(graph, a) for a in node.ins if not (isinstance(a, int) and a in graph.depends)):
                return False
        elif node.primitive not in ("convert_element_type", "copy", "copy_p", "reduce_precision"):
            return False
    return True


def _floating(graph: Graph, value: int) -> bool:
    return np.issubdtype(np.dtype(graph.aval(value).dtype), np.floating)


def _routes(graph: Graph, node: Node) -> bool:
    """Nodes whose gradient routes relevance unchanged, or that carry none: a ``select_n`` on a
    boolean predicate (a masked or guarded softmax), comparisons and other non-float results."""
    if not any(_floating(graph, out) for out in node.outs):
        return True
    if node.primitive != "select_n":
        return False
    predicate = node.ins[0]
    return not (isinstance(predicate, int) and predicate in graph.producer and _floating(graph, predicate))


def unclassified(graph: Graph, blocks: Blocks) -> list[Node]:
    """Operations on activations that are in no block and are not structural: no rule can reach them.

    Example:
        >>> import jax, jax.numpy as jnp, jaxplain as jx
        >>> from jaxplain import program
        >>> model = jx.Model.from_function(lambda p, x: jnp.max(x, axis=1) @ p["w"], {"w": jnp.ones((3, 2))})
        >>> x = jnp.ones((1, 4, 3))
        >>> graph = program.graph_of(model, x)
        >>> [node.primitive for node in unclassified(graph, analyse(graph))]
        ['reduce_max']
    """
    covered = {i for block in blocks.blocks for i in block.nodes}
    return [node for node in graph.nodes
            if node.index not in covered and node.kind not in GRADIENT_KINDS and not _routes(graph, node)
            and any(isinstance(a, int) and a in graph.depends for a in node.ins)]
