"""Deep Dream and layer visualisation as pytorch-cnn-visualizations defines them.

Both optimise the *normalised* input tensor directly with a torch-style optimiser
(``weight_decay`` is an L2 term added to the gradient) to maximise the mean of one
filter of one layer, and return the image with the model's normalisation undone and
clipped to [0, 1] (``recreate_image`` in misc_functions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxplain.attribution._common import check_batch_size, require_key
from jaxplain.image import interpolate
from jaxplain.model import as_model, require_structure
from jaxplain.optimization._loop import LoopSpec, check_objective_layers, model_stats, optimise, with_l2
from jaxplain.optimization.objectives import channel, stack
from jaxplain.optimization.transforms import random_index, translate
from jaxplain.typing import Array


@dataclass(frozen=True)
class NormalisedRenderer:
    """Parameters are the normalised input, rolled by up to ``jitter`` pixels per step when ``jitter > 0``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    jitter: int = 0

    def to_input(self, key: Array, params: Array) -> Array:
        if not self.jitter:
            return params
        dy, dx = random_index(key, 2 * self.jitter + 1, (2,)) - self.jitter
        return translate(params, dy, dx, wrap=True)

    def to_image(self, params: Array) -> Array:
        return jnp.clip(params * jnp.asarray(self.std) + jnp.asarray(self.mean), 0.0, 1.0)

    def from_image(self, images: Array) -> Array:
        return (images - jnp.asarray(self.mean)) / jnp.asarray(self.std)


def _filters(filter: int | Sequence[int], *, method: str) -> list[int]:
    values = [filter] if isinstance(filter, (int, np.integer)) else list(filter)
    if not values or not all(isinstance(f, (int, np.integer)) and not isinstance(f, bool) for f in values):
        raise TypeError(f"{method}: filter must be an int or a non-empty sequence of ints, got {filter!r}")
    return [int(f) for f in values]


def _check_steps(steps: int, *, method: str) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"{method}: steps must be a positive int, got {steps!r}")


@partial(jax.jit, static_argnames=("spec", "size"))
def _layer_visualization(model, objectives, keys, spec: LoopSpec, size: int):
    pixels = jax.vmap(lambda k: jax.random.randint(k, (1, size, size, 3), 150, 180).astype(jnp.float32) / 255.0)(keys)
    params = spec.renderer.from_image(pixels)
    images, _, _ = optimise(model, objectives, params, keys, spec)
    return images[:, -1, 0]


def layer_visualization(
    model: Any,
    *,
    layer: str,
    filter: int | Sequence[int],
    key: Array | None = None,
    steps: int = 30,
    learning_rate: float = 0.1,
    weight_decay: float = 1e-6,
    optimizer: optax.GradientTransformation | None = None,
    size: int = 224,
    batch_size: int | None = None,
) -> Array:
    """The image maximising the mean of ``filter`` at ``layer`` (pytorch-cnn-visualizations' cnn_layer_visualization).

    As there: a random image with pixels drawn from {150, ..., 179} / 255, normalised,
    then ``steps`` iterations of Adam (``learning_rate``, L2 ``weight_decay``) on
    ``-mean(A[0, :, :, filter])``. ``optimizer`` (optax) replaces that Adam. A sequence of
    filters is optimised as one vmapped batch.

    Args:
        model: a ``jx.Model`` with module structure (layers named by path).
        layer: the layer's path, such as ``"features.6"``.
        filter: a channel of ``layer``, or a sequence of them.
        key: PRNG key of the random start images (required).
        steps: Adam iterations.
        learning_rate: Adam's learning rate.
        weight_decay: the L2 penalty on the image.
        optimizer: an optax transformation instead of that Adam.
        size: side of the square images.
        batch_size: filters optimised at once (``None``: all).

    Returns:
        ``[len(filters), size, size, 3]`` in [0, 1].

    Raises:
        ValueError: no key, ``steps`` below 1, an unknown layer or a channel out of range.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> jx.layer_visualization(model, layer="features.6", filter=[0, 5], key=jax.random.PRNGKey(0), steps=2,
        ...                        size=16).shape
        (2, 16, 16, 3)
    """
    method = "layer_visualization"
    key = require_key(key, method=method)
    _check_steps(steps, method=method)
    check_batch_size(batch_size, method=method)
    model = require_structure(as_model(model), method)
    filters = _filters(filter, method=method)
    objectives = stack([channel(layer, f) for f in filters])
    check_objective_layers(model, objectives, jnp.zeros((1, size, size, 3)), method=method)
    renderer = NormalisedRenderer(*model_stats(model))
    optimizer = optimizer or with_l2("adam", learning_rate, weight_decay)
    spec = LoopSpec(renderer, optimizer, (steps,), (layer,), batch_size)
    return _layer_visualization(model, objectives, jax.random.split(key, len(filters)), spec, size)


def _resize(images: Array, size: tuple[int, int]) -> Array:
    """Bilinear resize of stacked NHWC batches ``[O, N, H, W, C]`` (identity at the same size)."""
    if images.shape[2:4] == size:
        return images
    return jax.vmap(lambda batch: interpolate(batch, size, "bilinear"))(images)


@partial(jax.jit, static_argnames=("spec", "octaves", "octave_scale"))
def _deep_dream(model, objectives, images, keys, spec: LoopSpec, octaves: int, octave_scale: float):
    renderer = spec.renderer
    base = renderer.from_image(images)
    height, width = images.shape[2:4]
    detail = None
    for octave in range(octaves):
        factor = octave_scale ** (octaves - 1 - octave)
        size = (max(1, round(height / factor)), max(1, round(width / factor)))
        scaled = _resize(base, size)
        start = scaled if detail is None else scaled + _resize(detail, size)
        _, _, dreamt = optimise(model, objectives, start, jax.vmap(jax.random.fold_in, (0, None))(keys, octave), spec)
        detail = dreamt - scaled
    return renderer.to_image(base + detail)[:, 0]


def deep_dream(
    model: Any,
    images: Array,
    *,
    layer: str,
    filter: int,
    key: Array | None = None,
    steps: int = 250,
    learning_rate: float = 12.0,
    weight_decay: float = 1e-4,
    optimizer: optax.GradientTransformation | None = None,
    octaves: int = 1,
    octave_scale: float = 1.4,
    jitter: int = 0,
    batch_size: int | None = None,
) -> Array:
    """Deep Dream (pytorch-cnn-visualizations' deep_dream.py): amplify ``filter`` of ``layer`` in ``images``.

    As there: the normalised image is optimised by SGD (``learning_rate``, L2
    ``weight_decay``) for ``steps`` iterations on ``-mean(A[0, :, :, filter])``; no
    clipping until the end. ``optimizer`` (optax) replaces that SGD. Options from the
    original Deep Dream: ``octaves`` runs ``steps`` at each of that many scales
    (smallest first, each ``octave_scale`` apart), carrying the added detail up;
    ``jitter`` rolls the image by a random shift in ``[-jitter, jitter]`` pixels at
    every step (then ``key`` is required). Each image of the batch is dreamt
    independently (a vmapped axis).

    Args:
        model: a ``jx.Model`` with module structure (layers named by path).
        images: NHWC ``[N, H, W, 3]`` in [0, 1] (pixel space, not normalised).
        layer: the layer's path, such as ``"features.6"``.
        filter: the channel of ``layer`` to amplify.
        key: PRNG key of the jitter (required when ``jitter > 0``).
        steps: SGD iterations per octave.
        learning_rate: SGD's learning rate.
        weight_decay: the L2 penalty on the image.
        optimizer: an optax transformation instead of that SGD.
        octaves: scales to dream at, smallest first.
        octave_scale: the ratio between consecutive scales (above 1).
        jitter: the largest random roll in pixels at each step.
        batch_size: images dreamt at once (``None``: all).

    Returns:
        ``[N, H, W, 3]`` in [0, 1].

    Raises:
        ValueError: ``steps`` or ``octaves`` below 1, a negative ``jitter``, ``octave_scale``
            not above 1, images of another channel count, an unknown layer or channel.

    Example:
        >>> import jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> images = jx.demo.load_samples().images[:1, ::4, ::4] / 255.0
        >>> jx.deep_dream(model, images, layer="features.6", filter=3, steps=2, learning_rate=0.5).shape
        (1, 16, 16, 3)
    """
    method = "deep_dream"
    _check_steps(steps, method=method)
    check_batch_size(batch_size, method=method)
    if not isinstance(octaves, int) or octaves < 1:
        raise ValueError(f"{method}: octaves must be a positive int, got {octaves!r}")
    if not isinstance(jitter, int) or jitter < 0:
        raise ValueError(f"{method}: jitter must be a non-negative int, got {jitter!r}")
    if octaves > 1 and not octave_scale > 1:
        raise ValueError(f"{method}: octave_scale must exceed 1, got {octave_scale!r}")
    key = require_key(key, method=method) if jitter else jax.random.PRNGKey(0)
    model = require_structure(as_model(model), method)
    images = jnp.asarray(images, jnp.float32)
    channels = getattr(model, "input_channels", None)
    if images.ndim != 4 or images.shape[-1] != (channels or images.shape[-1]):
        raise ValueError(
            f"{method}: images must be NHWC [N, H, W, {channels or 'C'}] in [0, 1], got {images.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(images))):
        raise ValueError(f"{method}: images contain NaN or inf")
    filters = _filters(filter, method=method)
    if len(filters) != 1:
        raise TypeError(f"{method}: filter must be one int, got {filter!r}")
    count = images.shape[0]
    objectives = stack([channel(layer, filters[0])] * count)
    check_objective_layers(model, objectives, images[:1], method=method)
    renderer = NormalisedRenderer(*model_stats(model), jitter=jitter)
    optimizer = optimizer or with_l2("sgd", learning_rate, weight_decay)
    spec = LoopSpec(renderer, optimizer, (steps,), (layer,), batch_size)
    keys = jax.random.split(key, count)
    return _deep_dream(model, objectives, images[:, None], keys, spec, octaves, float(octave_scale))
