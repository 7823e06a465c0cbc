"""Recognise torchvision models and build the matching zoo module."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import torch

from jaxplain.nets import resnet

SUPPORTED_LEAVES: tuple[type, ...] = (
    torch.nn.Conv2d,
    torch.nn.Linear,
    torch.nn.BatchNorm2d,
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.MaxPool2d,
    torch.nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.Dropout,
    torch.nn.Identity,
    torch.nn.Flatten,
)


def unsupported_modules(module: torch.nn.Module) -> list[str]:
    """``"path (Type)"`` for every leaf module the zoo has no counterpart for."""
    found = []
    for path, child in module.named_modules():
        if next(child.children(), None) is None and not isinstance(child, SUPPORTED_LEAVES):
            found.append(f"{path or '<root>'} ({type(child).__module__}.{type(child).__name__})")
    return found


def _resnet(model: torch.nn.Module) -> nn.Module:
    blocks = {"BasicBlock": resnet.BasicBlock, "Bottleneck": resnet.Bottleneck}
    block_name = type(model.layer1[0]).__name__
    if block_name not in blocks:
        raise ValueError(f"unsupported ResNet block layer1.0 ({block_name})")
    return resnet.ResNet(
        stage_sizes=tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5)),
        block=blocks[block_name],
        num_classes=model.fc.out_features,
        groups=model.groups,
        width_per_group=model.base_width,
    )


RECOGNISERS: dict[str, Callable[[torch.nn.Module], nn.Module]] = {
    "ResNet": _resnet,
}
