"""``DemoNetTorch``: the PyTorch twin of :class:`jaxplain.nets.demo.DemoNet`.

The demo model is trained in torch (``python -m converters.train_demo``) and reaches
jaxplain through :func:`converters.from_torch` like any torchvision model: the
recogniser below reads the widths and class count off the torch instance, and the
structure check compares every torch leaf with the zoo module at the same path.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import torch

from jaxplain.nets import demo


class DemoNetTorch(torch.nn.Module):
    """conv-BN-ReLU blocks (stride 2 in the first, 2x2 max pools after the first two),
    global average pool, linear.

    Args:
        num_classes: number of logits.
        widths: output channels of each 3x3 convolution block.
    """

    def __init__(self, num_classes: int = 6, widths: Sequence[int] = demo.WIDTHS) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        channels = 3
        for block, width in enumerate(widths):
            stride = 2 if block == 0 else 1
            layers += [
                torch.nn.Conv2d(channels, width, 3, stride, 1, bias=False),
                torch.nn.BatchNorm2d(width),
                torch.nn.ReLU(),
            ]
            if block < demo.POOLED_BLOCKS:
                layers.append(torch.nn.MaxPool2d(2, 2))
            channels = width
        self.features = torch.nn.Sequential(*layers)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.flatten = torch.nn.Flatten()
        self.classifier = torch.nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of an NCHW batch."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def recognise(model: torch.nn.Module) -> nn.Module:
    """The zoo :class:`~jaxplain.nets.demo.DemoNet` with ``model``'s widths and class count."""
    widths = tuple(layer.out_channels for layer in model.features if isinstance(layer, torch.nn.Conv2d))
    return demo.DemoNet(num_classes=model.classifier.out_features, widths=widths)
