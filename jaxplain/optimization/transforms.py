"""Random image transforms for feature visualisation (Lucent's ``lucent/optvis/transform.py``).

A transform is a hashable object called as ``transform(key, images)`` on NHWC
``images`` (one random draw per call, shared by the whole batch, as in Lucent).
Every transform except :func:`pad` keeps the image's shape, so a whole optimisation
loop compiles to one program: Lucent's ``random_scale`` resizes the image, this one
scales it about its centre inside the same frame (zeros outside, like a warp). Warps
are bilinear with zero padding; translations are by whole pixels in ``{0, ..., d-1}``.
Shifts and scalings are products with small matrices, which batch well under ``vmap``
(a vmapped dynamic slice becomes a gather).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import jax
import jax.numpy as jnp

from jaxplain.image import interpolate
from jaxplain.typing import Array


def random_index(key: Array, count: int, shape: tuple[int, ...] = ()) -> Array:
    """Uniform ints in ``{0, ..., count-1}`` from one uniform draw (cheaper to compile than ``randint``)."""
    return jnp.minimum(jnp.floor(jax.random.uniform(key, shape) * count), count - 1).astype(jnp.int32)


class Transform(Protocol):
    """``transform(key, images) -> images`` on NHWC images."""

    def __call__(self, key: Array, images: Array) -> Array: ...


PAD_MODES = ("constant", "reflect", "edge")


@dataclass(frozen=True)
class Pad:
    """Pad ``width`` pixels on every side; ``constant_value`` applies to ``mode="constant"`` only."""

    width: int
    mode: str = "reflect"
    constant_value: float = 0.5

    def __call__(self, key: Array, images: Array) -> Array:
        widths = ((0, 0), (self.width, self.width), (self.width, self.width), (0, 0))
        if self.mode == "constant":
            return jnp.pad(images, widths, constant_values=self.constant_value)
        return jnp.pad(images, widths, mode=self.mode)


def shift_matrix(size: int, shift: Array, wrap: bool = False) -> Array:
    """``[size, size]`` 0/1 matrix moving entries forward by ``shift`` (zeros coming in, or wrapped round)."""
    source = jnp.arange(size) - shift
    if wrap:
        source = source % size
    return (source[:, None] == jnp.arange(size)[None, :]).astype(jnp.float32)


def translate(images: Array, dy: Array, dx: Array, wrap: bool = False) -> Array:
    """Move NHWC ``images`` by whole pixels ``(dy, dx)``, as matrix products (cheap under ``vmap``)."""
    rows = shift_matrix(images.shape[1], dy, wrap).astype(images.dtype)
    cols = shift_matrix(images.shape[2], dx, wrap).astype(images.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", rows, images, cols)


@dataclass(frozen=True)
class Jitter:
    """Translate by a random whole number of pixels ``(dx, dy)`` in ``{0, ..., d-1}``, zeros coming in."""

    d: int

    def __call__(self, key: Array, images: Array) -> Array:
        dy, dx = random_index(key, self.d, (2,))
        return translate(images, dy, dx)


def _centred_scale_matrix(size: int, scale: Array) -> Array:
    """``[size, size]`` bilinear weights (zero outside) magnifying ``size`` pixels by ``scale`` about the centre."""
    centre = (size - 1) / 2
    source = centre + (jnp.arange(size, dtype=jnp.float32) - centre) / scale
    return jnp.maximum(0.0, 1.0 - jnp.abs(source[:, None] - jnp.arange(size, dtype=jnp.float32)[None, :]))


@dataclass(frozen=True)
class RandomScale:
    """Magnify about the centre by a factor drawn uniformly from ``scales`` (repeats weigh more)."""

    scales: tuple[float, ...]

    def __call__(self, key: Array, images: Array) -> Array:
        scale = jnp.asarray(self.scales, jnp.float32)[random_index(key, len(self.scales))]
        rows = _centred_scale_matrix(images.shape[1], scale).astype(images.dtype)
        cols = _centred_scale_matrix(images.shape[2], scale).astype(images.dtype)
        return jnp.einsum("oh,nhwc,pw->nopc", rows, images, cols)


def rotate(images: Array, angle: Array) -> Array:
    """Rotate NHWC ``images`` counter-clockwise (as displayed) by ``angle`` radians about their centre.

    Bilinear sampling; pixels whose source falls outside the image are zero.
    """
    n, h, w, c = images.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy, jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    source_x = x * cos - y * sin + cx
    source_y = x * sin + y * cos + cy
    x0, y0 = jnp.floor(source_x), jnp.floor(source_y)
    result = jnp.zeros_like(images)
    for oy, ox in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi, yi = x0 + ox, y0 + oy
        weight = (1.0 - jnp.abs(source_x - xi)) * (1.0 - jnp.abs(source_y - yi))
        inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        weight = jnp.where(inside, weight, 0.0).astype(images.dtype)
        rows = jnp.clip(yi, 0, h - 1).astype(jnp.int32)
        cols = jnp.clip(xi, 0, w - 1).astype(jnp.int32)
        result = result + images[:, rows, cols, :] * weight[None, :, :, None]
    return result


@dataclass(frozen=True)
class RandomRotate:
    """Rotate about the centre by an angle drawn uniformly from ``angles`` (repeats weigh more)."""

    angles: tuple[float, ...]
    units: str = "degrees"

    def __call__(self, key: Array, images: Array) -> Array:
        angle = jnp.asarray(self.angles, jnp.float32)[random_index(key, len(self.angles))]
        return rotate(images, jnp.deg2rad(angle) if self.units == "degrees" else angle)


@dataclass(frozen=True)
class Normalize:
    """``(images - mean) / std`` per channel (deterministic)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, key: Array, images: Array) -> Array:
        return (images - jnp.asarray(self.mean, images.dtype)) / jnp.asarray(self.std, images.dtype)


@dataclass(frozen=True)
class Resize:
    """Bilinear resize to ``size x size`` with ``align_corners=True`` (Lucent's final upsampling); deterministic."""

    size: int

    def __call__(self, key: Array, images: Array) -> Array:
        if images.shape[1:3] == (self.size, self.size):
            return images
        return interpolate(images, (self.size, self.size), "bilinear", align_corners=True)


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, each with its own key."""

    transforms: tuple[Transform, ...]

    def __call__(self, key: Array, images: Array) -> Array:
        keys = jax.random.split(key, len(self.transforms)) if len(self.transforms) > 1 else [key] * len(self.transforms)
        for transform, subkey in zip(self.transforms, keys):
            images = transform(subkey, images)
        return images


def pad(w: int, mode: str = "reflect", constant_value: float = 0.5) -> Pad:
    """Lucent's ``transform.pad``: ``w`` pixels each side; ``mode`` is ``"constant"``, ``"reflect"`` or ``"edge"``."""
    if not isinstance(w, int) or w < 0:
        raise ValueError(f"pad: w must be a non-negative int, got {w!r}")
    if mode not in PAD_MODES:
        raise ValueError(f"pad: mode {mode!r} is not one of {PAD_MODES}")
    return Pad(w, mode, float(constant_value))


def jitter(d: int) -> Jitter:
    """Lucent's ``transform.jitter``: a random translation by ``{0, ..., d-1}`` pixels in x and y."""
    if not isinstance(d, int) or d <= 1:
        raise ValueError(f"jitter: d must be an int above 1, got {d!r}")
    return Jitter(d)


def random_scale(scales: Sequence[float]) -> RandomScale:
    """Lucent's ``transform.random_scale``, keeping the image size (see the module docstring)."""
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"random_scale: scales must be a non-empty sequence of positive numbers, got {scales!r}")
    return RandomScale(scales)


def random_rotate(angles: Sequence[float], units: str = "degrees") -> RandomRotate:
    """Lucent's ``transform.random_rotate``: ``units`` is ``"degrees"`` or ``"radians"``."""
    angles = tuple(float(a) for a in angles)
    if not angles:
        raise ValueError("random_rotate: angles must be a non-empty sequence")
    if units not in ("degrees", "radians"):
        raise ValueError(f"random_rotate: units must be 'degrees' or 'radians', got {units!r}")
    return RandomRotate(angles, units)


def compose(transforms: Sequence[Transform]) -> Compose:
    """Lucent's ``transform.compose``: one transform applying ``transforms`` in order."""
    return Compose(tuple(transforms))


standard_transforms: tuple[Transform, ...] = (
    pad(12, mode="constant", constant_value=0.5),
    jitter(8),
    random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
    random_rotate(list(range(-10, 11)) + 5 * [0]),
    jitter(4),
)
"""Lucent's default transforms, in its order."""
