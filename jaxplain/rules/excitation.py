"""Excitation backprop (Zhang et al. 2016) as modified backward passes, with TorchRay's conventions.

Linear layers pass back ``x * J_{W+}^T (g / (f(x; W+, no bias) + 1e-20))``; average
pooling ``x * P^T (g / (P x + 1e-20))``; batch norm passes ``g`` unchanged; residual
sums split ``g`` in proportion to their inputs, ``x_i g / sum_j x_j`` (TorchRay's
``EltwiseSum`` after ``update_resnet``); ReLU and max pooling keep their gradient
(torchray/attribution/excitation_backprop.py). The denominators add 1e-20 without a
sign, as TorchRay does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from jaxplain.rules import lrp
from jaxplain.rules.composites import AVG_POOL, BATCH_NORM, LINEAR, SUM
from jaxplain.rules.engine import ByKind, FirstMatch
from jaxplain.typing import Array

EXCITATION_EPSILON = 1e-20


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
class Proportional:
    """``x_i J_i^T (g / (y + epsilon))`` for a layer ``y = f(x_1, ...)`` with non-negative weights (pools, sums)."""

    epsilon: float = EXCITATION_EPSILON

    def __call__(self, module, call: Callable, *args: Array) -> Array:
        def backward(args, output, cotangent):
            _, pullback = jax.vjp(call, *args)
            return [x * g for x, g in zip(args, pullback(cotangent / (output + self.epsilon)))]

        return lrp.with_backward(call, args, backward)


EXCITATION_BACKPROP = FirstMatch(
    (
        ByKind(LINEAR, ExcitationLinear()),
        ByKind(AVG_POOL, Proportional()),
        ByKind(SUM, Proportional(0.0)),
        ByKind(BATCH_NORM, lrp.Pass()),
    )
)
"""The rule map of excitation backprop for the zoo's layers."""
