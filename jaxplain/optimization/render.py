"""``render_vis``: feature visualisation by optimising an image (Lucent's ``lucent/optvis/render.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxplain.attribution._common import check_batch_size, require_key
from jaxplain.model import FunctionModel, Model, as_model
from jaxplain.optimization import transforms as T
from jaxplain.optimization._loop import LoopSpec, adam, check_objective_layers, check_thresholds, model_stats, optimise
from jaxplain.optimization.objectives import Objective, as_objective, stack
from jaxplain.optimization.param import ImageParam, image
from jaxplain.typing import Array

LUCENT_LEARNING_RATE = 5e-2
LUCENT_MIN_SIZE = 224
"""Lucent upsamples images smaller than this to it before the model."""


@dataclass(frozen=True)
class ParamRenderer:
    """The image of a parameterisation; the model sees it through ``transform``."""

    param_f: ImageParam
    transform: T.Compose

    def to_input(self, key: Array, params: Array) -> Array:
        return self.transform(key, self.param_f(params))

    def to_image(self, params: Array) -> Array:
        return self.param_f(params)


@partial(jax.jit, static_argnames=("spec",))
def _render(model, objectives, key, indices, spec: LoopSpec):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, indices)
    init_keys, loop_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    params = jax.vmap(spec.renderer.param_f.init)(init_keys)
    images, losses, _ = optimise(model, objectives, params, loop_keys, spec)
    return jnp.moveaxis(images, 0, 1), jnp.moveaxis(losses, 0, 1)


def _objective_list(objective_f: Any) -> list[Objective]:
    if isinstance(objective_f, (Objective, str)):
        return [as_objective(objective_f)]
    objectives = [as_objective(o) for o in objective_f]
    if not objectives:
        raise ValueError("render_vis: objective_f is an empty sequence")
    return objectives


def _pipeline(
    model: Model | FunctionModel,
    param_f: ImageParam,
    transforms: Sequence[T.Transform] | None,
    preprocess: bool,
    fixed_image_size: int | None,
) -> T.Compose:
    steps = list(T.standard_transforms if transforms is None else transforms)
    if preprocess:
        steps.append(T.Normalize(*model_stats(model)))
    shape = jax.eval_shape(
        T.compose(steps), jax.random.PRNGKey(0), jax.ShapeDtypeStruct(param_f.shape, jnp.float32)
    ).shape
    if fixed_image_size is not None:
        steps.append(T.Resize(fixed_image_size))
    elif shape[1] < LUCENT_MIN_SIZE or shape[2] < LUCENT_MIN_SIZE:
        steps.append(T.Resize(LUCENT_MIN_SIZE))
    return T.compose(steps)


def render_vis(
    model: Any,
    objective_f: Objective | str | Sequence[Objective | str],
    *,
    key: Array | None = None,
    param_f: ImageParam | None = None,
    optimizer: optax.GradientTransformation | None = None,
    transforms: Sequence[T.Transform] | None = None,
    thresholds: Sequence[int] = (512,),
    preprocess: bool = True,
    fixed_image_size: int | None = None,
    batch_size: int | None = None,
    return_losses: bool = False,
) -> Array | tuple[Array, Array]:
    """Optimise images that maximise objectives (Lucent's ``render_vis``, lucent/optvis/render.py).

    Lucent's defaults: an FFT, colour-decorrelated 128 px image (``param.image(128)``),
    Adam at 0.05, :data:`~jaxplain.optimization.transforms.standard_transforms`, then
    the model's input normalisation (``preprocess``) and a bilinear upsampling to 224 px
    when the transformed image is smaller (to ``fixed_image_size`` when given).

    Unlike Lucent, ``objective_f`` may be a sequence of objectives: they are optimised
    together, as one vmapped and jit-compiled batch per distinct structure (for example
    ``[channel("features.8", n) for n in range(64)]`` is a single batch), each with its
    own image(s) drawn from ``fold_in(key, i)`` for the ``i``-th objective (so an
    objective's image does not depend on the others). A ``"layer:n"`` string means
    ``channel(layer, n)``.

    Args:
        model: a ``jaxplain.Model`` (a bare function supports ``"labels"`` objectives only).
        objective_f: an objective, a ``"layer:n"`` string, or a sequence of them.
        key: PRNG key for the initial images and the random transforms (required).
        param_f: an :class:`~jaxplain.optimization.param.ImageParam` (``param.image(...)``).
        optimizer: an optax transformation; reuse one object across calls to compile once.
        transforms: transforms applied before normalisation; ``()`` for none.
        thresholds: steps after which the images are returned (sorted, without repeats).
        preprocess: apply the model's input normalisation (ImageNet's if it records none).
        fixed_image_size: resize the model's input to this size instead of Lucent's rule.
        batch_size: objectives optimised at once (``None``: all; an int bounds memory).
        return_losses: also return the objective ``[steps, objectives]`` before each update.

    Returns:
        Images in [0, 1], ``[len(thresholds), objectives * param_f.batch, h, w, channels]``
        (objective-major); with ``return_losses``, ``(images, losses)``.

    Raises:
        TypeError: ``param_f`` not an ``ImageParam``, objectives of another kind.
        ValueError: no key, bad thresholds or batch size, objectives naming unknown layers
            or channels out of range.

    Example:
        >>> import jax, jaxplain as jx
        >>> from jaxplain.optimization import objectives, param
        >>> model = jx.demo.load_model()
        >>> images = jx.render_vis(model, [objectives.channel("features.6", n) for n in (0, 1, 2)],
        ...                        key=jax.random.PRNGKey(0), param_f=param.image(16), thresholds=(2, 4),
        ...                        transforms=(), fixed_image_size=16)
        >>> images.shape  # two thresholds, three objectives
        (2, 3, 16, 16, 3)
    """
    method = "render_vis"
    key = require_key(key, method=method)
    check_batch_size(batch_size, method=method)
    thresholds = check_thresholds(thresholds, method=method)
    param_f = image(128) if param_f is None else param_f
    if not isinstance(param_f, ImageParam):
        raise TypeError(f"{method}: param_f must be an ImageParam from param.image(...), got {type(param_f).__name__}")
    if fixed_image_size is not None and (not isinstance(fixed_image_size, int) or fixed_image_size < 1):
        raise ValueError(f"{method}: fixed_image_size must be None or a positive int, got {fixed_image_size!r}")
    model = as_model(model)
    objectives = _objective_list(objective_f)
    renderer = ParamRenderer(param_f, _pipeline(model, param_f, transforms, preprocess, fixed_image_size))
    optimizer = adam(LUCENT_LEARNING_RATE) if optimizer is None else optimizer
    sample = np.zeros(jax.eval_shape(lambda k: renderer.to_input(k, param_f.init(k)), key).shape, np.float32)
    groups: dict[Any, list[int]] = {}
    for index, objective in enumerate(objectives):
        groups.setdefault(jax.tree_util.tree_structure(objective), []).append(index)
    outputs = []
    for indices in groups.values():
        stacked = stack([objectives[i] for i in indices])
        check_objective_layers(model, stacked, sample, method=method)
        spec = LoopSpec(renderer, optimizer, thresholds, stacked.layers(), batch_size)
        outputs.append(_render(model, stacked, key, np.asarray(indices), spec))
    order = np.argsort(np.concatenate([np.asarray(indices) for indices in groups.values()]))
    images, losses = (o[0] if len(outputs) == 1 else jnp.concatenate(o, axis=1)[:, order] for o in zip(*outputs))
    images = images.reshape(len(thresholds), len(objectives) * param_f.batch, *param_f.shape[1:])
    if return_losses:
        return images, losses
    return images
