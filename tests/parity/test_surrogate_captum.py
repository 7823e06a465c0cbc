"""Captum's Lime and KernelShap against ours on the same converted ResNet-18, same samples.

Captum draws its samples with torch's RNG, so the test injects them: a perturbation
function (Lime) or generator (KernelShap) hands Captum the binary vectors that
``samples=`` hands us, example after example. Everything after sampling (perturbed
inputs, forward passes, cosine-kernel weights, the sklearn fit with sample weights)
is then compared: 1e-3 x the largest coefficient for Lasso (scikit-learn's coordinate
descent stops at its own duality-gap tolerance), 1e-3 for KernelShap's weighted least
squares (float32 here, float64 in sklearn, with endpoint weights of 1e6).
"""

from __future__ import annotations

import captum.attr as ca
import jax
import numpy as np
import pytest
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr._core.lime import get_exp_kernel_similarity_function

import jaxplain as jx
from tests.parity._torch import assert_close, converted, nchw, nhwc
from jaxplain.attribution.surrogate import kernel_shap_samples
from tests.parity.test_perturbation_captum import block_mask

TARGETS = np.array([3, 7])


@pytest.fixture(scope="module")
def resnet():
    return converted("resnet18", seed=2)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).normal(size=(2, 32, 40, 3)).astype(np.float32)


def replay(samples: np.ndarray):
    """Rows of ``samples [N, S, M]``, example by example, as Captum's ``[1, M]`` long tensors."""
    rows = iter(samples.reshape(-1, samples.shape[-1]))
    return lambda: torch.from_numpy(next(rows)[None].astype(np.int64))


@pytest.mark.parametrize("n_samples", [30, 12])
def test_lime_lasso_with_captums_samples(resnet, images, n_samples):
    torch_model, model = resnet
    mask = block_mask(32, 40, 8)
    samples = np.random.default_rng(n_samples).integers(0, 2, size=(2, n_samples, 20))
    next_row = replay(samples)
    explainer = ca.Lime(torch_model, perturb_func=lambda original, **kwargs: next_row())
    theirs = explainer.attribute(
        nchw(images), target=torch.from_numpy(TARGETS), feature_mask=torch.from_numpy(mask)[None, None],
        n_samples=n_samples, perturbations_per_eval=8,
    )
    ours = jx.lime(model, images, TARGETS, feature_mask=mask, samples=samples)
    assert_close(ours, nhwc(theirs), rtol=1e-3)


def test_lime_ridge_euclidean_with_baselines(resnet, images):
    torch_model, model = resnet
    mask = block_mask(32, 40, 8) + 3  # Captum shifts ids to start at 0; so do we
    samples = np.random.default_rng(1).integers(0, 2, size=(2, 25, 20))
    next_row = replay(samples)
    explainer = ca.Lime(
        torch_model,
        interpretable_model=SkLearnRidge(alpha=0.5),
        similarity_func=get_exp_kernel_similarity_function("euclidean", kernel_width=30.0),
        perturb_func=lambda original, **kwargs: next_row(),
    )
    theirs = explainer.attribute(
        nchw(images), baselines=0.3, target=torch.from_numpy(TARGETS), feature_mask=torch.from_numpy(mask)[None, None],
        n_samples=25,
    )
    ours = jx.lime(
        model, images, TARGETS, baselines=0.3, feature_mask=mask, samples=samples, interpretable_model="ridge",
        alpha=0.5, distance_mode="euclidean", kernel_width=30.0,
    )
    assert_close(ours, nhwc(theirs), rtol=1e-3)


@pytest.mark.parametrize("n_samples", [40, 14])
def test_kernel_shap_with_captums_samples(resnet, images, n_samples):
    torch_model, model = resnet
    mask = block_mask(32, 40, 8)
    samples = np.asarray(kernel_shap_samples(jax.random.PRNGKey(n_samples), 2, n_samples, 20))
    rows = iter(samples.reshape(-1, 20))

    class Injected(ca.KernelShap):
        def kernel_shap_perturb_generator(self, original_inp, **kwargs):
            for row in rows:
                yield torch.from_numpy(row[None].astype(np.int64))

    theirs = Injected(torch_model).attribute(
        nchw(images), target=torch.from_numpy(TARGETS), feature_mask=torch.from_numpy(mask)[None, None],
        n_samples=n_samples, perturbations_per_eval=8,
    )
    ours = jx.kernel_shap(model, images, TARGETS, feature_mask=mask, samples=samples)
    assert_close(ours, nhwc(theirs), rtol=1e-3)
