"""Objectives for feature visualisation (Lucent's ``lucent/optvis/objectives.py``).

An objective maps the activations of one image batch, ``{layer: [B, h, w, c]}``
(``"labels"`` is the model's output ``[B, K]``), to a loss to *minimise* (so
maximising a channel is ``-mean``, as in Lucent). Objectives compose like Lucent's:
``a + b``, ``a - b``, ``-a``, ``2 * a``, ``a / 2``, ``a + 1``, ``sum([...])``.

Objectives are pytrees: layer names and ``batch`` indices are static, channel
indices, positions, directions and weights are leaves. Objectives of one structure
(``channel("features.8", n)`` for 64 values of ``n``) therefore stack into one
batched objective that ``render_vis`` optimises as a vmapped axis.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxplain.typing import Array

Activations = Mapping[str, Array]
Shapes = Mapping[str, tuple[int, ...]]

LABELS = "labels"
"""The layer name of the model's output."""


class Objective:
    """Base class: ``objective(activations) -> loss``, with Lucent's arithmetic."""

    def __call__(self, activations: Activations) -> Array:
        raise NotImplementedError

    def layers(self) -> tuple[str, ...]:
        """The layers whose activations the objective reads."""
        raise NotImplementedError

    def check(self, shapes: Shapes, *, method: str) -> None:
        """Raise ``ValueError`` if an index does not fit the activation shapes (concrete leaves)."""

    def __add__(self, other: Any) -> "Linear":
        if isinstance(other, (int, float)):
            return _linear(self).shifted(float(other))
        if isinstance(other, Objective):
            a, b = _linear(self), _linear(other)
            return Linear(a.terms + b.terms, a.weights + b.weights, a.offset + b.offset)
        return NotImplemented

    def __radd__(self, other: Any) -> "Linear":
        return self.__add__(other)

    def __mul__(self, other: Any) -> "Linear":
        if not isinstance(other, (int, float)):
            raise TypeError(f"objectives can only be scaled by an int or float, got {type(other).__name__}")
        a = _linear(self)
        return Linear(a.terms, tuple(w * other for w in a.weights), a.offset * other)

    def __rmul__(self, other: Any) -> "Linear":
        return self.__mul__(other)

    def __truediv__(self, other: Any) -> "Linear":
        if not isinstance(other, (int, float)):
            raise TypeError(f"objectives can only be divided by an int or float, got {type(other).__name__}")
        return self.__mul__(1.0 / other)

    def __neg__(self) -> "Linear":
        return self.__mul__(-1.0)

    def __sub__(self, other: Any) -> "Linear":
        return self.__add__(-other)

    def __rsub__(self, other: Any) -> "Linear":
        return (-self).__add__(other)


def _select(activation: Array, batch: int | None) -> Array:
    return activation if batch is None else activation[batch : batch + 1]


def _check_index(name: str, value: Any, size: int, *, what: str, method: str) -> None:
    values = np.asarray(value).ravel()
    bad = sorted({int(v) for v in values if v < 0 or v >= size})
    if bad:
        raise ValueError(f"{method}: {what} {bad} out of range for {name}")


def _check_batch(batch: int | None, layer: str, shapes: Shapes, *, method: str) -> None:
    if batch is not None:
        _check_index(f"an image batch of {shapes[layer][0]}", batch, shapes[layer][0], what="batch", method=method)


def _check_spatial(layer: str, shapes: Shapes, *, method: str) -> None:
    if len(shapes[layer]) != 4:
        raise ValueError(
            f"{method}: layer {layer!r} has shape {shapes[layer]}; this objective needs a [B, h, w, c] map"
        )


@struct.dataclass
class Channel(Objective):
    """``-mean(A[..., n_channel])`` (Lucent's ``channel``)."""

    layer: str = struct.field(pytree_node=False)
    n_channel: Any
    batch: int | None = struct.field(pytree_node=False, default=None)

    def __call__(self, activations: Activations) -> Array:
        return -jnp.mean(jnp.take(_select(activations[self.layer], self.batch), self.n_channel, axis=-1))

    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def check(self, shapes: Shapes, *, method: str) -> None:
        shape = shapes[self.layer]
        _check_index(
            f"layer {self.layer!r} with {shape[-1]} channels", self.n_channel, shape[-1], what="channel", method=method
        )
        _check_batch(self.batch, self.layer, shapes, method=method)


@struct.dataclass
class Neuron(Objective):
    """``-mean(A[:, y, x, n_channel])``, the centre position by default (Lucent's ``neuron``)."""

    layer: str = struct.field(pytree_node=False)
    n_channel: Any
    x: Any = None
    y: Any = None
    batch: int | None = struct.field(pytree_node=False, default=None)

    def __call__(self, activations: Activations) -> Array:
        activation = _select(activations[self.layer], self.batch)
        _, h, w, _ = activation.shape
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        return -jnp.mean(activation[:, y, x, self.n_channel])

    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def check(self, shapes: Shapes, *, method: str) -> None:
        _check_spatial(self.layer, shapes, method=method)
        _, h, w, c = shapes[self.layer]
        _check_index(f"layer {self.layer!r} with {c} channels", self.n_channel, c, what="channel", method=method)
        if self.x is not None:
            _check_index(f"layer {self.layer!r} of width {w}", self.x, w, what="x", method=method)
        if self.y is not None:
            _check_index(f"layer {self.layer!r} of height {h}", self.y, h, what="y", method=method)
        _check_batch(self.batch, self.layer, shapes, method=method)


@struct.dataclass
class LayerMean(Objective):
    """``-mean(A)`` over a whole layer (every channel and position)."""

    layer: str = struct.field(pytree_node=False)
    batch: int | None = struct.field(pytree_node=False, default=None)

    def __call__(self, activations: Activations) -> Array:
        return -jnp.mean(_select(activations[self.layer], self.batch))

    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def check(self, shapes: Shapes, *, method: str) -> None:
        _check_batch(self.batch, self.layer, shapes, method=method)


@struct.dataclass
class Direction(Objective):
    """``-mean(cos(A[b, i, j, :], direction))`` over batch and positions (Lucent's ``direction``)."""

    layer: str = struct.field(pytree_node=False)
    direction: Any
    batch: int | None = struct.field(pytree_node=False, default=None)

    def __call__(self, activations: Activations) -> Array:
        activation = _select(activations[self.layer], self.batch)
        direction = jnp.asarray(self.direction, activation.dtype)
        dot = jnp.sum(activation * direction, axis=-1)
        norms = jnp.linalg.norm(activation, axis=-1) * jnp.linalg.norm(direction)
        return -jnp.mean(dot / jnp.maximum(norms, 1e-8))

    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def check(self, shapes: Shapes, *, method: str) -> None:
        channels = shapes[self.layer][-1]
        if np.shape(self.direction)[-1] != channels:
            raise ValueError(
                f"{method}: direction has {np.shape(self.direction)[-1]} entries, "
                f"layer {self.layer!r} has {channels} channels"
            )
        _check_batch(self.batch, self.layer, shapes, method=method)


@struct.dataclass
class Diversity(Objective):
    """Minus the mean cosine similarity of the images' Gram matrices at ``layer`` (Lucent's ``diversity``)."""

    layer: str = struct.field(pytree_node=False)

    def __call__(self, activations: Activations) -> Array:
        activation = activations[self.layer]
        batch, channels = activation.shape[0], activation.shape[-1]
        flat = activation.reshape(batch, -1, channels)
        grams = jnp.einsum("bpc,bpd->bcd", flat, flat).reshape(batch, -1)
        grams = grams / jnp.maximum(jnp.linalg.norm(grams, axis=-1, keepdims=True), 1e-12)
        similarity = grams @ grams.T
        return -(jnp.sum(similarity) - jnp.trace(similarity)) / batch

    def layers(self) -> tuple[str, ...]:
        return (self.layer,)


@struct.dataclass
class Linear(Objective):
    """``sum_i weights[i] * terms[i] + offset``: what the arithmetic on objectives builds."""

    terms: tuple[Objective, ...]
    weights: tuple[Any, ...]
    offset: Any = 0.0

    def __call__(self, activations: Activations) -> Array:
        total = jnp.asarray(self.offset, jnp.float32)
        for weight, term in zip(self.weights, self.terms):
            total = total + weight * term(activations)
        return total

    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for term in self.terms for name in term.layers()))

    def check(self, shapes: Shapes, *, method: str) -> None:
        for term in self.terms:
            term.check(shapes, method=method)

    def shifted(self, offset: float) -> "Linear":
        return Linear(self.terms, self.weights, self.offset + offset)


def _linear(objective: Objective) -> Linear:
    return objective if isinstance(objective, Linear) else Linear((objective,), (1.0,), 0.0)


def _check_layer_name(layer: Any, name: str) -> None:
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"{name}: layer must be a dotted path such as 'features.8', got {layer!r}")


def _check_int(value: Any, what: str, name: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name}: {what} must be an int, got {value!r}")


def channel(layer: str, n_channel: int, batch: int | None = None) -> Channel:
    """Maximise the mean of one channel (Lucent's ``objectives.channel``).

    Args:
        layer: the layer's path.
        n_channel: the channel.
        batch: which image of the batch the objective reads (None: all).

    Returns:
        The objective; combine objectives with ``+ - * /``.

    Raises:
        TypeError: ``layer`` not a string or ``n_channel`` not an int.

    Example:
        >>> objective = channel("features.6", 3) - 0.5 * channel("features.6", 4)
        >>> type(objective).__name__
        'Linear'
    """
    _check_layer_name(layer, "channel")
    _check_int(n_channel, "n_channel", "channel")
    return Channel(layer, n_channel, batch)


def neuron(layer: str, n_channel: int, x: int | None = None, y: int | None = None, batch: int | None = None) -> Neuron:
    """Maximise one channel at one position, the centre by default (Lucent's ``objectives.neuron``).

    Args:
        layer: the layer's path.
        n_channel: the channel.
        x: the column (None: the centre).
        y: the row (None: the centre).
        batch: which image of the batch the objective reads (None: all).

    Returns:
        The objective.

    Raises:
        TypeError: ``layer`` not a string or ``n_channel`` not an int.

    Example:
        >>> neuron("features.6", 3, x=2, y=1).layer
        'features.6'
    """
    _check_layer_name(layer, "neuron")
    _check_int(n_channel, "n_channel", "neuron")
    return Neuron(layer, n_channel, x, y, batch)


def layer(layer: str, batch: int | None = None) -> LayerMean:
    """Maximise the mean activation of a whole layer.

    Args:
        layer: the layer's path.
        batch: which image of the batch the objective reads (None: all).

    Returns:
        The objective.

    Raises:
        TypeError: ``layer`` not a string.

    Example:
        >>> layer("features.6").layer
        'features.6'
    """
    _check_layer_name(layer, "layer")
    return LayerMean(layer, batch)


def direction(layer: str, direction: Any, batch: int | None = None) -> Direction:
    """Maximise the cosine similarity to ``direction`` ``[c]`` (Lucent's ``objectives.direction``).

    Args:
        layer: the layer's path.
        direction: ``[c]``, a vector over the layer's channels.
        batch: which image of the batch the objective reads (None: all).

    Returns:
        The objective.

    Raises:
        TypeError: ``layer`` not a string.
        ValueError: ``direction`` not a vector.

    Example:
        >>> direction("features.6", [1.0] * 32).direction.shape
        (32,)
    """
    _check_layer_name(layer, "direction")
    direction = jnp.asarray(direction, jnp.float32)
    if direction.ndim != 1:
        raise ValueError(f"direction: direction must be a vector [channels], got shape {direction.shape}")
    return Direction(layer, direction, batch)


def diversity(layer: str) -> Diversity:
    """Push the images of a batch apart in style at ``layer`` (Lucent's ``objectives.diversity``).

    Args:
        layer: the layer's path.

    Returns:
        The objective (it needs ``param.image(..., batch=2)`` or more).

    Raises:
        TypeError: ``layer`` not a string.

    Example:
        >>> diversity("features.6").layer
        'features.6'
    """
    _check_layer_name(layer, "diversity")
    return Diversity(layer)


def as_objective(objective: Objective | str) -> Objective:
    """An ``Objective``, or ``"layer:n"`` read as ``channel(layer, n)`` (Lucent's ``as_objective``).

    Args:
        objective: an objective or a ``"layer:n"`` string.

    Returns:
        The objective.

    Raises:
        TypeError: neither.
        ValueError: a string not of the form ``"layer:n"``.

    Example:
        >>> as_objective("features.6:3") == channel("features.6", 3)
        True
    """
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        name, separator, index = objective.rpartition(":")
        if not separator or not name.strip() or not index.strip().lstrip("-").isdigit():
            raise ValueError(f"objective string must read 'layer:channel', such as 'features.8:3', got {objective!r}")
        return channel(name.strip(), int(index))
    raise TypeError(f"an objective must be an Objective or a 'layer:channel' string, got {type(objective).__name__}")


def stack(objectives: Sequence[Objective]) -> Objective:
    """One objective whose leaves carry a leading axis, from objectives of one structure.

    Args:
        objectives: objectives of one structure (``channel`` objectives of one layer, say).

    Returns:
        The stacked objective, to be vmapped over.

    Example:
        >>> stack([channel("features.6", n) for n in range(4)]).n_channel.shape
        (4,)
    """
    return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *objectives)
