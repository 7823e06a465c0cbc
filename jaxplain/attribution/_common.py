"""Shared machinery of the explainers: input checks, one jit dispatcher, chunked sums.

Every public method is a thin wrapper: it checks its arguments on concrete values
(shapes, layout, NaN, target range), then calls a pure *core*
``core(model, inputs, target, key, arrays, **static)`` through :func:`run`, which
jit-compiles it once per core, static options and input shapes. Array-valued options
(baselines, per-sample noise levels) travel in ``arrays``; everything else is static.
Combinators (``noise_tunnel``) call cores directly inside their own traced function.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.model import FunctionModel, Model, as_model
from jaxplain.cpu import fast_conv
from jaxplain.typing import Array, Target

Core = Callable[..., Any]


def _static_items(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(options.items()))


@partial(jax.jit, static_argnames=("core", "static"))
def _run_jitted(model, inputs, target, key, arrays, *, core: Core, static: tuple):
    return core(model, inputs, target, key, arrays, **dict(static))


def run(
    core: Core,
    model: Model | FunctionModel,
    inputs: Array,
    target: Array,
    *,
    key: Array | None = None,
    arrays: Mapping[str, Array] | None = None,
    **static: Any,
) -> Any:
    """Call ``core`` jit-compiled; ``static`` options must be hashable."""
    return _run_jitted(model, inputs, target, key, dict(arrays or {}), core=core, static=_static_items(static))


def is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def check_inputs(model: Model | FunctionModel, inputs: Any, *, method: str) -> Array:
    """Float inputs of a sensible layout, free of NaN and inf (when concrete)."""
    if not hasattr(inputs, "shape") or not hasattr(inputs, "dtype"):
        raise TypeError(f"{method}: inputs must be an array, got {type(inputs).__name__}")
    inputs = jnp.asarray(inputs)
    if not jnp.issubdtype(inputs.dtype, jnp.floating):
        inputs = inputs.astype(jnp.float32)
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"{method}: inputs must have a leading batch axis with at least one example")
    if isinstance(model, Model) and model.input_channels is not None:
        channels = model.input_channels
        if inputs.ndim != 4:
            raise ValueError(f"{method}: inputs must be NHWC [N, H, W, {channels}], got shape {tuple(inputs.shape)}")
        if inputs.shape[-1] != channels:
            hint = ""
            if inputs.shape[1] == channels:
                hint = "; this looks like NCHW, pass inputs.transpose(0, 2, 3, 1)"
            raise ValueError(
                f"{method}: inputs must be NHWC with {channels} channels last, got shape {tuple(inputs.shape)}{hint}"
            )
    if is_concrete(inputs) and not bool(jnp.all(jnp.isfinite(inputs))):
        raise ValueError(f"{method}: inputs contain NaN or inf")
    return inputs


_TRACE_CACHE: dict[Any, Any] = {}
_TRACE_CACHE_LIMIT = 512


def traced_once(kind: str, model: Model | FunctionModel, inputs: Array, compute: Callable[[], Any]) -> Any:
    """``compute()``, cached by ``kind``, the model's structure and the input's shape and dtype.

    For facts found by tracing the network in Python (output shape, layer names),
    which costs about half a second for a ResNet on every call otherwise. The key holds
    the model's static part and its variables' shapes, never their values.
    """
    leaves, structure = jax.tree_util.tree_flatten(model)
    key = (kind, structure, tuple((leaf.shape, leaf.dtype) for leaf in leaves), inputs.shape, inputs.dtype)
    if key not in _TRACE_CACHE:
        if len(_TRACE_CACHE) >= _TRACE_CACHE_LIMIT:
            _TRACE_CACHE.clear()
        _TRACE_CACHE[key] = compute()
    return _TRACE_CACHE[key]


def output_shape(model: Model | FunctionModel, inputs: Array) -> tuple[int, ...]:
    """The model's output shape for ``inputs`` (traced once per structure and input shape)."""
    spec = jax.ShapeDtypeStruct(inputs.shape, inputs.dtype)
    return traced_once("output_shape", model, inputs, lambda: tuple(jax.eval_shape(model, spec).shape))


def resolve_target(model: Model | FunctionModel, inputs: Array, target: Target, *, method: str) -> Array:
    """An int32 ``[N]`` target; ``None`` means the predicted class of each input."""
    out = jax.ShapeDtypeStruct(output_shape(model, inputs), inputs.dtype)
    if len(out.shape) != 2:
        raise ValueError(f"{method}: the model must map a batch to outputs [N, K], got shape {out.shape}")
    batch, classes = out.shape
    if target is None:
        return jnp.argmax(run(_forward_core, model, inputs, jnp.zeros((batch,), jnp.int32)), axis=-1).astype(jnp.int32)
    target_array = jnp.asarray(target)
    if not jnp.issubdtype(target_array.dtype, jnp.integer):
        raise TypeError(f"{method}: target must be an int or an int array [N], got dtype {target_array.dtype}")
    if target_array.ndim == 0:
        target_array = jnp.full((batch,), target_array)
    if target_array.shape != (batch,):
        raise ValueError(f"{method}: target must be an int or an array of shape [{batch}], got {target_array.shape}")
    if is_concrete(target_array):
        values = np.asarray(target_array)
        if values.min() < 0 or values.max() >= classes:
            raise ValueError(f"{method}: target {values.tolist()} out of range for a model with {classes} outputs")
    return target_array.astype(jnp.int32)


def _forward_core(model, inputs, target, key, arrays):
    return model(inputs)


def prepare(model: Any, inputs: Any, target: Target, *, method: str) -> tuple[Model | FunctionModel, Array, Array]:
    """Normalise and check ``(model, inputs, target)`` for a public method."""
    model = as_model(model)
    inputs = check_inputs(model, inputs, method=method)
    return model, inputs, resolve_target(model, inputs, target, method=method)


def require_key(key: Array | None, *, method: str) -> Array:
    if key is None:
        raise ValueError(f"{method} is stochastic: pass key=jax.random.PRNGKey(...)")
    return key


def check_choice(name: str, value: Any, choices: tuple[str, ...], *, method: str) -> None:
    if value not in choices:
        raise ValueError(f"{method}: {name}={value!r} is not one of {', '.join(map(repr, choices))}")


def check_batch_size(batch_size: int | None, *, method: str) -> None:
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"{method}: batch_size must be None or a positive int, got {batch_size!r}")


def selected_output(outputs: Array, target: Array) -> Array:
    """``outputs[i, target[i]]`` for every row."""
    return jnp.take_along_axis(outputs, target[:, None], axis=1)[:, 0]


def target_gradient(forward: Callable[[Array], Array], inputs: Array, target: Array) -> Array:
    """d forward(x)[i, target[i]] / d x[i] for every row (rows are independent)."""
    return jax.grad(lambda x: jnp.sum(selected_output(forward(x), target)))(inputs)


def loop_forward(model: Model | FunctionModel, batch_size: int | None) -> Callable[[Array], Array]:
    """The forward function a method differentiates inside :func:`sum_over`'s loop.

    With ``batch_size`` set (a ``lax.scan`` body) and a structured model of any form, its
    convolutions get :mod:`~jaxplain.cpu.fast_conv`'s input gradient on the CPU backend:
    the same values, but XLA CPU keeps its fast kernels inside the loop
    (benchmarks/XLA_CPU_NOTES.md, section 4).
    """
    if batch_size is None or isinstance(model, FunctionModel):
        return model
    from jaxplain import program

    return program.forward(model, node_rules=fast_conv.node_rules)


def sum_over(function: Callable[..., Any], xs: Any, batch_size: int | None) -> Any:
    """``sum_i function(xs[i])`` over the leading axis of the pytree ``xs``.

    ``batch_size=None`` evaluates every element in one vmapped pass; an int evaluates
    ``batch_size`` elements at a time inside a ``lax.scan`` (memory bounded), padding
    the last chunk with masked-out elements. On XLA CPU the loop body's backward
    convolutions lose their fast kernels unless :func:`loop_forward`'s rule gives them
    back (benchmarks/XLA_CPU_NOTES.md); unrolling the chunks keeps the speed but not the
    memory bound (XLA then holds every chunk's buffers at once), so the scan stays.
    """
    count = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if batch_size is None or batch_size >= count:
        return jax.tree_util.tree_map(lambda y: jnp.sum(y, axis=0), jax.vmap(function)(xs))
    chunks = -(-count // batch_size)
    padded = chunks * batch_size - count

    def chunked(leaf):
        leaf = jnp.concatenate([leaf, jnp.repeat(leaf[:1], padded, axis=0)]) if padded else leaf
        return leaf.reshape((chunks, batch_size) + leaf.shape[1:])

    mask = (jnp.arange(chunks * batch_size) < count).reshape(chunks, batch_size)

    def step(total, chunk):
        values, keep = chunk
        results = jax.vmap(function)(values)
        partial_sum = jax.tree_util.tree_map(
            lambda y: jnp.sum(jnp.where(keep.reshape((-1,) + (1,) * (y.ndim - 1)), y, 0), axis=0), results
        )
        return jax.tree_util.tree_map(jnp.add, total, partial_sum), None

    shapes = jax.eval_shape(function, jax.tree_util.tree_map(lambda leaf: leaf[0], xs))
    total = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return jax.lax.scan(step, total, (jax.tree_util.tree_map(chunked, xs), mask))[0]


def map_over(function: Callable[..., Any], xs: Any, batch_size: int | None) -> Any:
    """``function(xs[i])`` stacked over the leading axis of the pytree ``xs``.

    ``batch_size=None`` vmaps over every element at once; an int evaluates
    ``batch_size`` elements per step of a ``lax.map`` (memory bounded).
    """
    if batch_size is None:
        return jax.vmap(function)(xs)
    return jax.lax.map(function, xs, batch_size=batch_size)


def broadcast_baselines(baselines: Any, inputs: Array, *, method: str) -> Array:
    """Scalar, per-channel ``[C]``, ``[1, ...]`` or full baselines, broadcast to ``inputs``."""
    if baselines is None:
        return jnp.zeros_like(inputs)
    baselines = jnp.asarray(baselines, inputs.dtype)
    try:
        return jnp.broadcast_to(baselines, inputs.shape)
    except ValueError:
        raise ValueError(
            f"{method}: baselines of shape {baselines.shape} do not broadcast to inputs of shape {inputs.shape} "
            "(use a scalar, per-channel [C], [1, H, W, C] or [N, H, W, C])"
        ) from None
