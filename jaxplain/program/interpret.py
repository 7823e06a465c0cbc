"""Re-evaluating a traced program with rules on its units and taps at its layers.

:func:`evaluate` walks a :class:`~jaxplain.program.graph.Graph` in order and binds each
node's primitive to its input values, as ``jax.core.eval_jaxpr`` does. A *rule map*
``rules(unit) -> rule | None`` may replace a unit (a fused non-linearity, a softmax, a
max pool): ``rule(unit, call, x)`` returns the unit's output given its input ``x``,
where ``call(x)`` evaluates the unit as traced; rules typically return ``call(x)``
with a ``jax.custom_vjp`` backward pass. A :class:`Tap` records a layer's output (or
inputs) and adds a perturbation to it. Under ``jit`` all of this costs trace time only.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from jaxplain.cpu import small_conv
from jaxplain.program.graph import Graph, Node, Unit

Rule = Callable[[Unit, Callable[[Any], Any], Any], Any]
RuleMap = Callable[[Unit], Rule | None]


def no_rules(unit: Unit) -> Rule | None:
    """The empty rule map: every unit as traced."""
    return None


class UnitRuleMap:
    """Base of rule maps over program units: ``rules(unit) -> rule | None``; ``covers`` says what they act on."""

    covers: str = "non-linearities"

    def __call__(self, unit: Unit) -> Rule | None:
        raise NotImplementedError


@dataclass(frozen=True)
class UnitRules(UnitRuleMap):
    """A rule map by unit kind: ``{"relu": rule, "max_pool": rule}`` (hashable, so a static argument).

    Attributes:
        by_kind: unit kind -> rule, as a mapping (stored as sorted items).
        covers: what the rules act on, for the error when a model has none of it.
    """

    by_kind: Any
    covers: str = "non-linearities"

    def __post_init__(self):
        items = self.by_kind.items() if hasattr(self.by_kind, "items") else self.by_kind
        object.__setattr__(self, "by_kind", tuple(sorted(items, key=lambda item: item[0])))

    def __call__(self, unit: Unit) -> Rule | None:
        for kind, rule in self.by_kind:
            if kind == unit.kind:
                return rule
        return None


@dataclass(frozen=True)
class Region:
    """The nodes of one layer: where it starts and ends, and the values entering and leaving it."""

    name: str
    nodes: frozenset[int]
    start: int
    end: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _matches(node: Node, name: str) -> bool:
    return node.name == name or node.name.startswith(name + ".")


def region(graph: Graph, name: str, *, method: str) -> Region:
    """The nodes named ``name`` (or below it), checked to be one call of one layer.

    Raises:
        ValueError: when no node has that name (naming the nearest ones) or the layer runs
            more than once in a forward pass.
    """
    live = [node for node in graph.nodes if node.kind != "constant"]
    matched = [node.index for node in live if _matches(node, name)]
    if not matched:
        names = graph.layer_names()
        close = difflib.get_close_matches(name, names, n=8, cutoff=0.5)
        near = [n for n in names if "." in name and n.startswith(name.rsplit(".", 1)[0] + ".")][:8]
        suggestions = list(dict.fromkeys(close + near)) or names[:12]
        raise ValueError(f"{method}: unknown layer {name!r}; valid paths near it: {', '.join(suggestions)}"
                         " (jx.layers(model, inputs) lists them all)")
    by_scope = all(graph.nodes[i].named_by == "scope" for i in matched)
    if by_scope:
        runs = 1
        previous = None
        positions = {node.index: k for k, node in enumerate(live)}
        for index in matched:
            if previous is not None and positions[index] != positions[previous] + 1:
                runs += 1
            previous = index
        if runs > 1:
            raise ValueError(f"{method}: layer {name!r} is called {runs} times in one forward pass; pick one call site")
        members = frozenset(matched)
    else:
        members = frozenset(n.index for n in live if matched[0] <= n.index <= matched[-1])
    produced: list[int] = []
    entering: list[int] = []
    for index in sorted(members):
        node = graph.nodes[index]
        for atom in node.ins:
            if isinstance(atom, int) and atom in graph.depends and graph.producer.get(atom) not in members:
                if atom not in entering:
                    entering.append(atom)
        produced.extend(out for out in node.outs if out in graph.depends)
    leaving = tuple(out for out in produced
                    if out in graph.output_ids or any(c not in members for c in graph.consumers.get(out, [])))
    if not leaving:
        raise ValueError(f"{method}: layer {name!r} has no output that the rest of the network reads")
    return Region(name, members, min(members), max(members), tuple(entering), leaving)


@dataclass
class Tap:
    """Record a region's output (or inputs) and add ``delta`` to it (a matching pytree or a scalar), or
    replace each value ``v`` with ``delta(v)`` for a callable ``delta``."""

    region: Region
    to_input: bool
    delta: Any

    def values(self) -> tuple[int, ...]:
        return self.region.inputs if self.to_input else self.region.outputs


def bind(node: Node, values: Sequence[Any]) -> list[Any]:
    """The node's primitive applied to ``values``, as traced (its list of outputs).

    A convolution XLA CPU would run in its slow loop is computed by patches
    (:func:`jaxplain.cpu.small_conv.by_patches`), its zero padding applied to whatever input it is given.
    """
    eqn = node.eqn
    if node.primitive == "conv_general_dilated":
        routed = small_conv.by_patches(list(values), eqn.params)
        if routed is not None:
            return [routed]
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def _shift(values: tuple[Any, ...], delta: Any) -> tuple[Any, ...]:
    if callable(delta):
        return tuple(delta(v) for v in values)
    if isinstance(delta, (int, float)):
        return tuple(v + delta for v in values)
    deltas = (delta,) if len(values) == 1 else tuple(delta)
    return tuple(v + d for v, d in zip(values, deltas))


def _packed(values: tuple[Any, ...]) -> Any:
    return values[0] if len(values) == 1 else values


NodeRule = Callable[[Node, Sequence[Any]], list[Any]]
NodeRuleMap = Callable[[Node], NodeRule | None]


def no_node_rules(node: Node) -> NodeRule | None:
    """The empty node rule map: every node bound as traced."""
    return None


class UnitCall:
    """A unit's forward as traced, ``call(*inputs)``, with read access to the constants it uses.

    Rules receive it as ``call``: ``call(x)`` (or ``call(x, y)`` for a unit of two
    activations) evaluates the unit's nodes; ``call.value(atom)`` reads a constant operand
    (a weight computed from the parameters) of one of its nodes; ``call.graph`` is the program.
    """

    def __init__(self, graph: Graph, unit: Unit, read: Callable[[Any, int], Any]):
        self.graph = graph
        self.unit = unit
        self._read = read

    def value(self, atom: Any) -> Any:
        """The value of a constant operand of the unit's nodes."""
        return self._read(atom, self.unit.nodes[0])

    def __call__(self, *values: Any) -> Any:
        local = dict(zip(self.unit.inputs, values))
        for member in self.unit.nodes:
            node = self.graph.nodes[member]
            args = [local[a] if isinstance(a, int) and a in local else self._read(a, member) for a in node.ins]
            for out, result in zip(node.outs, bind(node, args)):
                local[out] = result
        return local[self.unit.output]


def evaluate(graph: Graph, params: Any, inputs: Any, *, rules: RuleMap = no_rules,
             taps: Sequence[Tap] = (), node_rules: NodeRuleMap = no_node_rules,
             units: Sequence[Unit] | None = None) -> tuple[Any, list[Any]]:
    """Run the program on ``params`` and ``inputs`` with ``rules`` and ``taps``.

    Args:
        graph: the traced program.
        params: the parameter pytree (same structure as when traced).
        inputs: the batch.
        rules: the rule map applied to every unit.
        taps: layers to record and perturb.
        node_rules: replacements of single nodes that keep their values (the CPU backend's
            convolution gradients, :mod:`jaxplain.cpu.fast_conv`).
        units: the units rules may replace (None: the graph's own); a method with its own
            view of the layers (LRP's linear blocks, sums and pools) passes disjoint units here.

    Returns:
        ``(outputs, recorded)``: the program's outputs (their traced pytree) and, per tap, the
        recorded activation (an array, or a tuple for several values).
    """
    env: dict[int, Any] = dict(graph.consts)
    leaves = jax.tree_util.tree_leaves(params)
    env.update(zip(graph.param_ids, leaves))
    env.update(zip(graph.input_ids, jax.tree_util.tree_leaves(inputs)))
    chosen = {}
    for unit in (graph.units.values() if units is None else units):
        rule = rules(unit)
        if rule is not None:
            chosen[unit.nodes[-1]] = (unit, rule)
    skipped = {i for unit, _ in chosen.values() for i in unit.nodes[:-1]}
    starts: dict[int, list[Tap]] = {}
    ends: dict[int, list[Tap]] = {}
    for tap in taps:
        starts.setdefault(tap.region.start, []).append(tap)
        ends.setdefault(tap.region.end, []).append(tap)
    recorded: dict[int, Any] = {}
    overrides: list[tuple[Tap, dict[int, Any]]] = []

    def read(atom: Any, index: int) -> Any:
        if isinstance(atom, jcore.Literal):
            return atom.val
        for tap, values in overrides:
            if atom in values and index in tap.region.nodes:
                return values[atom]
        return env[atom]

    for node in graph.nodes:
        index = node.index
        for tap in starts.get(index, ()):
            if tap.to_input:
                originals = tuple(env[v] for v in tap.region.inputs)
                recorded[id(tap)] = _packed(originals)
                overrides.append((tap, dict(zip(tap.region.inputs, _shift(originals, tap.delta)))))
        if index in chosen:
            unit, rule = chosen[index]
            xs = [read(value, unit.nodes[0]) for value in unit.inputs]
            env[unit.output] = rule(unit, UnitCall(graph, unit, read), *xs)
        elif index not in skipped:
            values = [read(a, index) for a in node.ins]
            replacement = node_rules(node) if node.kind == "linear" else None
            results = replacement(node, values) if replacement is not None else bind(node, values)
            env.update(zip(node.outs, results))
        for tap in ends.get(index, ()):
            if tap.to_input:
                overrides[:] = [(t, v) for t, v in overrides if t is not tap]
            else:
                originals = tuple(env[v] for v in tap.region.outputs)
                recorded[id(tap)] = _packed(originals)
                env.update(zip(tap.region.outputs, _shift(originals, tap.delta)))
    outputs = [a.val if isinstance(a, jcore.Literal) else env[a] for a in graph.output_ids]
    return jax.tree_util.tree_unflatten(graph.out_tree, outputs), [recorded[id(tap)] for tap in taps]


def offset(graph: Graph, params: Any, layer: Region) -> tuple[Any, ...]:
    """The outputs of ``layer`` evaluated on zero inputs: an affine layer's bias, broadcast to its output.

    Args:
        graph: the traced program.
        params: its parameters.
        layer: the layer's region (affine in its inputs for the value to be a bias).

    Returns:
        One array per output of the region.
    """
    env: dict[int, Any] = dict(graph.consts)
    env.update(zip(graph.param_ids, jax.tree_util.tree_leaves(params)))
    for node in graph.nodes:
        if node.kind == "constant":
            env.update(zip(node.outs, bind(node, [a.val if isinstance(a, jcore.Literal) else env[a]
                                                   for a in node.ins])))
    for value in layer.inputs:
        aval = graph.nodes[graph.consumers[value][0]].eqn.invars[
            graph.nodes[graph.consumers[value][0]].ins.index(value)].aval
        env[value] = jnp.zeros(aval.shape, aval.dtype)
    for index in sorted(layer.nodes):
        node = graph.nodes[index]
        env.update(zip(node.outs, bind(node, [a.val if isinstance(a, jcore.Literal) else env[a] for a in node.ins])))
    return tuple(env[value] for value in layer.outputs)
