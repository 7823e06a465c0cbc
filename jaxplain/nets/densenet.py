"""DenseNet 121/161/169/201 with torchvision's module paths.

Paths follow torchvision (``features.denseblock2.denselayer3.conv1``,
``features.transition1.pool``, ``features.norm5``, ``classifier``). Modules invented
for functional calls:

- ``features.denseblockK.concatJ``: the block's running features concatenated with
  the output of ``denselayerJ`` (old channels first, as torchvision's ``torch.cat``);
  the last one is the block's output. ``denselayerJ`` itself returns only its new
  ``growth_rate`` channels, as in torchvision.
- ``relu``, ``avgpool`` and ``flatten``: ``F.relu``, ``F.adaptive_avg_pool2d(x, 1)``
  and ``torch.flatten(x, 1)`` between ``features`` and ``classifier``.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax

from jaxplain.nets.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm2d,
    Concat,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)


class DenseLayer(nn.Module):
    """torchvision ``_DenseLayer``: BN-ReLU-1x1 conv (bottleneck), BN-ReLU-3x3 conv."""

    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ReLU(name="relu1")(BatchNorm2d(name="norm1")(x))
        x = Conv2d(self.bn_size * self.growth_rate, 1, use_bias=False, name="conv1")(x)
        x = ReLU(name="relu2")(BatchNorm2d(name="norm2")(x))
        return Conv2d(self.growth_rate, 3, 1, 1, use_bias=False, name="conv2")(x)


class DenseBlock(nn.Module):
    """torchvision ``_DenseBlock``: each layer sees the concatenation of all earlier features."""

    num_layers: int
    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for index in range(1, self.num_layers + 1):
            new = DenseLayer(self.growth_rate, self.bn_size, name=f"denselayer{index}")(x)
            x = Concat(name=f"concat{index}")(x, new)
        return x


class Transition(nn.Module):
    """torchvision ``_Transition``: BN-ReLU-1x1 conv halving the channels, 2x2 average pool."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ReLU(name="relu")(BatchNorm2d(name="norm")(x))
        x = Conv2d(x.shape[-1] // 2, 1, use_bias=False, name="conv")(x)
        return AvgPool2d(2, 2, name="pool")(x)


class DenseNetFeatures(nn.Module):
    """``features``: stem, dense blocks separated by transitions, final batch norm."""

    growth_rate: int
    block_config: Sequence[int]
    num_init_features: int
    bn_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Conv2d(self.num_init_features, 7, 2, 3, use_bias=False, name="conv0")(x)
        x = ReLU(name="relu0")(BatchNorm2d(name="norm0")(x))
        x = MaxPool2d(3, 2, 1, name="pool0")(x)
        last = len(self.block_config)
        for index, num_layers in enumerate(self.block_config, start=1):
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, name=f"denseblock{index}")(x)
            if index != last:
                x = Transition(name=f"transition{index}")(x)
        return BatchNorm2d(name="norm5")(x)


class DenseNet(nn.Module):
    """torchvision ``DenseNet`` (inference: ``drop_rate`` and ``memory_efficient`` do not apply)."""

    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = DenseNetFeatures(
            self.growth_rate, tuple(self.block_config), self.num_init_features, self.bn_size, name="features"
        )(x)
        x = AdaptiveAvgPool2d(1, name="avgpool")(ReLU(name="relu")(x))
        return Linear(self.num_classes, name="classifier")(Flatten(name="flatten")(x))


densenet121 = partial(DenseNet, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64)
densenet161 = partial(DenseNet, growth_rate=48, block_config=(6, 12, 36, 24), num_init_features=96)
densenet169 = partial(DenseNet, growth_rate=32, block_config=(6, 12, 32, 32), num_init_features=64)
densenet201 = partial(DenseNet, growth_rate=32, block_config=(6, 12, 48, 32), num_init_features=64)
