"""SqueezeNet 1.0 and 1.1 with torchvision's module paths.

A fire module keeps torchvision's children (``squeeze``, ``squeeze_activation``,
``expand1x1``, ``expand1x1_activation``, ``expand3x3``, ``expand3x3_activation``).
Modules invented for functional calls: ``features.N.concat`` (the channel
concatenation of the two expand branches, 1x1 first) and ``flatten``
(``torch.flatten(x, 1)`` after ``classifier``).
"""

from __future__ import annotations

from functools import partial
from itertools import count

import flax.linen as nn
import jax

from jaxplain.nets.layers import AdaptiveAvgPool2d, Concat, Conv2d, Dropout, Flatten, MaxPool2d, ReLU

POOL = "M"
"""Marks a 3x3, stride-2 max pool with ``ceil_mode=True`` in a layout."""

FireSpec = tuple[int, int, int]
"""``(squeeze, expand1x1, expand3x3)`` widths of a fire module."""

FIRE16, FIRE32, FIRE48, FIRE64 = (16, 64, 64), (32, 128, 128), (48, 192, 192), (64, 256, 256)

LAYOUTS: dict[str, tuple[int, int, tuple[FireSpec | str, ...]]] = {
    "1_0": (96, 7, (POOL, FIRE16, FIRE16, FIRE32, POOL, FIRE32, FIRE48, FIRE48, FIRE64, POOL, FIRE64)),
    "1_1": (64, 3, (POOL, FIRE16, FIRE16, POOL, FIRE32, FIRE32, POOL, FIRE48, FIRE48, FIRE64, FIRE64)),
}
"""Per version: stem width, stem kernel size, and what follows the stem's ReLU."""


class Fire(nn.Module):
    """torchvision ``Fire``: a 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    squeeze_planes: int
    expand1x1_planes: int
    expand3x3_planes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ReLU(name="squeeze_activation")(Conv2d(self.squeeze_planes, 1, name="squeeze")(x))
        left = ReLU(name="expand1x1_activation")(Conv2d(self.expand1x1_planes, 1, name="expand1x1")(x))
        right = ReLU(name="expand3x3_activation")(Conv2d(self.expand3x3_planes, 3, 1, 1, name="expand3x3")(x))
        return Concat(name="concat")(left, right)


class SqueezeNetFeatures(nn.Module):
    """``features``: a strided stem convolution, then fire modules and ceil-mode max pools."""

    version: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width, kernel, layout = LAYOUTS[self.version]
        names = map(str, count())
        x = Conv2d(width, kernel, 2, name=next(names))(x)
        x = ReLU(name=next(names))(x)
        for item in layout:
            if item == POOL:
                x = MaxPool2d(3, 2, ceil_mode=True, name=next(names))(x)
            else:
                x = Fire(*item, name=next(names))(x)
        return x


class SqueezeNetClassifier(nn.Module):
    """``classifier``: dropout, a 1x1 convolution to the classes, ReLU, global average pool."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Conv2d(self.num_classes, 1, name="1")(Dropout(name="0")(x))
        return AdaptiveAvgPool2d(1, name="3")(ReLU(name="2")(x))


class SqueezeNet(nn.Module):
    """torchvision ``SqueezeNet``; ``version`` is ``"1_0"`` or ``"1_1"``."""

    version: str = "1_0"
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if self.version not in LAYOUTS:
            raise ValueError(f"unsupported SqueezeNet version {self.version!r}: expected one of {', '.join(LAYOUTS)}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = SqueezeNetFeatures(self.version, name="features")(x)
        return Flatten(name="flatten")(SqueezeNetClassifier(self.num_classes, name="classifier")(x))


squeezenet1_0 = partial(SqueezeNet, version="1_0")
squeezenet1_1 = partial(SqueezeNet, version="1_1")
