"""The Flax model zoo, named as torchvision names its constructors."""

from typing import Callable

import flax.linen as nn

from jaxplain.nets import alexnet, demo, densenet, mobilenet, resnet, squeezenet, vgg

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
    "vgg11": vgg.vgg11,
    "vgg13": vgg.vgg13,
    "vgg16": vgg.vgg16,
    "vgg19": vgg.vgg19,
    "vgg11_bn": vgg.vgg11_bn,
    "vgg13_bn": vgg.vgg13_bn,
    "vgg16_bn": vgg.vgg16_bn,
    "vgg19_bn": vgg.vgg19_bn,
    "alexnet": alexnet.alexnet,
    "squeezenet1_0": squeezenet.squeezenet1_0,
    "squeezenet1_1": squeezenet.squeezenet1_1,
    "densenet121": densenet.densenet121,
    "densenet161": densenet.densenet161,
    "densenet169": densenet.densenet169,
    "densenet201": densenet.densenet201,
    "mobilenet_v2": mobilenet.mobilenet_v2,
    "demo": demo.demo,
}


def build(arch: str, **kwargs) -> nn.Module:
    """The zoo module for ``arch`` (``num_classes=`` and other constructor arguments)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch](**kwargs)


def identify(module: nn.Module) -> str | None:
    """The name of the zoo architecture ``module`` is an instance of (``"vgg11_bn"``), if any.

    ``module`` matches a name when that constructor, given the same ``num_classes``,
    builds an equal module; a custom configuration matches none.
    """
    num_classes = getattr(module, "num_classes", None)
    if num_classes is None:
        return None
    return next((name for name, make in ARCHITECTURES.items() if make(num_classes=num_classes) == module), None)


__all__ = ["ARCHITECTURES", "build", "identify"]
