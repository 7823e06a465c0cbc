"""Structure-dependent methods on a model converted through torch.export, at torch's module paths.

A torchvision ResNet-18 with a Sequential head (which the zoo refuses) converts through the
generic path; guided backprop and Grad-CAM at ``layer4`` and at
``layer3.1.conv2`` equal Captum's on the torch model within 1e-4 of the reference's scale.
"""

from __future__ import annotations

import copy

import captum.attr as ca
import jax
import numpy as np
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
