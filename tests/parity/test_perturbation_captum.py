"""Perturbation methods against Captum on the same converted ResNet-18.

Seeded random weights with randomised BatchNorm state, two 32x40 inputs (non-square),
one target per example. Occlusion and feature ablation are deterministic: tolerance
1e-4 x the reference's max abs value. Shapley sampling uses Captum's own orderings
(``torch.randperm`` replayed from the same seed) and must then match to 1e-4 as well;
without injected orderings it must converge to Captum's exact ``ShapleyValues``.
"""

from __future__ import annotations

import captum.attr as ca
import jax
import numpy as np
import pytest
import torch

import jaxplain as jx
from tests.parity._torch import assert_close, converted, nchw, nhwc

TARGETS = np.array([3, 7])
RTOL = 1e-4


@pytest.fixture(scope="module")
def resnet():
    return converted("resnet18", seed=2)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).normal(size=(2, 32, 40, 3)).astype(np.float32)


def block_mask(height: int, width: int, block: int) -> np.ndarray:
    """``[H, W]`` ids of ``block x block`` squares, row-major."""
    rows, cols = np.arange(height)[:, None] // block, np.arange(width)[None, :] // block
    return (rows * (-(-width // block)) + cols).astype(np.int32)


OCCLUSION_CASES = [
    # (our window in NHWC order, strides, baseline)
    ((8, 8, 3), 4, 0.0),
    ((5, 7), (3, 4, 1), 0.5),  # overrunning windows are cropped; window over all channels
    ((6, 6, 1), (6, 6, 1), "per_channel"),  # one channel at a time
]


@pytest.mark.parametrize("window,strides,baseline", OCCLUSION_CASES)
def test_occlusion(resnet, images, window, strides, baseline):
    torch_model, model = resnet
    channels = images.shape[-1]
    if baseline == "per_channel":
        baseline = np.array([-0.3, 0.2, 0.4], np.float32)
        torch_baseline = torch.from_numpy(baseline).reshape(1, 3, 1, 1).expand(2, 3, 32, 40).contiguous()
    else:
        torch_baseline = baseline
    captum_window = (window[2] if len(window) == 3 else channels,) + tuple(window[:2])
    captum_strides = strides if isinstance(strides, int) else (strides[2],) + tuple(strides[:2])
    theirs = ca.Occlusion(torch_model).attribute(
        nchw(images),
        sliding_window_shapes=captum_window,
        strides=captum_strides,
        baselines=torch_baseline,
        target=torch.from_numpy(TARGETS),
        perturbations_per_eval=64,
    )
    for incremental in (False, True):
        ours = jx.occlusion(model, images, TARGETS, sliding_window_shapes=window, strides=strides, baselines=baseline,
                            incremental=incremental)
        assert_close(ours, nhwc(theirs), rtol=RTOL)


def test_occlusion_chunked_equals_unchunked(resnet, images):
    _, model = resnet
    whole = jx.occlusion(model, images, TARGETS, sliding_window_shapes=(8, 8), strides=4)
    chunked = jx.occlusion(model, images, TARGETS, sliding_window_shapes=(8, 8), strides=4, perturbations_per_eval=7)
    # Chunks change the forward passes' batch size, so XLA may pick other convolution kernels: float32
    # logit differences of O(1) logits round differently (1.8e-6 seen on an AMD EPYC).
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)


def scattered_mask(height: int, width: int, block: int) -> np.ndarray:
    """Blocks, but group 0 also holds block 2 (two apart: its box has a gap) and id 5 is absent."""
    mask = block_mask(height, width, block)
    mask[mask == 2] = 0
    mask[mask == 5] = 6
    return mask


@pytest.mark.parametrize("make_mask", [block_mask, scattered_mask])
def test_feature_ablation_pixel_groups(resnet, images, make_mask):
    """Both with incremental passes (each group's bounding box, automatic for small boxes) and without."""
    torch_model, model = resnet
    mask = make_mask(32, 40, 4)
    baselines = np.random.default_rng(6).normal(size=(1, 32, 40, 3)).astype(np.float32)
    theirs = ca.FeatureAblation(torch_model).attribute(
        nchw(images),
        baselines=nchw(baselines),
        feature_mask=torch.from_numpy(mask)[None, None],
        target=torch.from_numpy(TARGETS),
        perturbations_per_eval=32,
    )
    for incremental in (False, True):
        ours = jx.feature_ablation(model, images, TARGETS, baselines=baselines, feature_mask=mask, batch_size=13,
                                   incremental=incremental)
        assert_close(ours, nhwc(theirs), rtol=RTOL)


def test_feature_ablation_per_example_and_channel_masks(resnet, images):
    torch_model, model = resnet
    rng = np.random.default_rng(7)
    mask = rng.integers(0, 12, size=(2, 32, 40, 3)).astype(np.int32)
    theirs = ca.FeatureAblation(torch_model).attribute(
        nchw(images), baselines=0.25, feature_mask=nchw(mask), target=torch.from_numpy(TARGETS), perturbations_per_eval=4
    )
    for incremental in (False, True):  # True: every group's box is the whole image, pasted at the first layer
        ours = jx.feature_ablation(model, images, TARGETS, baselines=0.25, feature_mask=mask, incremental=incremental)
        assert_close(ours, nhwc(theirs), rtol=RTOL)


def test_shapley_sampling_with_captums_orderings(resnet, images):
    torch_model, model = resnet
    mask = block_mask(32, 40, 8)  # 4 x 5 = 20 groups
    torch.manual_seed(11)
    orderings = np.stack([torch.randperm(20).numpy() for _ in range(6)])
    torch.manual_seed(11)
    theirs = ca.ShapleyValueSampling(torch_model).attribute(
        nchw(images),
        feature_mask=torch.from_numpy(mask)[None, None],
        target=torch.from_numpy(TARGETS),
        n_samples=6,
        perturbations_per_eval=20,
    )
    ours = jx.shapley_value_sampling(model, images, TARGETS, feature_mask=mask, permutations=orderings)
    assert_close(ours, nhwc(theirs), rtol=RTOL)


def test_exact_shapley_values_and_sampling_convergence(resnet, images):
    torch_model, model = resnet
    mask = (np.arange(32)[:, None] // 16 * 2 + np.arange(40)[None, :] // 20).astype(np.int32)  # 4 quadrants
    baselines = np.array([0.1, -0.2, 0.3], np.float32)
    torch_baselines = torch.from_numpy(baselines).reshape(1, 3, 1, 1).expand(2, 3, 32, 40).contiguous()
    theirs = ca.ShapleyValues(torch_model).attribute(
        nchw(images),
        baselines=torch_baselines,
        feature_mask=torch.from_numpy(mask)[None, None],
        target=torch.from_numpy(TARGETS),
        perturbations_per_eval=32,
    )
    exact = jx.shapley_values(model, images, TARGETS, baselines=baselines, feature_mask=mask)
    assert_close(exact, nhwc(theirs), rtol=RTOL)
    sampled = jx.shapley_value_sampling(
        model, images, TARGETS, key=jax.random.PRNGKey(0), baselines=baselines, feature_mask=mask, n_samples=200
    )
    assert_close(sampled, nhwc(theirs), rtol=0.1)

