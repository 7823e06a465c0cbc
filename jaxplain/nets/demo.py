"""``DemoNet``: the small CNN behind ``jaxplain.demo``, with its torch twin's module paths.

Four 3x3 convolution blocks (convolution, batch norm, ReLU), the first with stride 2
and the first two followed by a 2x2 max pool, then a global average pool and one
linear layer: an 8x downsampling, cheap enough to train on a CPU in minutes.
``features.N`` carries the index of the torch ``nn.Sequential``
(``converters.demo.DemoNetTorch``); ``features.13`` is the last ReLU, an 8x8 map on
64x64 inputs (the layer for Grad-CAM).
"""

from __future__ import annotations

from itertools import count
from typing import Sequence

import flax.linen as nn
import jax

from jaxplain.nets.layers import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU

WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
"""Output channels of the four convolution blocks."""

POOLED_BLOCKS = 2
"""The first this many blocks end with a 2x2 max pool."""


class DemoFeatures(nn.Module):
    """``features``: conv-BN-ReLU blocks (the first convolution with stride 2), the first
    :data:`POOLED_BLOCKS` followed by a 2x2 max pool."""

    widths: Sequence[int] = WIDTHS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        names = map(str, count())
        for block, width in enumerate(self.widths):
            x = Conv2d(width, 3, 2 if block == 0 else 1, 1, use_bias=False, name=next(names))(x)
            x = BatchNorm2d(name=next(names))(x)
            x = ReLU(name=next(names))(x)
            if block < POOLED_BLOCKS:
                x = MaxPool2d(2, 2, name=next(names))(x)
        return x


class DemoNet(nn.Module):
    """The demo classifier: :class:`DemoFeatures`, ``avgpool``, ``flatten``, ``classifier``."""

    num_classes: int = 6
    widths: Sequence[int] = WIDTHS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = DemoFeatures(tuple(self.widths), name="features")(x)
        x = Flatten(name="flatten")(AdaptiveAvgPool2d(1, name="avgpool")(x))
        return Linear(self.num_classes, name="classifier")(x)


demo = DemoNet
