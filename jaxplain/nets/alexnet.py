"""AlexNet with torchvision's module paths.

``features.N`` and ``classifier.N`` carry torchvision's indices; dropout layers are
kept as :class:`~jaxplain.nets.layers.Identity` modules so the indices line up.
Module invented for a functional call: ``flatten`` (``torch.flatten(x, 1)`` between
``avgpool`` and ``classifier``).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxplain.nets.layers import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU


class AlexNetFeatures(nn.Module):
    """``features``: five convolutions with ReLU, max pools after the 1st, 2nd and 5th."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ReLU(name="1")(Conv2d(64, 11, 4, 2, name="0")(x))
        x = MaxPool2d(3, 2, name="2")(x)
        x = ReLU(name="4")(Conv2d(192, 5, 1, 2, name="3")(x))
        x = MaxPool2d(3, 2, name="5")(x)
        x = ReLU(name="7")(Conv2d(384, 3, 1, 1, name="6")(x))
        x = ReLU(name="9")(Conv2d(256, 3, 1, 1, name="8")(x))
        x = ReLU(name="11")(Conv2d(256, 3, 1, 1, name="10")(x))
        return MaxPool2d(3, 2, name="12")(x)


class AlexNetClassifier(nn.Module):
    """``classifier``: dropout before each of the two 4096-wide ReLU layers, then the logits."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ReLU(name="2")(Linear(4096, name="1")(Dropout(name="0")(x)))
        x = ReLU(name="5")(Linear(4096, name="4")(Dropout(name="3")(x)))
        return Linear(self.num_classes, name="6")(x)


class AlexNet(nn.Module):
    """torchvision ``AlexNet`` (inputs of at least 63x63 pixels)."""

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = AlexNetFeatures(name="features")(x)
        x = Flatten(name="flatten")(AdaptiveAvgPool2d((6, 6), name="avgpool")(x))
        return AlexNetClassifier(self.num_classes, name="classifier")(x)


alexnet = AlexNet
