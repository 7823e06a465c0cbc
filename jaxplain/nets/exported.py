"""A model exported by ``torch.export`` as a static program of ATen ops, run in Flax.

``converters.export`` turns a ``torch.export`` graph into a :class:`Program`: a tuple of
:class:`Node` s, each an ATen op name (``"aten.convolution.default"``), its arguments
(references to earlier values as :class:`Ref`, constants as plain Python values) and the
torch module path it came from (``"features.6"``, ``"encoder.layers.encoder_layer_1.ln_1"``).
:class:`ExportedGraph` evaluates the program with the ops of :mod:`jaxplain.nets.aten`,
each inside ``jax.named_scope(path)``, so the traced jaxpr's name stacks carry torch's
module paths. Parameters, buffers and lifted constants keep torch's state-dict names and
layouts (OIHW kernels, ``(out, in)`` linear weights): loading a state dict is a copy.

Nothing here imports torch: a converted model runs without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import weights
from jaxplain.model import Model
from jaxplain.nets import aten
from jaxplain.typing import Array


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference to the value of an input (:attr:`Program.inputs`) or node, by its name."""

    name: str


@dataclasses.dataclass(frozen=True)
class DType:
    """A torch dtype given as an op argument, by name (``"float32"``, ``"int64"``, ``"bool"``)."""

    name: str


@dataclasses.dataclass(frozen=True)
class Node:
    """One op of the program.

    Attributes:
        name: the value's name (torch's node name, unique in the program).
        op: the ATen op (``"aten.add.Tensor"``) or Python operator (``"operator.getitem"``).
        args: positional arguments: :class:`Ref`, :class:`DType`, numbers, strings, None, tuples.
        kwargs: keyword arguments as sorted ``(name, value)`` pairs.
        path: the innermost torch module path the op runs in (``""`` for the root module).
        calls: ``(module path, call index)`` of every module the op runs in, outermost first
            (the root left out); the index counts that module's earlier calls in the forward
            pass (``("layer1.0", 0), ("layer1.0.relu", 1)``: a block's shared ReLU, second call).
    """

    name: str
    op: str
    args: tuple
    kwargs: tuple
    path: str
    calls: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A parameter, buffer or constant tensor of the program: torch name, shape, dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """A static, hashable op program (equality and hash by content digest).

    Attributes:
        input: the name of the image input (NCHW inside the program).
        params: trainable tensors, declared in the ``"params"`` collection under their torch names.
        buffers: buffers a state dict holds (batch-norm statistics, index tables), in ``"buffers"``.
        constants: non-persistent buffers and tensors ``torch.export`` lifted out of ``forward``,
            in ``"constants"`` (no state dict holds them).
        nodes: the ops in execution order.
        output: the reference to the logits.
    """

    input: str
    params: tuple[Tensor, ...]
    buffers: tuple[Tensor, ...]
    constants: tuple[Tensor, ...]
    nodes: tuple[Node, ...]
    output: Ref
    digest: str = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        content = repr((self.input, self.params, self.buffers, self.constants, self.nodes, self.output))
        object.__setattr__(self, "digest", hashlib.sha256(content.encode()).hexdigest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Program) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def paths(self) -> tuple[str, ...]:
        """Every torch module path some op runs in, in order of first use."""
        return tuple(dict.fromkeys(node.path for node in self.nodes if node.path))


_COLLECTIONS = (("params", "params"), ("buffers", "buffers"), ("constants", "constants"))


def _refs(value: Any) -> tuple[str, ...]:
    if isinstance(value, Ref):
        return (value.name,)
    if isinstance(value, tuple):
        return tuple(name for item in value for name in _refs(item))
    return ()


def _enclosing_calls(live: tuple[tuple[str, int], ...], calls: tuple[tuple[str, int], ...]) -> int | None:
    """How many calls of ``calls`` enclose both ops when the op of ``calls`` would continue a run
    of another call of the same module (``live``: the calls of the latest op that computed a new
    input-dependent value); None when it would not."""
    shared = 0
    while shared < min(len(live), len(calls)) and live[shared] == calls[shared]:
        shared += 1
    earlier = dict(live[shared:])
    return shared if any(earlier.get(path, index) != index for path, index in calls[shared:]) else None


def _resolve(value: Any, env: dict[str, Any]) -> Any:
    if isinstance(value, Ref):
        return env[value.name]
    if isinstance(value, DType):
        return aten.jax_dtype(value.name)
    if isinstance(value, tuple):
        return tuple(_resolve(item, env) for item in value)
    return value


class ExportedGraph(nn.Module):
    """Runs a :class:`Program` on NHWC inputs (moved to channels-first once, at the start).

    A module that ``forward`` calls more than once runs all its calls under its one path.
    Where one call's ops would directly follow another call's of the same module
    (``self.block(self.block(x))``, ``self.act(self.act(x))``), a copy of the latest
    input-dependent value, under the enclosing module's scope, separates them, so that the
    layer methods see the calls apart and refuse the path (``layer 'block' is called 2
    times``) instead of taking both calls for one layer. The copy is an identity, which XLA
    removes; models without such calls trace as before.

    Example:
        >>> model = converters.from_torch(my_torch_classifier, input_shape=(1, 32, 32, 3))  # doctest: +SKIP
        >>> model.module.program.paths()[:3]  # doctest: +SKIP
        ('conv_proj', 'encoder', 'encoder.layers.encoder_layer_0.ln_1')

    Attributes:
        program: the static op program.
    """

    program: Program

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        program = self.program
        env: dict[str, Any] = {program.input: jnp.moveaxis(inputs, -1, 1)}
        for field, collection in _COLLECTIONS:
            for tensor in getattr(program, field):
                init = _zeros(tensor)
                if collection == "params":
                    env[tensor.name] = self.param(tensor.name, lambda key, init=init: init())
                else:
                    env[tensor.name] = self.variable(collection, tensor.name, init).value
        dependent, latest, live = {program.input}, program.input, ()
        for node in program.nodes:
            shared = _enclosing_calls(live, node.calls)
            if shared is not None:
                with jax.named_scope(node.calls[shared - 1][0]) if shared else contextlib.nullcontext():
                    env[latest] = jnp.array(env[latest], copy=True)
                live = node.calls[:shared]
            function = aten.OPS[node.op]
            args = _resolve(node.args, env)
            kwargs = {key: _resolve(value, env) for key, value in node.kwargs}
            if node.path:
                with jax.named_scope(node.path):
                    value = function(*args, **kwargs)
            else:
                value = function(*args, **kwargs)
            env[node.name] = value
            if any(name in dependent for name in _refs(node.args) + _refs(node.kwargs)):
                dependent.add(node.name)
                operands = jax.tree_util.tree_leaves((args, kwargs))
                if isinstance(value, jax.Array) and not any(value is operand for operand in operands):
                    latest, live = node.name, node.calls
        return env[program.output.name]


def _zeros(tensor: Tensor):
    return lambda: jnp.zeros(tensor.shape, aten.jax_dtype(tensor.dtype))


def load_state_dict(model: Model, state_dict: Mapping[str, Any]) -> Model:
    """An exported ``model`` with the weights of a torch state dict (an identity copy: same names, same layouts).

    ``num_batches_tracked`` entries are ignored; constants (non-persistent buffers) stay the model's.

    Args:
        model: a model whose module is an :class:`ExportedGraph` (``converters.from_torch``).
        state_dict: ``{torch name: array}``, as ``torch_model.state_dict()`` saves it.

    Returns:
        the same model with the state dict's parameters and buffers.

    Example:
        >>> model = converters.from_torch(torchvision.models.vit_b_16(), input_shape=(1, 224, 224, 3))  # doctest: +SKIP
        >>> model = load_state_dict(model, safetensors.numpy.load_file("vit_b_16.safetensors"))  # doctest: +SKIP

    Raises:
        ValueError: a few lines on the missing, unexpected and mis-shaped keys
            (:func:`jaxplain.weights.summarise_keys`).
    """
    if not isinstance(model.module, ExportedGraph):
        raise ValueError(
            f"load_state_dict takes an exported model (ExportedGraph), got a {type(model.module).__name__}"
        )
    program = model.module.program
    tensors = {
        tensor.name: (collection, tensor)
        for collection in ("params", "buffers")
        for tensor in getattr(program, collection)
    }
    given = {
        key: tuple(np.shape(value)) for key, value in state_dict.items() if not key.endswith(weights.IGNORED_BUFFERS)
    }
    summary = weights.summarise_keys(
        {name: tensor.shape for name, (_, tensor) in tensors.items()}, given, what=f"the exported {model.name}"
    )
    if summary:
        raise ValueError(summary)
    variables = {collection: dict(values) for collection, values in model.variables.items()}
    for name, (collection, tensor) in tensors.items():
        # device_put, not jnp.asarray: the latter compiles a copy kernel per distinct shape.
        variables[collection][name] = jax.device_put(np.asarray(state_dict[name]).astype(aten.jax_dtype(tensor.dtype)))
    return model.replace_variables(variables)


__all__ = ["DType", "ExportedGraph", "Node", "Program", "Ref", "Tensor", "load_state_dict"]
