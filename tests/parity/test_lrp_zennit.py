"""LRP against Zennit on the same converted weights.

VGG16-BN and ResNet-50 (seeded random weights, randomised BatchNorm state), 32x48
inputs, one target per example, for EpsilonPlusFlat, EpsilonAlpha2Beta1 and
EpsilonGammaBox; DenseNet-121 for EpsilonPlusFlat, and torchvision's ``DenseNet`` class
in a small configuration (four blocks of two layers: every DenseNet layer kind, the
concatenations, transitions and batch-norm pairs) for all three and EpsilonAlpha2Beta1Flat, because compiling
LRP through DenseNet-121's 120 convolutions takes minutes per composite on 2 cores. Zennit starts from ``output * one_hot(target)`` (our default
``initial_relevance="output"``). Tolerance: max abs error <= 1e-3 x the reference's
max abs value; relevance sums within 1e-3 relative.

Zennit side: its ``VGGCanonizer`` and ``ResNetCanonizer``. DenseNet has no Zennit
canonizer, and its ``SequentialMergeBatchNorm`` would pair each dense layer's last
convolution with the next layer's first batch norm (they are adjacent leaves, but the
norm reads the concatenation); the test merges the true pairs with Zennit's
``NamedMergeBatchNorm`` (``conv0/norm0`` and each ``conv1/norm2``), the pairs our
canonizer finds by data flow. Zennit leaves a merged norm computing
``x / sqrt(1 + eps)``, not exactly ``x``; a few pixels of DenseNet-121's relevance are
ill-conditioned enough (float32 rounding alone moves them by 1e-4 of the map's scale)
that this 5e-6 scaling moves them by 2e-3, in float64 too, so the test's merge also
sets the norm's ``eps`` to 0 while merged (what Zennit's PR #171 intended). torchvision's DenseNet calls ``F.relu`` and
``F.adaptive_avg_pool2d``, which Zennit cannot hook (plain gradient); the zoo has
modules there, so our composite maps those two paths to ``Gradient`` to compare
like with like.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zennit import composites as zc
from zennit.attribution import Gradient
from zennit.canonizers import NamedMergeBatchNorm
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

import jaxplain as jx
from jaxplain.rules import lrp as rules
from tests.parity._torch import assert_close, converted, in_float64, nchw, nhwc

SHAPE = (2, 32, 48, 3)
TARGET = np.array([3, 7])
BOX = {"low": -3.0, "high": 3.0}
COMPOSITES = {
    "epsilon_plus_flat": (zc.EpsilonPlusFlat, {}),
    "epsilon_alpha2_beta1": (zc.EpsilonAlpha2Beta1, {}),
    "epsilon_gamma_box": (zc.EpsilonGammaBox, BOX),
    "epsilon_alpha2_beta1_flat": (zc.EpsilonAlpha2Beta1Flat, {}),
}
MAIN_THREE = ("epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box")


class ExactMergeBatchNorm(NamedMergeBatchNorm):
    """Zennit's merge, with the merged batch norm an exact identity (its ``eps`` set to 0 while merged)."""

    def register(self, linears, batch_norm):
        self.original_eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.original_eps


def densenet_canonizer(model: torch.nn.Module) -> NamedMergeBatchNorm:
    pairs = [(("features.conv0",), "features.norm0")]
    for name, _ in model.named_modules():
        if name.endswith(".conv1") and "denselayer" in name:
            pairs.append(((name,), name[: -len("conv1")] + "norm2"))
    return ExactMergeBatchNorm(pairs)


DENSENET_OPTIONS = {"name_map": ((("relu", "avgpool"), rules.Gradient()),)}
SMALL_DENSENET = {"growth_rate": 8, "block_config": (2, 2, 2, 2), "num_init_features": 16, "bn_size": 2}
CASES = {
    "vgg16_bn": ("vgg16_bn", {}, lambda model: [VGGCanonizer()], {}, MAIN_THREE),
    "resnet50": ("resnet50", {}, lambda model: [ResNetCanonizer()], {}, MAIN_THREE),
    "densenet121": ("densenet121", {}, lambda model: [densenet_canonizer(model)], DENSENET_OPTIONS,
                    ("epsilon_plus_flat",)),
    "densenet_small": ("DenseNet", SMALL_DENSENET, lambda model: [densenet_canonizer(model)], DENSENET_OPTIONS,
                       tuple(COMPOSITES)),
}
"""name: (torchvision builder, its configuration, Zennit canonizers, our options, composites)."""


def zennit_relevance(model: torch.nn.Module, composite: zc.Composite, images: np.ndarray,
                     targets: np.ndarray = TARGET) -> np.ndarray:
    """Zennit's relevance of NHWC ``images``, started from ``output * one_hot(targets)``."""
    with torch.no_grad():
        outputs = model(nchw(images))
    seed = torch.nn.functional.one_hot(torch.from_numpy(targets), outputs.shape[-1]) * outputs
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(nchw(images).requires_grad_(), seed)
    return nhwc(relevance)


FLOAT64_CASES = ("densenet_small",)
"""Compared in float64 (tolerance 1e-6): in float32 the small DenseNet's relevance differs by up to
1.1e-3 of its scale on one CPU and under 1e-3 on another (the summation order of oneDNN's and XLA's
convolutions), for every composite alike; in float64 the two sides agree within 5e-12."""


def _lrp_cases(torch_model, model, images, canonizers, options, names):
    for name in names:
        zennit_composite, arguments = COMPOSITES[name]
        expected = zennit_relevance(torch_model, zennit_composite(canonizers=canonizers(torch_model), **arguments),
                                    images)
        yield np.asarray(jx.lrp(model, images, TARGET, composite=name, **arguments, **options)), expected


@pytest.mark.parametrize("case", list(CASES))
def test_lrp_matches_zennit(case):
    arch, configuration, canonizers, options, names = CASES[case]
    torch_model, model = converted(arch, **configuration)
    images = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    with torch.no_grad():
        logits = torch_model(nchw(images)).numpy()[np.arange(2), TARGET]
    if case in FLOAT64_CASES:
        with in_float64(torch_model, model, images) as (torch_model, model, images):
            for ours, expected in _lrp_cases(torch_model, model, images, canonizers, options, names):
                assert ours.dtype == expected.dtype == np.float64
                assert_close(ours, expected, rtol=1e-6)
        return
    for ours, expected in _lrp_cases(torch_model, model, images, canonizers, options, names):
        assert_close(ours, expected)
        np.testing.assert_allclose(ours.sum((1, 2, 3)), expected.sum((1, 2, 3)),
                                   rtol=1e-3, atol=1e-3 * np.abs(logits).max())


@pytest.fixture(scope="module")
def exported_resnet18():
    import converters
    from tests.parity._torch import randomised

    torch_model = randomised("resnet18")
    return torch_model, converters.export_model(torch_model, input_shape=(1,) + SHAPE[1:])


@pytest.mark.parametrize("name", MAIN_THREE)
def test_lrp_on_the_generic_conversion_path_matches_zennit(exported_resnet18, name):
    """ResNet-18 converted through ``torch.export`` (torch's own ops and module paths, NCHW layers): the
    inline ``out += identity``, ``nn.AdaptiveAvgPool2d`` and each batch norm found on the program."""
    torch_model, model = exported_resnet18
    images = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    zennit_composite, arguments = COMPOSITES[name]
    expected = zennit_relevance(torch_model, zennit_composite(canonizers=[ResNetCanonizer()], **arguments), images)
    ours = np.asarray(jx.lrp(model, images, TARGET, composite=name, **arguments))
    assert_close(ours, expected)
