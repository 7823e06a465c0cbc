"""A deterministic synthetic dataset: one coloured shape on a photographic background.

Each image is a crop of a photograph or texture that ships with scikit-image
(flipped, rotated, rescaled and tinted), with one filled shape pasted on it. The
shape's class is the label and its pixels are the ground-truth mask, so an
explanation can be scored against where the evidence really is. The shape's
colour, fill, size, position and rotation are random and independent of the
class: only its outline tells the classes apart.

Image ``i`` of seed ``s`` depends on ``(s, i)`` alone, so ``make_dataset(n, seed=s)``
is a prefix of ``make_dataset(m, seed=s)`` for ``m > n``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import skimage.data
import skimage.draw
import skimage.transform

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
"""Class names; a label indexes this tuple."""

BACKGROUNDS: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "camera",
    "moon",
    "coins",
    "coffee",
    "astronaut",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)
"""``skimage.data`` images bundled with scikit-image itself (no download)."""

BACKGROUND_SIDE = 256
"""Backgrounds are rescaled once so their shorter side has this many pixels."""

_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]),
    "triangle": np.array([(np.cos(a), np.sin(a)) for a in np.pi / 2 + 2 * np.pi / 3 * np.arange(3)]),
    "star": np.array(
        [(r * np.cos(a), r * np.sin(a)) for a, r in zip(np.pi / 2 + np.pi / 5 * np.arange(10), [1.0, 0.42] * 5)]
    ),
    "cross": np.array(
        [(0.3, 1), (0.3, 0.3), (1, 0.3), (1, -0.3), (0.3, -0.3), (0.3, -1)]
        + [(-0.3, -1), (-0.3, -0.3), (-1, -0.3), (-1, 0.3), (-0.3, 0.3), (-0.3, 1)]
    ),
}
"""Outlines of the polygonal classes, ``(x, y)`` in units of the shape's radius."""

_DISCS: dict[str, tuple[float, float]] = {"circle": (0.0, 0.85), "ring": (0.5, 0.95)}
"""Inner and outer radius of the round classes, in units of the shape's radius."""


class DemoSet(NamedTuple):
    """Images with their labels and ground-truth object masks.

    Attributes:
        images: ``uint8 [N, size, size, 3]`` RGB images.
        labels: ``int64 [N]`` indices into :data:`CLASSES`.
        masks: ``bool [N, size, size]``, true on the labelled shape's pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


@lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    """The :data:`BACKGROUNDS` as float RGB in [0, 1], shorter side :data:`BACKGROUND_SIDE`."""
    loaded = []
    for name in BACKGROUNDS:
        image = np.asarray(getattr(skimage.data, name)(), np.float32) / 255.0
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = image[..., :3]
        scale = BACKGROUND_SIDE / min(image.shape[:2])
        loaded.append(skimage.transform.rescale(image, scale, channel_axis=-1, anti_aliasing=True).astype(np.float32))
    return tuple(loaded)


@lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    """Pixel-centre coordinates ``(y, x)``, float32 ``[2, size, size]``."""
    return (np.mgrid[:size, :size] + 0.5).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A randomly cropped, rescaled, flipped, rotated and tinted background, float RGB."""
    sources = _backgrounds()
    source = sources[rng.integers(len(sources))]
    crop = int(size * 2 ** rng.uniform(0.0, 2.0))
    crop = min(crop, *source.shape[:2])
    top = rng.integers(source.shape[0] - crop + 1)
    left = rng.integers(source.shape[1] - crop + 1)
    index = (np.arange(size) * crop) // size
    image = source[top + index[:, None], left + index[None, :]]
    image = np.rot90(image, rng.integers(4))
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.2:
        image = np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1)
    mean = image.mean()
    image = (image - mean) * np.float32(rng.uniform(0.5, 1.2)) + (mean + np.float32(rng.uniform(-0.15, 0.15)))
    return image * rng.uniform(0.7, 1.2, size=3).astype(np.float32)


def _shape_mask(name: str, size: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Pixels of shape ``name`` of the given radius, centre ``(x, y)`` and rotation."""
    if name in _DISCS:
        inner, outer = _DISCS[name]
        y, x = _grid(size)
        distance = np.hypot(x - centre[0], y - centre[1]) / radius
        return (distance <= outer) & (distance >= inner)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = _POLYGONS[name] @ rotation.T * radius + centre
    mask = np.zeros((size, size), bool)
    rows, cols = skimage.draw.polygon(points[:, 1], points[:, 0], (size, size))
    mask[rows, cols] = True
    return mask


def _foreground(rng: np.random.Generator, size: int) -> np.ndarray:
    """A shape's fill: a flat colour, a two-colour gradient or a colour-tinted texture."""
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    style = rng.integers(3)
    if style == 0:
        return np.broadcast_to(colour, (size, size, 3))
    if style == 1:
        angle = rng.uniform(0, 2 * np.pi)
        y, x = _grid(size) / size - 0.5
        ramp = (2 * (x * np.cos(angle) + y * np.sin(angle)) + 0.5).clip(0, 1)[..., None]
        return colour * (1 - ramp) + rng.uniform(0.0, 1.0, size=3).astype(np.float32) * ramp
    texture = _background(rng, size).mean(axis=-1, keepdims=True)
    return (colour + 0.6 * (texture - texture.mean())).clip(0, 1)


def _ensure_contrast(fill: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Push the fill away from the background's mean colour under the shape when they are close."""
    fill_mean = fill[mask].mean(axis=0)
    background_mean = background[mask].mean(axis=0)
    if np.linalg.norm(fill_mean - background_mean) >= 0.4:
        return fill
    return fill + np.where(background_mean > 0.5, -0.45, 0.45).astype(np.float32)


def _example(seed: int, index: int, size: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Image ``index`` of dataset ``seed``: uint8 image, label and mask."""
    rng = np.random.default_rng((seed, index))
    label = int(rng.integers(len(CLASSES)))
    background = _background(rng, size)
    radius = size * rng.uniform(0.14, 0.3)
    margin = radius + 1
    centre = rng.uniform(margin, size - margin, size=2)
    mask = _shape_mask(CLASSES[label], size, centre, radius, rng.uniform(0, 2 * np.pi))
    fill = _ensure_contrast(_foreground(rng, size), background, mask)
    image = np.where(mask[..., None], fill, background)
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.03))
    return (image.clip(0, 1) * 255 + 0.5).astype(np.uint8), label, mask


def make_dataset(n: int, *, seed: int = 0, size: int = 64) -> DemoSet:
    """``n`` synthetic ``size`` x ``size`` images, their labels and shape masks.

    Deterministic: the same ``seed`` gives the same arrays, and image ``i`` depends
    only on ``(seed, i)``.

    Args:
        n: number of images.
        seed: non-negative integer selecting the dataset.
        size: side of the square images in pixels (at least 32).

    >>> data = make_dataset(4, seed=1)
    >>> data.images.shape, data.labels.shape, data.masks.shape
    ((4, 64, 64, 3), (4,), (4, 64, 64))
    """
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    examples = [_example(seed, index, size) for index in range(n)]
    return DemoSet(
        images=np.stack([image for image, _, _ in examples]) if n else np.zeros((0, size, size, 3), np.uint8),
        labels=np.array([label for _, label, _ in examples], np.int64),
        masks=np.stack([mask for _, _, mask in examples]) if n else np.zeros((0, size, size), bool),
    )
