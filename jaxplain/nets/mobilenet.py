"""MobileNetV2 with torchvision's module paths.

``features.0`` and the last ``features.N`` are convolution / batch norm / ReLU6
triples (``.0``, ``.1``, ``.2``), as torchvision's ``Conv2dNormActivation``. An
inverted residual block nests like torchvision's: ``features.K.conv.0`` (the 1x1
expansion triple, absent when the expansion ratio is 1), then the depthwise triple,
the 1x1 projection convolution and its batch norm. Modules invented for functional
calls: ``features.K.add`` (the residual sum ``x + conv(x)``, in blocks with stride 1
and equal input and output widths), ``avgpool`` (``adaptive_avg_pool2d(x, (1, 1))``)
and ``flatten`` (``torch.flatten(x, 1)``).
"""

from __future__ import annotations

from itertools import count
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax

from jaxplain.nets.layers import AdaptiveAvgPool2d, Add, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, ReLU6

DEFAULT_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""torchvision's stages as ``(expansion t, width c, repeats n, first stride s)``."""


class BlockSpec(NamedTuple):
    """One inverted residual block: hidden and output widths, stride, 1x1 expansion present."""

    hidden_channels: int
    out_channels: int
    stride: int
    expand: bool


def make_divisible(value: float, divisor: int) -> int:
    """``value`` rounded to a multiple of ``divisor``, at least ``divisor`` and at most 10% below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Module):
    """torchvision ``Conv2dNormActivation``: ``.0`` conv (same padding), ``.1`` BN, ``.2`` ReLU6."""

    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        padding = (self.kernel_size - 1) // 2
        x = Conv2d(
            self.out_channels, self.kernel_size, self.stride, padding, groups=self.groups, use_bias=False, name="0"
        )(x)
        return ReLU6(name="2")(BatchNorm2d(name="1")(x))


class InvertedResidualBranch(nn.Module):
    """``conv``: optional 1x1 expansion, 3x3 depthwise, 1x1 linear projection and BN."""

    spec: BlockSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden, out, stride, expand = self.spec
        names = map(str, count())
        if expand:
            x = ConvBNReLU6(hidden, 1, name=next(names))(x)
        x = ConvBNReLU6(hidden, 3, stride, groups=hidden, name=next(names))(x)
        x = Conv2d(out, 1, use_bias=False, name=next(names))(x)
        return BatchNorm2d(name=next(names))(x)


class InvertedResidual(nn.Module):
    """torchvision ``InvertedResidual``: the branch, plus the input when shapes allow."""

    spec: BlockSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = InvertedResidualBranch(self.spec, name="conv")(x)
        if self.spec.stride == 1 and x.shape[-1] == self.spec.out_channels:
            out = Add(name="add")(x, out)
        return out


class MobileNetV2Features(nn.Module):
    """``features``: stem triple, inverted residual blocks, final 1x1 triple."""

    blocks: Sequence[BlockSpec]
    stem_channels: int
    last_channel: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        names = map(str, count())
        x = ConvBNReLU6(self.stem_channels, 3, 2, name=next(names))(x)
        for spec in self.blocks:
            x = InvertedResidual(BlockSpec(*spec), name=next(names))(x)
        return ConvBNReLU6(self.last_channel, 1, name=next(names))(x)


class MobileNetV2Classifier(nn.Module):
    """``classifier``: dropout, then the logits."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return Linear(self.num_classes, name="1")(Dropout(name="0")(x))


class MobileNetV2(nn.Module):
    """torchvision ``MobileNetV2`` from an explicit block list (see :func:`mobilenet_v2`)."""

    blocks: Sequence[BlockSpec]
    stem_channels: int = 32
    last_channel: int = 1280
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = MobileNetV2Features(tuple(self.blocks), self.stem_channels, self.last_channel, name="features")(x)
        x = Flatten(name="flatten")(AdaptiveAvgPool2d(1, name="avgpool")(x))
        return MobileNetV2Classifier(self.num_classes, name="classifier")(x)


def mobilenet_v2(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    inverted_residual_setting: Sequence[Sequence[int]] | None = None,
    round_nearest: int = 8,
) -> MobileNetV2:
    """MobileNetV2 with torchvision's constructor arguments (stages as ``(t, c, n, s)``)."""
    setting = DEFAULT_SETTING if inverted_residual_setting is None else inverted_residual_setting
    stem = make_divisible(32 * width_mult, round_nearest)
    in_channels, blocks = stem, []
    for ratio, width, repeats, stride in setting:
        out_channels = make_divisible(width * width_mult, round_nearest)
        for index in range(repeats):
            hidden = int(round(in_channels * ratio))
            blocks.append(BlockSpec(hidden, out_channels, stride if index == 0 else 1, ratio != 1))
            in_channels = out_channels
    return MobileNetV2(
        blocks=tuple(blocks),
        stem_channels=stem,
        last_channel=make_divisible(1280 * max(1.0, width_mult), round_nearest),
        num_classes=num_classes,
    )
