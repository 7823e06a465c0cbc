"""Every form of one network against Captum on its torch twin (same weights, same input).

The residual CNN and the gated MLP of :mod:`tests.forms`, in each form (zoo layers,
idiomatic linen, NNX, Equinox, a plain function), against Captum on a torch twin built
with ``nn.ReLU`` / ``nn.Sigmoid`` modules. Tolerance: max abs error <= 1e-4 x the
reference's max abs value (float32; these nets are small and well conditioned). Stock
Captum's DeepLift is compared with ``flavour="captum"``: the twin's ReLU feeds its max
pool, where Captum's hooks clash (see tests/parity/test_deeplift_captum.py).
"""

from __future__ import annotations

import captum.attr as ca
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxplain as jx
from tests import forms
from tests.parity._torch import assert_close

TARGETS = np.array([1, 3])


class TwinBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return x + self.relu(self.conv(x))


class TwinCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.block = TwinBlock()
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        return self.head(self.block(x).mean((2, 3)))


class TwinMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 12)
        self.norm = torch.nn.LayerNorm(12, eps=forms.EPS)
        self.gelu = torch.nn.GELU()
        self.gate = torch.nn.Linear(6, 12)
        self.sigmoid = torch.nn.Sigmoid()
        self.head = torch.nn.Linear(12, 4)

    def forward(self, x):
        return self.head(self.gelu(self.norm(self.fc1(x))) * self.sigmoid(self.gate(x)))


def _twin(module: torch.nn.Module, weights) -> torch.nn.Module:
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    return module.eval()


@pytest.fixture(scope="module")
def cnn():
    weights = forms.cnn_weights()
    return _twin(TwinCNN(), weights), forms.cnn_forms(weights)


@pytest.fixture(scope="module")
def images():
    return np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 10, 3)))


def _ours(name, method, model, x, **options):
    if name == "equinox":
        return np.asarray(method(model, jnp.asarray(x.transpose(0, 3, 1, 2)), TARGETS, **options)).transpose(0, 2, 3, 1)
    return np.asarray(method(model, jnp.asarray(x), TARGETS, **options))


def _theirs(attribution, x, **options):
    tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_()
    out = attribution.attribute(tensor, target=torch.from_numpy(TARGETS), **options)
    return out.detach().numpy().transpose(0, 2, 3, 1)


FORMS = ("zoo", "linen", "nnx", "equinox", "function")


@pytest.mark.parametrize("form", FORMS)
def test_every_form_matches_captum_on_the_twin(cnn, images, form):
    twin, models = cnn
    model = models[form]
    cases = [
        (jx.saliency, ca.Saliency(twin), {}, {}),
        (jx.integrated_gradients, ca.IntegratedGradients(twin), {"n_steps": 16}, {"n_steps": 16}),
        (jx.guided_backprop, ca.GuidedBackprop(twin), {}, {}),
        (jx.deconvolution, ca.Deconvolution(twin), {}, {}),
        (jx.deeplift, ca.DeepLift(twin), {"flavour": "captum"}, {}),
    ]
    for ours, theirs, our_options, their_options in cases:
        assert_close(_ours(form, ours, model, images, **our_options), _theirs(theirs, images, **their_options),
                     rtol=1e-4)
    cam = ca.LayerGradCam(twin, twin.block.conv).attribute(
        torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), target=torch.from_numpy(TARGETS))
    x = jnp.asarray(images.transpose(0, 3, 1, 2) if form == "equinox" else images)
    ours = np.asarray(jx.layer_gradcam(model, x, TARGETS, layer="block.conv"))
    assert_close(ours if form == "equinox" else ours.transpose(0, 3, 1, 2), cam.detach().numpy(), rtol=1e-4)


def test_gated_mlp_forms_match_captum():
    weights = forms.mlp_weights()
    twin = _twin(TwinMLP(), weights)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 6)))
    tensor = torch.from_numpy(x).requires_grad_()
    target = torch.from_numpy(TARGETS)
    references = {
        "saliency": ca.Saliency(twin).attribute(tensor, target=target).detach().numpy(),
        "ig": ca.IntegratedGradients(twin).attribute(tensor, target=target, n_steps=16).detach().numpy(),
        "deeplift": ca.DeepLift(twin).attribute(tensor, target=target).detach().numpy(),
    }
    for name, model in forms.mlp_forms(weights).items():
        assert_close(jx.saliency(model, x, TARGETS), references["saliency"], rtol=1e-4)
        assert_close(jx.integrated_gradients(model, x, TARGETS, n_steps=16), references["ig"], rtol=1e-4)
        assert_close(jx.deeplift(model, x, TARGETS, flavour="captum"), references["deeplift"], rtol=1e-4)
        with pytest.raises(ValueError, match="ReLUs"):
            jx.guided_backprop(model, x, TARGETS)
