"""The Flax model zoo, named as torchvision names its constructors."""

from typing import Callable

import flax.linen as nn

from jaxplain.nets import resnet

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnet152": resnet.resnet152,
    "wide_resnet50_2": resnet.wide_resnet50_2,
    "wide_resnet101_2": resnet.wide_resnet101_2,
    "resnext50_32x4d": resnet.resnext50_32x4d,
    "resnext101_32x8d": resnet.resnext101_32x8d,
}


def build(arch: str, **kwargs) -> nn.Module:
    """The zoo module for ``arch`` (``num_classes=`` and other constructor arguments)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch](**kwargs)


__all__ = ["ARCHITECTURES", "build"]
