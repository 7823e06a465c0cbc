"""The optimisation loop shared by ``render_vis``, ``layer_visualization`` and ``deep_dream``.

One objective's loop is a ``lax.scan`` over steps; a batch of objectives (stacked
into one pytree) is a vmapped axis of that loop, or ``lax.map`` chunks of it when
``batch_size`` bounds memory. Every piece that shapes the program (how parameters
become the model's input and the returned image, the optimiser, the layers read) is a
hashable static value, so one compilation serves every call of the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxplain import program
from jaxplain.attribution._layers import check_layer
from jaxplain.forms import ProgramModel
from jaxplain.model import FunctionModel, Model
from jaxplain.cpu import fast_conv
from jaxplain.optimization.objectives import LABELS, Objective
from jaxplain.typing import Array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Renderer(Protocol):
    """How parameters become the model's input (with random transforms) and the returned image."""

    def to_input(self, key: Array, params: Any) -> Array: ...

    def to_image(self, params: Any) -> Array: ...


@lru_cache(maxsize=None)
def adam(learning_rate: float) -> optax.GradientTransformation:
    """``optax.adam(learning_rate)``, one object per rate (a static argument compiles once)."""
    return optax.adam(learning_rate)


@lru_cache(maxsize=None)
def with_l2(optimizer: str, learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """torch's ``Adam``/``SGD`` with ``weight_decay`` (L2 added to the gradient), cached per setting."""
    base = optax.adam(learning_rate) if optimizer == "adam" else optax.sgd(learning_rate)
    return optax.chain(optax.add_decayed_weights(weight_decay), base) if weight_decay else base


def model_stats(model: Model | FunctionModel) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's input normalisation, ImageNet's when it records none."""
    mean = getattr(model, "mean", None) or IMAGENET_MEAN
    std = getattr(model, "std", None) or IMAGENET_STD
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def model_layout(model: Model | ProgramModel | FunctionModel, images: Array) -> Array:
    """NHWC ``images`` in the layout of the model's inputs (``channel_axis``)."""
    axis = getattr(model, "channel_axis", -1)
    return jnp.moveaxis(images, -1, axis) if axis != -1 and images.ndim > 2 else images


def activations(model: Model | ProgramModel | FunctionModel, layers: tuple[str, ...],
                inputs: Array) -> dict[str, Array]:
    """``{layer: activation}`` for ``layers`` from one forward pass (``"labels"``: the output).

    The model's traced program runs with :mod:`~jaxplain.cpu.fast_conv`'s convolution
    gradient (same values, fast inside the optimisation's ``lax.scan`` on CPU), so layers are
    named the same way in every model form (:func:`jaxplain.layers`). ``inputs`` are NHWC
    images: a channels-first model (``channel_axis=1``, an Equinox module) gets them transposed,
    and activations of a model whose layers keep channels first (a converted torch model) are
    returned channels-last, as objectives read them.
    """
    inputs = model_layout(model, inputs)
    if isinstance(model, FunctionModel):
        return {LABELS: model(inputs)}
    named = tuple(name for name in layers if name != LABELS)
    if not named:
        return {LABELS: program.forward(model, node_rules=fast_conv.node_rules)(inputs)}
    outputs, captured = program.tapped(model, named, node_rules=fast_conv.node_rules)(inputs, (0.0,) * len(named))
    layer_axis = getattr(model, "layer_channel_axis", -1)
    captured = [jnp.moveaxis(a, layer_axis, -1) if layer_axis != -1 and a.ndim > 2 else a for a in captured]
    return {**dict(zip(named, captured)), LABELS: outputs}


def check_objective_layers(model: Model | ProgramModel | FunctionModel, objective: Objective, inputs: Array, *,
                           method: str) -> dict:
    """Check the layer paths and indices of a (stacked) objective; return the activation shapes."""
    layers = objective.layers()
    named = tuple(name for name in layers if name != LABELS)
    if named and isinstance(model, FunctionModel):
        raise TypeError(
            f"{method}: objectives on named layers need the weights as arguments (a jx.Model, an NNX or an "
            "Equinox module, or jx.Model.from_function(fn, params)), not a bare function; a bare function "
            "supports 'labels' objectives only"
        )
    if named:
        check_layer(model, model_layout(model, inputs), named, method=method)
    shapes = jax.eval_shape(lambda x: activations(model, layers, x), jax.ShapeDtypeStruct(inputs.shape, inputs.dtype))
    shapes = {name: tuple(shape.shape) for name, shape in shapes.items()}
    objective.check(shapes, method=method)
    return shapes


def check_thresholds(thresholds: Any, *, method: str) -> tuple[int, ...]:
    """Positive int steps, returned sorted without repeats (Lucent records them in step order)."""
    if isinstance(thresholds, (int, np.integer)):
        thresholds = (thresholds,)
    try:
        values = tuple(thresholds)
    except TypeError:
        raise TypeError(f"{method}: thresholds must be a sequence of positive ints, got {thresholds!r}") from None
    if not values or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 1 for t in values):
        raise ValueError(f"{method}: thresholds must be a non-empty sequence of positive ints, got {thresholds!r}")
    return tuple(sorted({int(t) for t in values}))


@dataclass(frozen=True)
class LoopSpec:
    """The static part of an optimisation: renderer, optimiser, recorded steps, layers, chunking."""

    renderer: Renderer
    optimizer: optax.GradientTransformation
    thresholds: tuple[int, ...]
    layers: tuple[str, ...]
    batch_size: int | None = None


def optimise_one(model: Any, objective: Objective, params: Any, key: Array, spec: LoopSpec) -> tuple[Array, Array, Any]:
    """One objective's loop: ``(images [T, ...], losses [steps], final params)``.

    ``images[k]`` is the image after ``thresholds[k]`` updates; ``losses[i]`` is the
    objective before update ``i + 1``.
    """
    steps = spec.thresholds[-1]
    slot_of_step = np.full(steps, len(spec.thresholds), np.int32)
    for slot, step in enumerate(spec.thresholds[:-1]):
        slot_of_step[step] = slot

    def loss_fn(p, step_key):
        inputs = spec.renderer.to_input(step_key, p)
        return objective(activations(model, spec.layers, inputs))

    def step(carry, xs):
        p, state, images = carry
        step_key, slot = xs
        images = jax.lax.dynamic_update_index_in_dim(images, spec.renderer.to_image(p), slot, 0)
        loss, grads = jax.value_and_grad(loss_fn)(p, step_key)
        updates, state = spec.optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state, images), loss

    image_shape = jax.eval_shape(spec.renderer.to_image, params)
    images = jnp.zeros((len(spec.thresholds) + 1, *image_shape.shape), image_shape.dtype)
    carry = (params, spec.optimizer.init(params), images)
    xs = (jax.random.split(key, steps), jnp.asarray(slot_of_step))
    (params, _, images), losses = jax.lax.scan(step, carry, xs)
    images = images.at[len(spec.thresholds) - 1].set(spec.renderer.to_image(params))
    return images[: len(spec.thresholds)], losses, params


def optimise(model: Any, objectives: Objective, params: Any, keys: Array, spec: LoopSpec) -> tuple[Array, Array, Any]:
    """:func:`optimise_one` over the leading axis of stacked ``objectives``, ``params`` and ``keys``."""

    def one(xs: tuple[Objective, Any, Array]) -> tuple[Array, Array, Any]:
        return optimise_one(model, *xs, spec)

    if spec.batch_size is None:
        return jax.vmap(one)((objectives, params, keys))
    return jax.lax.map(one, (objectives, params, keys), batch_size=spec.batch_size)
