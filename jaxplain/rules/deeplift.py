"""DeepLift's rescale rule as modified backward passes (Shrikumar et al. 2017).

The model runs once on the stacked batch ``[x; x']`` (``2N`` rows, inputs then
baselines). At every call site of a nonlinearity, the backward pass replaces the
local derivative by the multiplier ``m = (y - y') / (x - x')`` computed from the two
halves at that call site, the same multiplier for both halves (Ancona et al. 2018's
gradient formulation); where ``|x - x'| < eps`` it keeps the ordinary derivative.
Linear layers, batch norm, sums and average pooling keep their gradient, so the
gradient of the target with respect to ``x`` is DeepLift's multiplier. Every module
call is its own rule application, so residual and dense networks need no care.

Semantics of Captum's ``DeepLift`` (captum/attr/_core/deep_lift.py: ``nonlinear``,
``softmax``, ``maxpool``). The rules assume every layer keeps the batch as its
leading axis. :func:`deeplift_rules` with ``flavour="captum"`` reproduces Captum's
numbers where its hooks depart from the rescale rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain.program.graph import Unit
from jaxplain.program.interpret import Rule, UnitRuleMap, UnitRules
from jaxplain.typing import Array

FLAVOURS = ("rescale", "captum")

Backward = Callable[[Array, Array, Callable, Array], Array]


def _halves(value: Array) -> tuple[Array, Array]:
    first, second = jnp.split(value, 2, axis=0)
    return first, second


def _both_halves(value: Array) -> Array:
    return jnp.concatenate([value, value], axis=0)


def _difference(value: Array) -> Array:
    """``[v - v'; v - v']`` for the stacked ``[v; v']``."""
    first, second = _halves(value)
    return _both_halves(first - second)


def _with_backward(call: Callable[[Array], Array], inputs: Array, backward: Backward) -> Array:
    """``call(inputs)`` whose input cotangent is ``backward(x, y, pullback, g)``.

    ``pullback`` is the layer's ordinary vector-Jacobian product at ``x``.
    """

    @jax.custom_vjp
    def layer(x):
        return call(x)

    def forward(x):
        y, pullback = jax.vjp(call, x)
        return y, (x, y, pullback)

    def backward_pass(residuals, cotangent):
        return (backward(*residuals, cotangent),)

    layer.defvjp(forward, backward_pass)
    return layer(inputs)


def _rescaled(eps: float, x: Array, y: Array, pullback: Callable, cotangent: Array) -> Array:
    """``g * (y - y') / (x - x')``, or the ordinary ``J^T g`` where ``|x - x'| < eps``."""
    dx, dy = _difference(x), _difference(y)
    small = jnp.abs(dx) < eps
    return jnp.where(small, pullback(cotangent)[0], cotangent * dy / jnp.where(small, 1.0, dx))


class _MultiplierRule:
    """A rule whose unit runs as usual and passes back ``self.backward(unit, x)``'s cotangent."""

    def backward(self, unit: Unit, x: Array) -> Backward:
        raise NotImplementedError

    def __call__(self, unit: Unit, call: Callable[[Array], Array], x: Array) -> Array:
        return _with_backward(call, x, self.backward(unit, x))


@dataclass(frozen=True)
class Rescale(_MultiplierRule):
    """The rescale rule of an elementwise nonlinearity (Captum's ``nonlinear``)."""

    eps: float = 1e-10

    def backward(self, unit: Unit, x: Array) -> Backward:
        return lambda *residuals: _rescaled(self.eps, *residuals)


@dataclass(frozen=True)
class SoftmaxRescale(_MultiplierRule):
    """Rescale, then subtract the mean multiplier (Captum's ``softmax``).

    Captum's mean runs over the whole tensor, batch included, so one example's
    attribution depends on the others (``whole_tensor=True`` reproduces it); by
    default the mean runs over the softmax axis of each example, which is
    Captum's value for a batch of one.
    """

    eps: float = 1e-10
    whole_tensor: bool = False

    def backward(self, unit: Unit, x: Array) -> Backward:
        def backward(*residuals):
            multiplier = _rescaled(self.eps, *residuals)
            if self.whole_tensor:
                return multiplier - jnp.mean(multiplier)
            return multiplier - jnp.mean(multiplier, axis=unit.attributes["axes"], keepdims=True)

        return backward


def _unpool_last_window(inputs: Array, out: Array, cotangent: Array, window, strides, pads) -> Array:
    """``torch.nn.functional.max_unpool2d`` of ``cotangent`` at each window's first maximum.

    Where overlapping windows share a maximum, unpooling assigns rather than adds:
    the window that comes last in raster order wins, as in torch's CPU kernel; for
    one input position that is the window offset ``(di, dj)`` that comes first.
    """
    (pad_h, pad_w), (sh, sw) = pads, strides
    border = ((0, 0, 0), (*pad_h, 0), (*pad_w, 0), (0, 0, 0))
    padded = lax.pad(inputs, jnp.array(-jnp.inf, inputs.dtype), border)
    height, width = padded.shape[1], padded.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    zero = jnp.zeros((), cotangent.dtype)
    taken = jnp.zeros(out.shape, bool)
    placed = jnp.zeros(padded.shape, cotangent.dtype)
    written = jnp.zeros(padded.shape, bool)
    for di in range(window[0]):
        for dj in range(window[1]):
            limit = (padded.shape[0], di + (out_h - 1) * sh + 1, dj + (out_w - 1) * sw + 1, padded.shape[3])
            candidates = lax.slice(padded, (0, di, dj, 0), limit, (1, sh, sw, 1))
            hit = (candidates == out) & ~taken
            taken = taken | hit
            spread = ((0, 0, 0), (di, height - limit[1], sh - 1), (dj, width - limit[2], sw - 1), (0, 0, 0))
            here = lax.pad(hit, False, spread) & ~written
            placed = jnp.where(here, lax.pad(cotangent, zero, spread), placed)
            written = written | here
    return lax.pad(placed, zero, tuple((-low, -high, 0) for low, high, _ in border))


@dataclass(frozen=True)
class MaxPoolRescale(_MultiplierRule):
    """Captum's max-pool multiplier (``maxpool`` in deep_lift.py).

    With ``M = max(y, y')`` per window, ``g (M - y')`` goes to the maximum of the
    input's window and ``g (y - M)`` to the maximum of the baseline's; the shares are
    added and divided by ``x - x'``, which conserves ``sum g (y - y')``. Where
    ``|x - x'| < eps`` the ordinary gradient is kept. ``captum=True`` reproduces
    Captum's two departures: ``max_unpool2d`` keeps only the last window's share
    where overlapping windows (ResNet's stem) share a maximum, which breaks
    summation-to-delta; and its fallback is the ordinary gradient of the first row of
    the stacked batch (``grad_input[0]``) broadcast to every row.
    """

    eps: float = 1e-10
    captum: bool = False

    def backward(self, unit: Unit, x: Array) -> Backward:
        if self.captum:
            spatial, window, strides, pads = _pooled_axes(unit, x)

        def backward(x, y, pullback, cotangent):
            (y_in, y_ref), (g_in, g_ref) = _halves(y), _halves(cotangent)
            top = jnp.maximum(y_in, y_ref)
            shares = jnp.concatenate([g_in * (top - y_ref), g_ref * (y_in - top)])
            if self.captum:
                to_nhwc, from_nhwc = _nhwc_view(x.shape, y.shape, spatial)
                placed = from_nhwc(_unpool_last_window(to_nhwc(x), to_nhwc(y, out=True), to_nhwc(shares, out=True),
                                                       window, strides, pads), x.shape)
            else:
                placed = pullback(shares)[0]
            placed_in, placed_ref = _halves(placed)
            dx = _difference(x)
            small = jnp.abs(dx) < self.eps
            plain = pullback(cotangent)[0]
            if self.captum:
                plain = jnp.broadcast_to(plain[:1], plain.shape)
            return jnp.where(small, plain, _both_halves(placed_in + placed_ref) / jnp.where(small, 1.0, dx))

        return backward


def _pooled_axes(unit: Unit, x: Array) -> tuple[tuple[int, int], Any, Any, Any]:
    """A 2-D max pool's pooled axes and their ``(window, strides, pads)``, whatever the layout."""
    window, strides, padding = unit.attributes["window"], unit.attributes["strides"], unit.attributes["padding"]
    spatial = tuple(axis for axis in range(1, len(window))
                    if window[axis] != 1 or strides[axis] != 1 or tuple(padding[axis]) != (0, 0))
    if len(spatial) != 2 or window[0] != 1 or strides[0] != 1:
        raise ValueError(f"deeplift(flavour='captum'): the max pool {unit.describe()} pools axes {spatial} of a "
                         f"{x.ndim}-d map; Captum's max_unpool2d is defined for 2-d pools of a batch")
    pick = lambda values: tuple(values[axis] for axis in spatial)  # noqa: E731
    return spatial, pick(window), pick(strides), pick(padding)


def _nhwc_view(in_shape: tuple[int, ...], out_shape: tuple[int, ...], spatial: tuple[int, int]):
    """Functions viewing a pooled map as ``[N, H, W, rest]`` and back (the other axes are not pooled)."""
    rest = tuple(axis for axis in range(1, len(in_shape)) if axis not in spatial)
    order = (0, *spatial, *rest)

    def to_nhwc(value: Array, out: bool = False) -> Array:
        moved = jnp.transpose(value, order)
        return moved.reshape(moved.shape[:3] + (-1,))

    def from_nhwc(value: Array, shape: tuple[int, ...]) -> Array:
        moved_shape = tuple(shape[axis] for axis in order)
        return jnp.transpose(value.reshape(moved_shape), np.argsort(order))

    return to_nhwc, from_nhwc


CAPTUM_ELEMENTWISE = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus")
"""The unit kinds Captum's DeepLift hooks (``nn.ReLU``, ``nn.LeakyReLU``, ``nn.ELU``, ``nn.Sigmoid``, ``nn.Tanh``,
``nn.Softplus``); every other element-wise function keeps its gradient there."""
ELEMENTWISE = CAPTUM_ELEMENTWISE + ("relu6", "gelu", "silu", "selu", "mish", "hard_tanh", "hard_sigmoid",
                                    "hard_silu", "log_sigmoid", "elementwise")
"""Every element-wise function of one activation: the rescale rule applies to each."""


class CaptumRules(UnitRuleMap):
    """Captum's DeepLift hooks, departures included; one instance per forward pass.

    Besides the softmax and max-pool departures (:class:`SoftmaxRescale`,
    :class:`MaxPoolRescale`), ReLU6 keeps its ordinary gradient (Captum hooks no
    ``nn.ReLU6``, which breaks summation-to-delta on MobileNetV2), and a hooked
    module whose input is the output of another hooked module (ReLU then max pool in
    every torchvision network) passes back its *ordinary* gradient: the producer
    records its output gradient before the consumer's tensor hook rewrites it
    (captum/_utils/common.py, ``_register_backward_hook``: hooks on one tensor run in
    registration order). The consumer's rule survives only where ``|x - x'| < eps``,
    through the producer's fallback. The graph records which unit a unit reads
    (through reshapes and transposes only: ``unit.attributes["reads"]``), to recognise
    that case whatever the layout code between them. This is exact for chains of two
    directly connected hooked modules (all that torchvision classifiers have); along
    longer chains (tanh, sigmoid, max pool) Captum mixes two gradients per tensor,
    which one backward pass cannot carry, and the numbers may differ.
    """

    def __init__(self, eps: float = 1e-10):
        self.eps = eps

    covers = "the non-linearities Captum hooks (ReLU, LeakyReLU, ELU, sigmoid, tanh, softplus, softmax, max pool)"

    def _rule_for(self, unit: Unit) -> _MultiplierRule | None:
        if unit.kind in CAPTUM_ELEMENTWISE:
            return Rescale(self.eps)
        if unit.kind == "softmax":
            return SoftmaxRescale(self.eps, whole_tensor=True)
        if unit.kind == "max_pool":
            return MaxPoolRescale(self.eps, captum=True)
        return None

    def __call__(self, unit: Unit) -> Rule | None:
        rule = self._rule_for(unit)
        if rule is None:
            return None

        def hooked(unit, call, x):
            backward = rule.backward(unit, x)
            producer = unit.attributes.get("reads")
            if producer is not None and self._rule_for(producer) is not None:
                backward = _ordinary_unless_equal(self.eps, backward)
            return _with_backward(call, x, backward)

        return hooked


def _ordinary_unless_equal(eps: float, backward: Backward) -> Backward:
    """The ordinary gradient, except ``backward``'s where ``|x - x'| < eps``."""

    def replaced(x, y, pullback, cotangent):
        small = jnp.abs(_difference(x)) < eps
        return jnp.where(small, backward(x, y, pullback, cotangent), pullback(cotangent)[0])

    return replaced


def deeplift_rules(eps: float = 1e-10, flavour: str = "rescale") -> Any:
    """DeepLift's rule map over the units of the model's program.

    ``flavour="rescale"`` (default): every element-wise function of one activation
    (ReLU, ReLU6, LeakyReLU, ELU, sigmoid, tanh, softplus, GELU, SiLU, and any other
    fused element-wise chain) uses the rescale rule, softmax subtracts the mean over its
    axis per example, max pooling adds the shares of overlapping windows; every unit uses
    its own rule. The attributions then sum to ``F_t(x) - F_t(x')`` (summation-to-delta)
    on any network without softmax or products of activations. ``flavour="captum"``
    returns a fresh :class:`CaptumRules`, which reproduces Captum's numbers; build one
    per forward pass.
    """
    if flavour == "captum":
        return CaptumRules(eps)
    rescale = Rescale(eps)
    return UnitRules({**{kind: rescale for kind in ELEMENTWISE}, "softmax": SoftmaxRescale(eps),
                      "max_pool": MaxPoolRescale(eps)}, "non-linearities (activations, softmax, max pooling)")
