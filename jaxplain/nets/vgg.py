"""VGG 11/13/16/19, with and without batch norm, with torchvision's module paths.

``features.N`` and ``classifier.N`` carry torchvision's indices; dropout layers are
kept as :class:`~jaxplain.nets.layers.Identity` modules so the indices line up.
Module invented for a functional call: ``flatten`` (``torch.flatten(x, 1)`` between
``avgpool`` and ``classifier``).
"""

from __future__ import annotations

from functools import partial
from itertools import count
from typing import Sequence

import flax.linen as nn
import jax

from jaxplain.nets.layers import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU

POOL = "M"
"""Marks a 2x2 max pool in a configuration; every other entry is a 3x3 convolution's width."""

CONFIGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "B": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "D": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    "E": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL),
}


class VGGFeatures(nn.Module):
    """``features``: 3x3 convolutions (padding 1), optional batch norm, ReLU and 2x2 max pools."""

    cfg: Sequence[int | str]
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        names = map(str, count())
        for item in self.cfg:
            if item == POOL:
                x = MaxPool2d(2, 2, name=next(names))(x)
                continue
            x = Conv2d(int(item), 3, 1, 1, name=next(names))(x)
            if self.batch_norm:
                x = BatchNorm2d(name=next(names))(x)
            x = ReLU(name=next(names))(x)
        return x


class VGGClassifier(nn.Module):
    """``classifier``: two 4096-wide ReLU layers, each followed by dropout, then the logits."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Dropout(name="2")(ReLU(name="1")(Linear(4096, name="0")(x)))
        x = Dropout(name="5")(ReLU(name="4")(Linear(4096, name="3")(x)))
        return Linear(self.num_classes, name="6")(x)


class VGG(nn.Module):
    """torchvision ``VGG``; ``cfg`` (see :data:`CONFIGS`) and ``batch_norm`` pick the variant."""

    cfg: Sequence[int | str]
    batch_norm: bool = False
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = VGGFeatures(self.cfg, self.batch_norm, name="features")(x)
        x = Flatten(name="flatten")(AdaptiveAvgPool2d((7, 7), name="avgpool")(x))
        return VGGClassifier(self.num_classes, name="classifier")(x)


vgg11 = partial(VGG, cfg=CONFIGS["A"])
vgg13 = partial(VGG, cfg=CONFIGS["B"])
vgg16 = partial(VGG, cfg=CONFIGS["D"])
vgg19 = partial(VGG, cfg=CONFIGS["E"])
vgg11_bn = partial(VGG, cfg=CONFIGS["A"], batch_norm=True)
vgg13_bn = partial(VGG, cfg=CONFIGS["B"], batch_norm=True)
vgg16_bn = partial(VGG, cfg=CONFIGS["D"], batch_norm=True)
vgg19_bn = partial(VGG, cfg=CONFIGS["E"], batch_norm=True)
