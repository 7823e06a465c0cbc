"""Structure-dependent methods on a model converted through torch.export, at torch's module paths.

A torchvision ResNet-18 with a Sequential head (which the zoo refuses) converts through the
generic path; guided backprop and Grad-CAM at ``layer4`` and at
``layer3.1.conv2`` equal Captum's on the torch model within 1e-4 of the reference's scale.
A module that ``forward`` calls twice, with other ops between the calls or none, is refused
by the layer methods, which name it and its number of calls.
"""

from __future__ import annotations

import copy

import captum.attr as ca
import jax
import numpy as np
import pytest
import torch
import torchvision

import converters
import jaxplain as jx
from tests.parity._torch import assert_close, nchw, nhwc


def test_engine_methods_on_an_exported_resnet_match_captum():
    torch.manual_seed(0)
    torch_model = torchvision.models.resnet18(num_classes=10)
    torch_model.fc = torch.nn.Sequential(torch.nn.Linear(512, 10))
    torch_model.eval()
    model = converters.from_torch(torch_model, input_shape=(1, 64, 48, 3))
    assert type(model.module).__name__ == "ExportedGraph"
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 64, 48, 3)))
    targets = np.array([3, 7])
    target = torch.from_numpy(targets)
    assert_close(jx.guided_backprop(model, x, targets),
                 nhwc(ca.GuidedBackprop(copy.deepcopy(torch_model)).attribute(nchw(x), target=target)), rtol=1e-4)
    for path, module in (("layer4", torch_model.layer4), ("layer3.1.conv2", torch_model.layer3[1].conv2)):
        theirs = nhwc(ca.LayerGradCam(torch_model, module).attribute(nchw(x), target=target))
        assert_close(jx.layer_gradcam(model, x, targets, layer=path), theirs, rtol=1e-4)
    assert "layer2.0.downsample.0" in jx.layers(model, x)


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.act = torch.nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class _Reused(torch.nn.Module):
    """One ReLU called twice with a convolution between the calls, one GELU and one block each
    called twice back to back (no op between the calls), one convolution called three times."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.gelu = torch.nn.GELU()
        self.block = _Block()
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(self.relu(self.stem(x))))
        x = self.block(self.block(self.gelu(self.gelu(x))))
        x = self.conv(self.conv(x))
        return self.head(x.mean((2, 3)))


def test_a_module_called_more_than_once_is_refused_with_its_number_of_calls():
    torch.manual_seed(0)
    torch_model = _Reused().eval()
    model = converters.from_torch(torch_model, input_shape=(1, 8, 8, 3))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3)))
    targets = np.array([2, 5])
    with torch.no_grad():
        assert_close(model(x), torch_model(nchw(x)).numpy(), rtol=1e-5)
    for path, calls in (("relu", 2), ("gelu", 2), ("block", 2), ("block.conv", 2), ("block.act", 2), ("conv", 3)):
        with pytest.raises(ValueError, match=rf"layer_gradcam: layer '{path}' is called {calls} times"):
            jx.layer_gradcam(model, x, targets, layer=path)
        with pytest.raises(ValueError, match=rf"layer '{path}' is called {calls} times"):
            jx.layer_activation(model, x, layer=path)
    theirs = nhwc(ca.LayerGradCam(torch_model, torch_model.stem).attribute(nchw(x), target=torch.from_numpy(targets)))
    assert_close(jx.layer_gradcam(model, x, targets, layer="stem"), theirs, rtol=1e-4)
