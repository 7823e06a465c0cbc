"""TorchRay's backprop saliency family against the torchray package (1.0.0.2, which runs on torch 2.15).

ResNet-18 (torchray's ``update_resnet`` gives its skip connections the excitation
sum rule; the zoo's ``add`` modules take it by default) and VGG11 with seeded random
weights, randomised BatchNorm state, 32x48 inputs, one target per example; probes at
the input and at inner layers, with and without resize and smoothing. Tolerance: max
abs error <= 1e-3 x the reference's max abs value. TorchRay's ``resize_mode="nearest"``
raises on current torch (it passes ``align_corners=False`` to every mode), so only
bilinear resizing is compared; our nearest mode is ``jaxplain.image.interpolate``'s,
itself checked against ``F.interpolate``. torchvision's VGG ReLUs work in place: a
TorchRay probe on a convolution followed by one then reads the gradient of the ReLU's
output (the probed tensor is overwritten), so the VGG's ReLUs are made out-of-place here
and the probe means the layer's own output, as ours does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchray.attribution.deconvnet import deconvnet
from torchray.attribution.excitation_backprop import (
    contrastive_excitation_backprop,
    excitation_backprop,
    update_resnet,
)
from torchray.attribution.gradient import gradient
from torchray.attribution.guided_backprop import guided_backprop
from torchray.attribution.linear_approx import linear_approx

import jaxplain as jx
from tests import forms
from tests.parity._torch import assert_close, converted, nchw, nhwc
from tests.parity.test_forms_captum import TwinCNN, _twin

SHAPE = (2, 32, 48, 3)
TARGET = np.array([3, 7])


@pytest.fixture(scope="module")
def resnet():
    torch_model, model = converted("resnet18")
    return update_resnet(torch_model), model


@pytest.fixture(scope="module")
def vgg():
    torch_model, model = converted("vgg11")
    for module in torch_model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    return torch_model, model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


def theirs(function, torch_model, images, target=TARGET, **options):
    for parameter in torch_model.parameters():
        parameter.requires_grad_(False)
    result = function(torch_model, nchw(images).requires_grad_(), torch.from_numpy(target), **options)
    return nhwc(result)


PAIRS = [
    (gradient, jx.torchray_gradient),
    (deconvnet, jx.torchray_deconvnet),
    (guided_backprop, jx.torchray_guided_backprop),
    (excitation_backprop, jx.excitation_backprop),
]


@pytest.mark.parametrize("reference,ours", PAIRS, ids=[p[1].__name__ for p in PAIRS])
@pytest.mark.parametrize("arch,layer,options", [
    ("resnet", None, {}),
    ("resnet", "layer2", {"resize": True, "smooth": 0.02}),
    ("vgg", "features.8", {"resize": (40, 20), "smooth": 0.05}),
])
def test_backprop_saliency_matches_torchray(reference, ours, arch, layer, options, request, images):
    torch_model, model = request.getfixturevalue(arch)
    expected = theirs(reference, torch_model, images, saliency_layer="" if layer is None else layer, **options)
    got = ours(model, images, TARGET, saliency_layer=layer, **options)
    assert got.shape == expected.shape
    assert_close(got, expected)


def test_linear_approx_matches_torchray(resnet, images):
    torch_model, model = resnet
    expected = theirs(linear_approx, torch_model, images, saliency_layer="layer3", resize=True)
    assert_close(jx.linear_approx(model, images, TARGET, saliency_layer="layer3", resize=True), expected)


def test_contrastive_excitation_backprop_matches_torchray(resnet, images):
    torch_model, model = resnet
    expected = theirs(contrastive_excitation_backprop, torch_model, images, saliency_layer="layer2",
                      contrast_layer="layer4", classifier_layer="fc")
    got = jx.contrastive_excitation_backprop(model, images, TARGET, saliency_layer="layer2", contrast_layer="layer4")
    assert_close(got, expected)


def test_bad_options_are_refused(resnet, images):
    _, model = resnet
    with pytest.raises(ValueError, match="resize"):
        jx.torchray_gradient(model, images, TARGET, resize=(3,))
    with pytest.raises(ValueError, match="resize_mode"):
        jx.excitation_backprop(model, images, TARGET, resize=True, resize_mode="cubic")
    with pytest.raises(ValueError, match="unknown layer 'layer9'"):
        jx.linear_approx(model, images, TARGET, saliency_layer="layer9")


TWIN_TARGET = np.array([1, 3])


class PooledTwin(TwinCNN):
    """tests/forms.py's CNN in torch with its spatial mean as an ``AdaptiveAvgPool2d`` module, which TorchRay's
    excitation rules see (its functional ``x.mean`` would keep the plain gradient)."""

    def __init__(self):
        super().__init__()
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        return self.head(torch.flatten(self.avgpool(self.block(x)), 1))


@pytest.mark.parametrize("form", ["zoo", "linen", "nnx", "function"])  # Equinox keeps channels first: refused
def test_excitation_backprop_on_every_form_matches_torchray_on_the_twin(form):
    """Excitation rules read from each form's program against TorchRay on the torch twin. The twin's residual
    sum is functional, so TorchRay gives it the gradient: ``split_residuals=False``."""
    weights = forms.cnn_weights()
    twin, model = _twin(PooledTwin(), weights), forms.cnn_forms(weights)[form]
    images = np.random.default_rng(3).standard_normal((2, 8, 10, 3)).astype(np.float32)
    for layer in (None, "conv1", "block"):
        expected = theirs(excitation_backprop, twin, images, TWIN_TARGET, saliency_layer="" if layer is None else layer)
        got = jx.excitation_backprop(model, images, TWIN_TARGET, saliency_layer=layer, split_residuals=False)
        assert_close(got, expected)
    expected = theirs(contrastive_excitation_backprop, twin, images, TWIN_TARGET, saliency_layer="conv1", contrast_layer="block",
                      classifier_layer="head")
    got = jx.contrastive_excitation_backprop(model, images, TWIN_TARGET, saliency_layer="conv1", contrast_layer="block",
                                             split_residuals=False)
    assert_close(got, expected)
