"""Excitation backprop (Zhang et al. 2016) as modified backward passes, with TorchRay's conventions.

Linear layers pass back ``x * J_{W+}^T (g / (f(x; W+, no bias) + 1e-20))``; average
pooling ``x * P^T (g / (P x + 1e-20))``; batch norm passes ``g`` unchanged; residual
sums split ``g`` in proportion to their inputs, ``x_i g / sum_j x_j`` (TorchRay's
``EltwiseSum`` after ``update_resnet``); ReLU and max pooling keep their gradient
(torchray/attribution/excitation_backprop.py). The denominators add 1e-20 without a
sign, as TorchRay does.

The rules act on the program's relevance blocks (:mod:`jaxplain.program.blocks`, batch
norms left unmerged), so they read every model form the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxplain.program.blocks import LINEAR_KINDS, Block, Blocks
from jaxplain.rules import lrp
from jaxplain.rules.relevance import OnBlock
from jaxplain.typing import Array

EXCITATION_EPSILON = 1e-20
GRADIENT_KINDS = ("activation", "max_pool", "scale")
"""Blocks excitation backprop leaves to their gradient (TorchRay's ReLU, max pool and functional scalings)."""


@dataclass(frozen=True)
class ExcitationLinear(lrp.LinearRule):
    """``x * W+^T (g / (W+ x + 1e-20))``, the bias left out."""

    def terms(self, params, x, nonnegative=False):
        return [(x, {"kernel": jnp.maximum(params["kernel"], 0)})]

    def cotangents(self, relevance, outputs):
        return [relevance / (outputs[0] + EXCITATION_EPSILON)]

    def reduce(self, inputs, gradients):
        return inputs[0] * gradients[0]


@dataclass(frozen=True)
class NegatedExcitationLinear(ExcitationLinear):
    """Excitation through the layer with its weights negated (the contrastive pass's classifier)."""

    def terms(self, params, x, nonnegative=False):
        return [(x, {"kernel": jnp.maximum(-params["kernel"], 0)})]


@dataclass(frozen=True)
class Proportional:
    """``x_i J_i^T (g / (y + epsilon))`` for a layer ``y = f(x_1, ...)`` with non-negative weights (pools, sums).

    Where ``y + epsilon`` is exactly 0 (a residual sum of two zero activations, ``epsilon = 0``),
    the share is 0, the limit for non-negative inputs: torch's ReLU and max-pool backward mask
    the ``0 * inf`` there, and a ReLU written as ``jnp.maximum(x, 0)`` would not.
    """

    epsilon: float = EXCITATION_EPSILON

    def __call__(self, block: Any, call: Callable, *args: Array) -> Array:
        def backward(args, output, cotangent):
            _, pullback = jax.vjp(call, *args)
            denominator = output + self.epsilon
            empty = denominator == 0
            share = jnp.where(empty, 0.0, cotangent / jnp.where(empty, 1.0, denominator))
            return [x * g for x, g in zip(args, pullback(share))]

        return lrp.with_backward(call, args, backward)


@dataclass(frozen=True)
class ExcitationRules:
    """The block rule map of excitation backprop.

    Attributes:
        split_residuals: split residual sums in proportion (TorchRay after ``update_resnet``);
            False leaves them their gradient.
        negated: the path of the linear layer whose weights are negated (contrastive excitation's
            first pass), or None.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> from jaxplain import program
        >>> model = program.structured(jx.demo.load_model(), "example")
        >>> view = program.blocks_of(model, jnp.zeros((1, 16, 16, 3)), merge=False)
        >>> type(ExcitationRules()(view.blocks[0]).rule).__name__
        'ExcitationLinear'
    """

    split_residuals: bool = True
    negated: str | None = None

    def __call__(self, block: Block) -> Any:
        if block.kind in LINEAR_KINDS:
            return OnBlock(NegatedExcitationLinear() if block.name == self.negated else ExcitationLinear())
        if block.kind == "avg_pool":
            return Proportional()
        if block.kind == "sum":
            return Proportional(0.0) if self.split_residuals else None
        if block.kind == "batch_norm":
            return lrp.Pass()
        return None


def check_blocks(view: Blocks, *, method: str) -> None:
    """Raise unless excitation backprop has a rule, or TorchRay's gradient, for every block, and a linear layer.

    Args:
        view: the program's blocks (batch norms unmerged).
        method: the method's name, for the message.

    Raises:
        ValueError: naming the first block kind excitation backprop has no rule for (softmax,
            products of activations, LayerNorm), or a program without convolutions or dense layers.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> from jaxplain import program
        >>> model = program.structured(jx.demo.load_model(), "example")
        >>> check_blocks(program.blocks_of(model, jnp.zeros((1, 16, 16, 3)), merge=False), method="example")
    """
    handled = LINEAR_KINDS + GRADIENT_KINDS + ("avg_pool", "sum", "batch_norm")
    for block in view.blocks:
        if block.kind not in handled:
            where = repr(block.name) if block.name else "the top level"
            raise ValueError(
                f"{method}: excitation backprop has no rule for the {block.kind} layer at {where} "
                "(its rules cover convolutions, dense layers, average pools, residual sums and batch norms; "
                "ReLUs and max pools keep their gradient)"
            )
    if not any(block.kind in LINEAR_KINDS for block in view.blocks):
        raise ValueError(f"{method}: the model's program has no convolution or dense layer for excitation to act on")
