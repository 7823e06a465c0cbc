"""LRP on every form of one network against Zennit on its torch twin (same weights, same input).

The residual CNN of :mod:`tests.forms` (zoo layers, idiomatic linen, NNX, Equinox, a plain
function) against Zennit on a torch twin written the way Zennit's rules can see it: ``nn.ReLU``
modules, the residual addition as Zennit's ``Sum`` layer (what its ``ResNetCanonizer`` inserts)
and the spatial mean as ``nn.AdaptiveAvgPool2d`` (a module, so its ``Norm`` rule applies, as ours
applies to every mean); ``bn1`` merged into ``conv1`` by Zennit's ``SequentialMergeBatchNorm``.
Our forms find the same layers on their traced programs: the inline ``x + y``, ``.mean`` and the
hand-written Equinox batch norm included. Tolerance: max abs error <= 1e-4 x the reference's max
abs value (float32; the net is small and well conditioned), relevance sums within 1e-4.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from zennit import composites as zc
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.layer import Sum

import jaxplain as jx
from tests import forms
from tests.parity._torch import assert_close
from tests.parity.test_lrp_zennit import zennit_relevance

TARGETS = np.array([1, 3])
COMPOSITES = {
    "epsilon_plus_flat": (zc.EpsilonPlusFlat, {}),
    "epsilon_alpha2_beta1": (zc.EpsilonAlpha2Beta1, {}),
    "epsilon_gamma_box": (zc.EpsilonGammaBox, {"low": -3.0, "high": 3.0}),
}


class TwinBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.add = Sum()

    def forward(self, x):
        return self.add(torch.stack([x, self.relu(self.conv(x))], dim=-1))


class TwinCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8, eps=forms.EPS)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.block = TwinBlock()
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        return self.head(self.avgpool(self.block(x)).flatten(1))


@pytest.fixture(scope="module")
def cnn():
    weights = forms.cnn_weights()
    twin = TwinCNN()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    return twin.eval(), forms.cnn_forms(weights)


@pytest.fixture(scope="module")
def images():
    return np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 10, 3)))


def _zennit(twin, name, images):
    composite_class, options = COMPOSITES[name]
    return zennit_relevance(twin, composite_class(canonizers=[SequentialMergeBatchNorm()], **options), images,
                            TARGETS)


def _ours(model, form, name, images):
    options = COMPOSITES[name][1]
    if form == "equinox":
        return np.asarray(jx.lrp(model, images.transpose(0, 3, 1, 2), TARGETS, composite=name,
                                 **options)).transpose(0, 2, 3, 1)
    return np.asarray(jx.lrp(model, images, TARGETS, composite=name, **options))


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_every_form_matches_zennit(cnn, images, name):
    twin, models = cnn
    expected = _zennit(twin, name, images)
    for form, model in models.items():
        ours = _ours(model, form, name, images)
        assert_close(ours, expected, rtol=1e-4)
        np.testing.assert_allclose(ours.sum((1, 2, 3)), expected.sum((1, 2, 3)), rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).sum((1, 2, 3)).max())
