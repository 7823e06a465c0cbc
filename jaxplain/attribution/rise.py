"""RISE: randomised input sampling (Petsiuk et al. 2018), TorchRay's algorithm.

TorchRay (torchray/attribution/rise.py) draws a low-resolution binary grid per mask,
upsamples it bilinearly after a one-cell reflect padding, and crops it at a random
shift; the saliency is the mask average weighted by the masked input's sigmoid score.
Here each mask is ``rows @ grid @ cols.T`` with ``rows`` and ``cols`` slices of one
static upsampling matrix per axis, generated inside the vmapped loop from its own key,
so no mask bank is ever held in memory.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution._common import (
    check_batch_size,
    check_choice,
    is_concrete,
    prepare,
    require_key,
    run,
    selected_output,
    sum_over,
)
from jaxplain.image import interpolation_matrix
from jaxplain.typing import Array, Target

SCORES = ("sigmoid", "softmax")


@lru_cache(maxsize=None)
def upsampling_rows(size: int, num_cells: int) -> tuple[np.ndarray, int]:
    """``([padded, num_cells] matrix, first row)`` of TorchRay's mask upsampling along one axis.

    The grid is reflect-padded by one cell, resized bilinearly (``align_corners=False``)
    to ``c * (num_cells + 2)`` with ``c = ceil((size + cell) / num_cells)`` and
    ``cell = ceil(size / num_cells)``, then cropped from row ``c``; the random shift adds
    ``0 .. cell-1`` to that first row.
    """
    cell = -(-size // num_cells)
    upsampled_cell = -(-(size + cell) // num_cells)
    reflect = np.zeros((num_cells + 2, num_cells), np.float32)
    reflect[0, 1] = reflect[-1, -2] = 1.0
    reflect[1:-1] = np.eye(num_cells, dtype=np.float32)
    resize = interpolation_matrix(num_cells + 2, upsampled_cell * (num_cells + 2), "bilinear")
    return resize @ reflect, upsampled_cell


def mask_from_grid(grid: Array, shift: Array, size: tuple[int, int]) -> Array:
    """One ``[H, W]`` RISE mask from a ``[num_cells, num_cells]`` grid and a ``(dy, dx)`` shift."""
    num_cells = grid.shape[0]
    factors = []
    for axis, length in enumerate(size):
        matrix, first = upsampling_rows(length, num_cells)
        factors.append(jax.lax.dynamic_slice_in_dim(jnp.asarray(matrix, grid.dtype), first + shift[axis], length))
    return factors[0] @ grid @ factors[1].T


def random_mask(key: Array, size: tuple[int, int], num_cells: int, p: float) -> Array:
    """A mask as TorchRay draws it: cells on with probability ``p``, shift in ``[0, cell)`` per axis."""
    grid_key, shift_key = jax.random.split(key)
    grid = (jax.random.uniform(grid_key, (num_cells, num_cells)) < p).astype(jnp.float32)
    cells = jnp.array([-(-length // num_cells) for length in size])
    shift = jax.random.randint(shift_key, (2,), 0, cells)
    return mask_from_grid(grid, shift, size)


def generate_masks(key: Array, num_masks: int, size: tuple[int, int], *, num_cells: int = 7, p: float = 0.5) -> Array:
    """``[num_masks, H, W]`` RISE masks (the ones :func:`rise` draws from the same key)."""
    return jax.vmap(lambda k: random_mask(k, size, num_cells, p))(jax.random.split(key, num_masks))


def _rise_core(model, inputs, target, key, arrays, *, num_masks, num_cells, p, scores, batch_size):
    size = inputs.shape[1:3]
    masks = arrays.get("masks")
    squash = jax.nn.sigmoid if scores == "sigmoid" else jax.nn.softmax

    def weighted_mask(element):
        mask = element if masks is not None else random_mask(element, size, num_cells, p)
        score = selected_output(squash(model(inputs * mask[None, :, :, None])), target)
        return score[:, None, None] * mask[None]

    total = sum_over(weighted_mask, masks if masks is not None else jax.random.split(key, num_masks), batch_size)
    return (total / num_masks)[..., None]


def rise(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    key: Array | None = None,
    num_masks: int = 8000,
    num_cells: int = 7,
    p: float = 0.5,
    masks: Any = None,
    scores: str = "sigmoid",
    batch_size: int | None = 32,
) -> Array:
    """RISE saliency: ``sum_m score(x * M_m)[target] * M_m / num_masks``.

    TorchRay's ``rise`` / ``rise_class`` (torchray/attribution/rise.py): random masks
    from ``num_cells x num_cells`` binary grids (a cell is on with probability ``p``),
    upsampled bilinearly and shifted at random, and the **sigmoid** of the model's output
    (``scores="softmax"`` for the RISE paper's probabilities). The masks are one vmapped
    axis, ``batch_size`` masks of every image per forward pass (TorchRay's default 32;
    None for all at once).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` images, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        key: PRNG key for the masks (required unless ``masks`` is given).
        num_masks: number of random masks.
        num_cells: the masks' grid is ``num_cells x num_cells`` (at least 2).
        p: probability that a grid cell is on.
        masks: ``[num_masks, H, W]`` masks to use instead (TorchRay's ``filter_masks``).
        scores: ``"sigmoid"`` (TorchRay's) or ``"softmax"`` (the paper's) of the outputs.
        batch_size: masks per forward pass of every image (None: all at once).

    Returns:
        ``[N, H, W, 1]`` saliency maps.

    Raises:
        ValueError: inputs that are not images, masks of another size or not finite, no
            key without masks, ``num_cells < 2``, ``p`` outside [0, 1], bad target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.rise(model, x, 0, key=jax.random.PRNGKey(0), num_masks=16, num_cells=4, batch_size=8).shape
        (2, 16, 16, 1)
    """
    check_choice("scores", scores, SCORES, method="rise")
    check_batch_size(batch_size, method="rise")
    model, inputs, target = prepare(model, inputs, target, method="rise")
    if inputs.ndim != 4:
        raise ValueError(f"rise: inputs must be images [N, H, W, C], got shape {inputs.shape}")
    arrays = {}
    if masks is not None:
        masks = jnp.asarray(masks, inputs.dtype)
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.ndim != 3 or masks.shape[1:] != inputs.shape[1:3]:
            raise ValueError(f"rise: masks must have shape [num_masks, {inputs.shape[1]}, {inputs.shape[2]}], got {masks.shape}")
        if is_concrete(masks) and not bool(jnp.all(jnp.isfinite(masks))):
            raise ValueError("rise: masks contain NaN or inf")
        arrays["masks"] = masks
        num_masks = masks.shape[0]
    else:
        key = require_key(key, method="rise")
        if not isinstance(num_cells, int) or num_cells < 2:
            raise ValueError(f"rise: num_cells must be an int >= 2, got {num_cells!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"rise: p must lie in [0, 1], got {p!r}")
    if not isinstance(num_masks, int) or num_masks < 1:
        raise ValueError(f"rise: num_masks must be a positive int, got {num_masks!r}")
    return run(
        _rise_core,
        model,
        inputs,
        target,
        key=key,
        arrays=arrays,
        num_masks=num_masks,
        num_cells=num_cells,
        p=float(p),
        scores=scores,
        batch_size=batch_size,
    )
