"""ResNet, Wide ResNet and ResNeXt with torchvision's module paths.

Paths follow torchvision (``layer3.1.conv2``, ``layer1.0.downsample.0``). Where
torchvision reuses one ``relu`` module inside a block, each call site here has its
own module: ``relu1``, ``relu2`` (and ``relu3`` in a bottleneck) in call order; the
residual sum is ``add``.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax

from jaxplain.nets.layers import Add, AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Downsample(nn.Module):
    """``downsample``: a strided 1x1 convolution and batch norm (``.0`` and ``.1``)."""

    out_channels: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Conv2d(self.out_channels, 1, self.stride, use_bias=False, name="0")(x)
        return BatchNorm2d(name="1")(x)


class BasicBlock(nn.Module):
    """torchvision ``BasicBlock``."""

    planes: int
    stride: int = 1
    downsample: bool = False
    groups: int = 1
    base_width: int = 64
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = Conv2d(self.planes, 3, self.stride, 1, use_bias=False, name="conv1")(x)
        out = ReLU(name="relu1")(BatchNorm2d(name="bn1")(out))
        out = BatchNorm2d(name="bn2")(Conv2d(self.planes, 3, 1, 1, use_bias=False, name="conv2")(out))
        identity = Downsample(self.planes, self.stride, name="downsample")(x) if self.downsample else x
        return ReLU(name="relu2")(Add(name="add")(out, identity))


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (stride on the 3x3 convolution, ResNet v1.5)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    groups: int = 1
    base_width: int = 64
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = int(self.planes * (self.base_width / 64.0)) * self.groups
        out = Conv2d(width, 1, use_bias=False, name="conv1")(x)
        out = ReLU(name="relu1")(BatchNorm2d(name="bn1")(out))
        out = Conv2d(width, 3, self.stride, 1, groups=self.groups, use_bias=False, name="conv2")(out)
        out = ReLU(name="relu2")(BatchNorm2d(name="bn2")(out))
        out = BatchNorm2d(name="bn3")(Conv2d(self.planes * 4, 1, use_bias=False, name="conv3")(out))
        identity = Downsample(self.planes * 4, self.stride, name="downsample")(x) if self.downsample else x
        return ReLU(name="relu3")(Add(name="add")(out, identity))


class Stage(nn.Module):
    """``layerK``: a sequence of blocks named ``0``, ``1``, ..."""

    block: type[nn.Module]
    planes: int
    blocks: int
    stride: int
    in_channels: int
    groups: int
    base_width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_channels = self.planes * self.block.expansion
        needs_projection = self.stride != 1 or self.in_channels != out_channels
        for index in range(self.blocks):
            first = index == 0
            x = self.block(
                self.planes,
                self.stride if first else 1,
                downsample=first and needs_projection,
                groups=self.groups,
                base_width=self.base_width,
                name=str(index),
            )(x)
        return x


class ResNet(nn.Module):
    """torchvision ``ResNet``; ``stage_sizes`` and ``block`` pick the depth."""

    stage_sizes: Sequence[int]
    block: type[nn.Module]
    num_classes: int = 1000
    groups: int = 1
    width_per_group: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Conv2d(64, 7, 2, 3, use_bias=False, name="conv1")(x)
        x = ReLU(name="relu")(BatchNorm2d(name="bn1")(x))
        x = MaxPool2d(3, 2, 1, name="maxpool")(x)
        in_channels = 64
        for stage, blocks in enumerate(self.stage_sizes):
            planes = 64 * 2**stage
            x = Stage(
                self.block,
                planes,
                blocks,
                1 if stage == 0 else 2,
                in_channels,
                self.groups,
                self.width_per_group,
                name=f"layer{stage + 1}",
            )(x)
            in_channels = planes * self.block.expansion
        x = Flatten(name="flatten")(AdaptiveAvgPool2d(1, name="avgpool")(x))
        return Linear(self.num_classes, name="fc")(x)


resnet18 = partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
resnet34 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
resnet50 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)
resnet101 = partial(ResNet, stage_sizes=(3, 4, 23, 3), block=Bottleneck)
resnet152 = partial(ResNet, stage_sizes=(3, 8, 36, 3), block=Bottleneck)
wide_resnet50_2 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck, width_per_group=128)
wide_resnet101_2 = partial(ResNet, stage_sizes=(3, 4, 23, 3), block=Bottleneck, width_per_group=128)
resnext50_32x4d = partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck, groups=32, width_per_group=4)
resnext101_32x8d = partial(ResNet, stage_sizes=(3, 4, 23, 3), block=Bottleneck, groups=32, width_per_group=8)
