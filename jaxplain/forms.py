"""Every model form as one thing: a function of traced parameters and a batch.

A :class:`ProgramModel` holds ``apply(params, x)`` (static: hashed for ``jit``) and
``params`` (a pytree of arrays: the traced weights). Flax NNX modules, Equinox modules
and plain functions become one: an in-place change of an NNX module's weights, or a new
params pytree, reaches the next call as new arguments, and the same structure and shape
compile once. Layer names come from module-call scopes opened while the program is
traced for its graph (NNX attributes, Equinox fields) and from parameter paths.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
from flax import struct

from jaxplain.typing import Array

SCOPE_MARK = "jx@"
"""Marks the scopes opened here, so the graph keeps them and ignores a library's own (``eqx.nn.Conv``)."""

_SCOPING = contextvars.ContextVar("jaxplain_scoping", default=False)


@contextlib.contextmanager
def scoping() -> Iterator[None]:
    """While active, NNX and Equinox forms open a named scope around every submodule call."""
    token = _SCOPING.set(True)
    try:
        yield
    finally:
        _SCOPING.reset(token)


def _children(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _children(item, f"{path}.{i}" if path else str(i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _children(item, f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def _submodules(root: Any, kind: type) -> dict[int, tuple[Any, str]]:
    """``id(module) -> (module, dotted path from the root)`` for every submodule of ``root``."""
    found: dict[int, tuple[Any, str]] = {}
    stack = [(root, "")]
    while stack:
        module, prefix = stack.pop()
        attributes = getattr(module, "__dict__", {})
        for name, value in attributes.items():
            if name.startswith("_"):
                continue
            for path, child in _children(value, f"{prefix}.{name}" if prefix else name):
                if isinstance(child, kind) and id(child) not in found and child is not root:
                    found[id(child)] = (child, path)
                    stack.append((child, path))
    return found


@contextlib.contextmanager
def _scoped_calls(root: Any, kind: type) -> Iterator[None]:
    """Patch each submodule class's ``__call__`` to run inside ``jax.named_scope(path)`` for the trace.

    The scope carries the whole path from the root (the innermost one names an operation), so
    containers that are never called themselves (NNX's ``Sequential.layers``) still name their items.
    """
    modules = _submodules(root, kind)
    patched: dict[type, tuple[bool, Any]] = {}
    for module, _ in modules.values():
        cls = type(module)
        if cls in patched:
            continue
        original = cls.__call__
        patched[cls] = ("__call__" in cls.__dict__, cls.__dict__.get("__call__"))

        def call(self, *args, __original=original, **kwargs):
            entry = modules.get(id(self))
            if entry is None or entry[0] is not self:
                return __original(self, *args, **kwargs)
            with jax.named_scope(SCOPE_MARK + entry[1]):
                return __original(self, *args, **kwargs)

        type.__setattr__(cls, "__call__", call)
    try:
        yield
    finally:
        for cls, (own, original) in patched.items():
            if own:
                type.__setattr__(cls, "__call__", original)
            else:
                type.__delattr__(cls, "__call__")


@dataclass(frozen=True)
class _NNXApply:
    graphdef: Any
    kwargs: tuple[tuple[str, Any], ...]

    def __call__(self, state: Any, inputs: Array) -> Array:
        from flax import nnx

        module = nnx.merge(self.graphdef, state)
        if not _SCOPING.get():
            return module(inputs, **dict(self.kwargs))
        with _scoped_calls(module, nnx.Module):
            return module(inputs, **dict(self.kwargs))


@dataclass(frozen=True)
class _EquinoxApply:
    treedef: Any
    static: tuple[Any, ...]
    slots: tuple[int, ...]
    paths: tuple[str, ...]
    kwargs: tuple[tuple[str, Any], ...]

    def __call__(self, params: dict[str, Array], inputs: Array) -> Array:
        import equinox as eqx

        leaves = list(self.static)
        for slot, path in zip(self.slots, self.paths):
            leaves[slot] = params[path]
        module = jax.tree_util.tree_unflatten(self.treedef, leaves)
        kwargs = dict(self.kwargs)

        def one(x):
            return module(x, **kwargs)

        if not _SCOPING.get():
            return jax.vmap(one)(inputs)
        with _scoped_calls(module, eqx.Module):
            return jax.vmap(one)(inputs)


@struct.dataclass
class ProgramModel:
    """A model as ``apply(params, x)`` with traced ``params``: NNX, Equinox and plain-function forms.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> model = jx.Model.from_function(lambda p, x: x @ p["w"], {"w": jnp.eye(3)})
        >>> model.replace_params({"w": 2 * jnp.eye(3)})(jnp.ones((1, 3))).tolist()
        [[2.0, 2.0, 2.0]]

    Attributes:
        apply: the batched forward function of the parameters and the inputs (static).
        params: the parameter pytree (traced).
        channel_axis: where image-geometry methods find channels (``-1``: NHWC; ``1``: NCHW).
        name: a label for messages.
    """

    apply: Callable[[Any, Array], Array] = struct.field(pytree_node=False)
    params: Any
    channel_axis: int = struct.field(pytree_node=False, default=-1)
    name: str | None = struct.field(pytree_node=False, default=None)

    def __call__(self, inputs: Array) -> Array:
        return self.apply(self.params, inputs)

    @property
    def layer_channel_axis(self) -> int:
        """Where the layers keep their channels: as the inputs do."""
        return self.channel_axis

    def replace_params(self, params: Any) -> "ProgramModel":
        """The same model with other parameters."""
        return self.replace(params=params)


def from_function(function: Callable[[Any, Array], Array], params: Any, *, channel_axis: int = -1,
                  name: str | None = None) -> ProgramModel:
    """A plain batched ``function(params, x)`` with its parameters.

    Layers are named by the paths of the parameters their operations read
    (``"block.conv2"`` for ``params["block"]["conv2"]["kernel"]``), or by ``jax.named_scope``.

    Args:
        function: the forward pass on a batch, ``[N, ...] -> [N, K]``; keep it one object
            (a module-level function) so repeated calls hit the compilation cache.
        params: its parameter pytree.
        channel_axis: the channel axis of image inputs (``-1`` NHWC, ``1`` NCHW).
        name: a label for messages.

    Returns:
        A :class:`ProgramModel`.
    """
    return ProgramModel(function, params, channel_axis, name)


def from_nnx(module: Any, *, channel_axis: int = -1, **call_kwargs: Any) -> ProgramModel:
    """A Flax NNX module as a :class:`ProgramModel` (its ``nnx.split`` state is the traced parameters)."""
    from flax import nnx

    graphdef, state = nnx.split(module)
    return ProgramModel(_NNXApply(graphdef, tuple(sorted(call_kwargs.items()))), state, channel_axis,
                        type(module).__name__)


def from_equinox(module: Any, *, channel_axis: int = 1, **call_kwargs: Any) -> ProgramModel:
    """An Equinox module, called per example as Equinox models are, as a batched :class:`ProgramModel`.

    Equinox convolutions read ``[C, H, W]`` examples, so image batches are ``[N, C, H, W]``
    (``channel_axis=1``) by default.
    """
    import equinox as eqx

    flat, treedef = jax.tree_util.tree_flatten_with_path(module)
    from jaxplain.program.graph import key_name

    static, slots, paths, params = [], [], [], {}
    for slot, (path, leaf) in enumerate(flat):
        if eqx.is_array(leaf):
            dotted = ".".join(key_name(entry) for entry in path)
            slots.append(slot)
            paths.append(dotted)
            params[dotted] = jnp.asarray(leaf)
            static.append(None)
        else:
            static.append(leaf)
    apply = _EquinoxApply(treedef, tuple(static), tuple(slots), tuple(paths), tuple(sorted(call_kwargs.items())))
    return ProgramModel(apply, params, channel_axis, type(module).__name__)


def module_scoped(apply: Any) -> bool:
    """Whether ``apply`` opens module-call scopes while traced (NNX and Equinox forms): names come from those only."""
    return isinstance(apply, (_NNXApply, _EquinoxApply))


def is_nnx(model: Any) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(model, nnx.Module)


def is_equinox(model: Any) -> bool:
    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(model, eqx.Module)
