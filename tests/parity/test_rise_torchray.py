"""RISE against the torchray package (1.0.0.2) on the same converted ResNet-18.

TorchRay's masks come from torch's RNG, so the comparison injects them: the same
masks go to ``torchray.attribution.rise.rise_class`` (``filter_masks``) and to
``jx.rise(masks=...)``; tolerance 1e-4 x the map's max. Mask generation is checked
separately: given the same low-resolution grid and shift, our separable construction
equals TorchRay's reflect-pad, bilinear upsampling and crop.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from torchray.attribution.rise import _upsample_reflect, rise_class

import jaxplain as jx
from jaxplain.attribution.rise import generate_masks, mask_from_grid
from tests.parity._torch import assert_close, converted, nchw, nhwc

TARGETS = np.array([3, 7])


@pytest.mark.parametrize("size,num_cells", [((32, 40), 7), ((45, 30), 5)])
def test_mask_construction_matches_torchray(size, num_cells):
    rng = np.random.default_rng(0)
    height, width = size
    cells = (-(-height // num_cells), -(-width // num_cells))
    grids = (rng.random((6, num_cells, num_cells)) < 0.5).astype(np.float32)
    shifts = np.stack([rng.integers(0, cells[0], 6), rng.integers(0, cells[1], 6)], axis=1)
    upsampled = _upsample_reflect(torch.from_numpy(grids)[:, None], (height + cells[0], width + cells[1]))
    theirs = np.stack([upsampled[i, 0, dy : dy + height, dx : dx + width].numpy() for i, (dy, dx) in enumerate(shifts)])
    ours = jax.vmap(lambda g, s: mask_from_grid(g, s, size))(grids, shifts)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_generated_masks_statistics():
    masks = np.asarray(generate_masks(jax.random.PRNGKey(0), 1000, (32, 40), num_cells=7, p=0.3))
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean() - 0.3) < 0.02
    assert not np.allclose(masks[0], masks[1])


@pytest.mark.parametrize("batch_size", [None, 24])
def test_rise_matches_torchray_given_masks(batch_size):
    torch_model, model = converted("resnet18", seed=4)
    images = np.random.default_rng(8).normal(size=(2, 32, 40, 3)).astype(np.float32)
    masks = np.array(generate_masks(jax.random.PRNGKey(1), 64, (32, 40)))
    theirs = rise_class(
        torch_model,
        nchw(images),
        target=torch.from_numpy(TARGETS),
        num_masks=64,
        filter_masks=torch.from_numpy(masks)[:, None],
        batch_size=32,
    )
    ours = jx.rise(model, images, TARGETS, masks=masks, batch_size=batch_size)
    assert_close(ours, nhwc(theirs), rtol=1e-4)
